using System.Text;
using System.Text.Json;
using CsCheck;
using Nanoscale.Runtime;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// Constrained decoding's shape checker: JSON objects as RFC 8259 has them (checked against System.Text.Json on random
/// and mutated texts), literals and name choices around them, and the token-level face a generation uses (allowed
/// tokens, the mask, refusing what does not fit); and a sequence whose sampler prefers tokens that do not fit still comes
/// out as the shape.
/// </summary>
public class JsonConstraintTests
{
    private static JsonConstraint Object() => new([], new JsonConstraint.JsonObject());

    private static bool Whole(JsonConstraint constraint, string text) => Support.ConstraintText.Whole(constraint, text);

    [Theory]
    [InlineData("{}")]
    [InlineData("{\"city\": \"Paris\"}")]
    [InlineData(" \n{ \"a\" :1 , \"b\":[ ] ,\"c\":{}}")]
    [InlineData("{\"n\": [0, -0, 1.5, -2.25e+10, 3E-2, 10], \"t\": true, \"f\": false, \"z\": null}")]
    [InlineData("{\"s\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9 é 🌍\", \"k\\u0041\": \"\"}")]
    [InlineData("{\"deep\": [[[{\"a\": [{}]}]]]}")]
    public void ObjectsFit(string json)
    {
        Assert.True(Whole(Object(), json), json);
        Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(json).RootElement.ValueKind);
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("\"text\"")]
    [InlineData("{\"a\" 1}")]
    [InlineData("{\"a\": 01}")]
    [InlineData("{\"a\": 1.}")]
    [InlineData("{\"a\": .5}")]
    [InlineData("{\"a\": +1}")]
    [InlineData("{\"a\": tru}")]
    [InlineData("{,}")]
    [InlineData("{\"a\": [1,]}")]
    [InlineData("{\"a\": 1,}")]
    [InlineData("{\"a\": \"tab\there\"}")]
    [InlineData("{\"a\": \"\\x\"}")]
    [InlineData("{\"a\": \"\\u12g4\"}")]
    [InlineData("{a: 1}")]
    [InlineData("{\"a\": 1]")]
    [InlineData("{\"a\": 1}}")]
    [InlineData("{\"a\": 1} ")]
    [InlineData("{\"a\": NaN}")]
    public void AnythingElseDoesNot(string text) => Assert.False(Whole(Object(), text), text);

    [Fact]
    public void NestingAndBlanksAreBounded()
    {
        string deep(int n) => "{\"a\": " + new string('[', n - 1) + new string(']', n - 1) + "}";
        Assert.True(Whole(Object(), deep(JsonConstraint.MaxDepth)));
        Assert.False(Whole(Object(), deep(JsonConstraint.MaxDepth + 1)));
        Assert.True(Whole(Object(), "{" + new string(' ', JsonConstraint.MaxWhitespace) + "}"));
        Assert.False(Whole(Object(), "{" + new string(' ', JsonConstraint.MaxWhitespace + 1) + "}"));
        Assert.True(Whole(Object(), "{\"a\": \"" + new string(' ', 100) + "\"}")); // inside a string, any length
        Assert.True(Whole(Object(), "{\"a\": -" + new string('9', JsonConstraint.MaxNumber - 1) + "}"));
        Assert.False(Whole(Object(), "{\"a\": -" + new string('9', JsonConstraint.MaxNumber) + "}"));
        Assert.True(Whole(Object(), "{\"a\": 1.5e-" + new string('1', JsonConstraint.MaxNumber - 5) + ", \"b\": 1}"));
    }

    /// <summary>Random JSON objects (any nesting, strings with escapes and non-ASCII, numbers of every form) fit; a
    /// proper prefix never completes the shape.</summary>
    [Fact]
    public void RandomObjectsFit()
    {
        JsonValue(3).Where(v => v.StartsWith('{')).Sample(json =>
        {
            var constraint = Object();
            for (int i = 0; i < json.Length; i++)
            {
                Assert.False(constraint.Complete, json);
                Assert.True(constraint.AllowsText(json[i].ToString()), $"{json} at {i}");
                constraint.AcceptText(json[i].ToString());
            }
            Assert.True(constraint.Complete, json);
        }, iter: 2000);
    }

    /// <summary>Against System.Text.Json on mutated objects (a character changed, dropped or doubled): what the
    /// constraint takes whole is an object System.Text.Json parses and reads every string of, and every such object
    /// (within the bounds on nesting and blanks) the constraint takes — a lone surrogate escape parses as JSON text but
    /// is no string System.Text.Json reads, and the constraint refuses it.</summary>
    [Fact]
    public void AgreesWithSystemTextJsonOnMutations()
    {
        var mutated = JsonValue(3).Where(v => v.StartsWith('{')).SelectMany(json => Gen.Int[0, json.Length - 1].SelectMany(at =>
            Gen.OneOf(Gen.Const(0), Gen.Const(1), Gen.Const(2)).SelectMany(kind => Gen.OneOf<char>("{}[]\",:.-+e0 \\tnu\n".ToCharArray()).Select(c =>
                kind switch
                {
                    0 => json[..at] + c + json[(at + 1)..],
                    1 => json[..at] + json[(at + 1)..],
                    _ => json[..at] + json[at] + json[at..],
                }))));
        mutated.Sample(text =>
        {
            bool parses;
            try
            {
                using var document = JsonDocument.Parse(text, new JsonDocumentOptions { MaxDepth = JsonConstraint.MaxDepth });
                parses = document.RootElement.ValueKind == JsonValueKind.Object && text.Length > 0 && !char.IsWhiteSpace(text[^1])
                    && ReadsEveryString(document.RootElement);
            }
            catch (JsonException) { parses = false; }
            Assert.True(parses == Whole(Object(), text), $"{text}: System.Text.Json {(parses ? "parses" : "refuses")} it");
        }, iter: 4000);
    }

    /// <summary>Whether System.Text.Json reads every string and property name under <paramref name="element"/>
    /// (false for a lone surrogate escape).</summary>
    private static bool ReadsEveryString(JsonElement element)
    {
        try
        {
            switch (element.ValueKind)
            {
                case JsonValueKind.String:
                    _ = element.GetString();
                    return true;
                case JsonValueKind.Object:
                    foreach (var property in element.EnumerateObject())
                        if (property.Name is null || !ReadsEveryString(property.Value)) return false;
                    return true;
                case JsonValueKind.Array:
                    foreach (var item in element.EnumerateArray())
                        if (!ReadsEveryString(item)) return false;
                    return true;
                default:
                    return true;
            }
        }
        catch (InvalidOperationException) { return false; }
    }

    /// <summary>A JSON value as text: System.Text.Json writes the scalars (escapes included), the generator nests.</summary>
    private static Gen<string> JsonValue(int depth)
    {
        var number = Gen.OneOf(Gen.Int.Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            Gen.Double[-1e6, 1e6].Select(d => d.ToString("R", System.Globalization.CultureInfo.InvariantCulture)),
            Gen.Const("-0.5e-3"), Gen.Const("1E+2"), Gen.Const("0"));
        var text = Gen.OneOf<string>("", "a", "Paris", "é🌍", "quote \" and \\ slash", "tab\tnew\nline", "\u0001", "</tool_call>");
        var scalar = Gen.OneOf(number, text.Select(t => JsonSerializer.Serialize(t)), Gen.OneOf<string>("true", "false", "null"));
        if (depth == 0) return scalar;
        var blank = Gen.OneOf<string>("", " ", "\n  ");
        var inner = JsonValue(depth - 1);
        var array = Gen.Select(inner, blank, (v, b) => b + v + b).Array[0, 3].Select(items => "[" + string.Join(",", items) + "]");
        var member = Gen.Select(text, inner, blank, (k, v, b) => JsonSerializer.Serialize(k) + b + ":" + b + v);
        var obj = member.Array[0, 3].Select(items => "{" + string.Join(", ", items) + "}");
        return Gen.Frequency((3, scalar), (1, array), (2, obj));
    }

    private const string Weather = """
        {"type": "object", "properties": {
            "city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer"},
            "hourly": {"type": "boolean"}, "note": {"type": ["string", "null"]}, "scale": {"anyOf": [{"type": "number"}, {"type": "null"}]},
            "stops": {"type": "array", "items": {"type": "object", "properties": {"at": {"type": "string"}}, "required": ["at"]}},
            "n": {"enum": [1, 10]}, "extra": {"type": "object", "additionalProperties": true}, "tag": {"const": "v1"}},
         "required": ["city"]}
        """;

    private static JsonConstraint Schema(string schema = Weather) =>
        new([], new JsonConstraint.JsonObject(JsonSchema.From(JsonDocument.Parse(schema).RootElement)));

    [Theory]
    [InlineData("{\"city\": \"Paris\"}")]
    [InlineData("{\"unit\": \"celsius\", \"city\": \"Rome\", \"days\": -3, \"hourly\": false}")]
    [InlineData("{\"city\": \"\", \"note\": null, \"scale\": 2.5e3, \"n\": 10}")]
    [InlineData("{\"city\": \"x\", \"note\": \"hi\", \"scale\": null, \"n\": 1 , \"tag\": \"v1\"}")]
    [InlineData("{\"city\": \"x\", \"stops\": [{\"at\": \"a\"}, {\"at\": \"b\"}], \"extra\": {\"any\": [1, {\"k\": null}]}}")]
    [InlineData("{\"stops\": [], \"city\": \"x\"}")]
    public void ObjectsThatFollowTheSchemaFit(string json) => Assert.True(Whole(Schema(), json), json);

    [Theory]
    [InlineData("{}")]                                                          // city is required
    [InlineData("{\"town\": \"x\", \"city\": \"x\"}")]                  // not a declared key
    [InlineData("{\"city\": 3}")]                                             // a string
    [InlineData("{\"city\": \"x\", \"days\": 1.5}")]                       // an integer
    [InlineData("{\"city\": \"x\", \"days\": 1e2}")]
    [InlineData("{\"city\": \"x\", \"unit\": \"kelvin\"}")]             // not in the enum
    [InlineData("{\"city\": \"x\", \"n\": 100}")]
    [InlineData("{\"city\": \"x\", \"city\": \"y\"}")]                  // a key twice
    [InlineData("{\"city\": \"x\", \"hourly\": null}")]
    [InlineData("{\"city\": \"x\", \"note\": 1}")]
    [InlineData("{\"city\": \"x\", \"stops\": [{}]}")]                    // at is required in each stop
    [InlineData("{\"city\": \"x\", \"stops\": [\"a\"]}")]
    [InlineData("{\"city\": \"x\", \"tag\": \"v2\"}")]
    [InlineData("{\"city\": \"x\",}")]
    public void ObjectsThatDoNotFollowItDoNot(string json) => Assert.False(Whole(Schema(), json), json);

    [Fact]
    public void SchemasWithoutKeysOrBeyondTheSubset()
    {
        Assert.True(Whole(new JsonConstraint([], new JsonConstraint.JsonObject(JsonSchema.EmptyObject)), "{ }"));
        Assert.False(Whole(new JsonConstraint([], new JsonConstraint.JsonObject(JsonSchema.EmptyObject)), "{\"a\": 1}"));
        Assert.True(Whole(Schema("""{"type": "object", "properties": {}}"""), "{}"));
        Assert.False(Whole(Schema("""{"type": "object", "properties": {}}"""), "{\"a\": 1}"));
        Assert.True(Whole(Schema("""{"type": "object"}"""), "{\"a\": [1, {}]}"));                                 // no properties: any keys
        Assert.True(Whole(Schema("""{"type": "object", "properties": {"a": {"$ref": "#/x"}}}"""), "{\"a\": [true]}")); // beyond the subset: free
        // Keys beyond the declared ones take additionalProperties' schema; a declared one written as any key, its own.
        const string More = """{"properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "number"}}""";
        Assert.True(Whole(Schema(More), "{\"b\": 1, \"a\": \"s\"}"));
        Assert.False(Whole(Schema(More), "{\"b\": \"s\"}"));
        Assert.False(Whole(Schema(More), "{\"a\": 1}"));
        Assert.False(Whole(Schema(More), "{\"a\": \"s\", \"a\": \"t\"}"));
        Assert.True(Whole(Schema("""{"properties": {"a": {"type": "string"}}, "additionalProperties": true}"""), "{\"b\": [], \"ab\": 2}"));
        Assert.False(Whole(Schema("""{"properties": {"a": {"type": "string"}}, "additionalProperties": true}"""), "{\"b\": [], \"a\": 2}"));
        Assert.False(JsonSchema.From(JsonDocument.Parse("""{"type": "string"}""").RootElement).AllowsObject);
        Assert.Throws<ArgumentException>(() => new JsonConstraint([], new JsonConstraint.JsonObject(JsonSchema.From(JsonDocument.Parse("""{"enum": [1]}""").RootElement))));
    }

    /// <summary>A schema is a request's to give: random schemas (every keyword of the subset and some beyond, with values
    /// of any type, nested, references that resolve or not) compile without an exception, and random walks under
    /// those that allow an object raise none either.</summary>
    [Fact]
    public void AnySchemaCompilesAndWalksWithoutFailing()
    {
        string[] keywords = ["type", "properties", "required", "enum", "const", "items", "anyOf", "oneOf", "allOf", "$ref", "additionalProperties", "$defs", "pattern",
            "format", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems", "maxItems", "minProperties", "maxProperties"];
        Gen<string> Schema(int depth)
        {
            var leaf = Gen.OneOf<string>("\"object\"", "\"array\"", "\"string\"", "\"integer\"", "[\"number\", \"null\"]", "[]", "3", "true", "null",
                "\"#/$defs/A\"", "\"#\"", "\"#/nowhere\"", "[\"a\", \"b\"]", "[1, 10, 2]", "{}",
                "\"^[a-c]+$\"", "\"(a|b\"", "\"date-time\"", "\"ipv4\"", "0", "0.25", "-2", "1e999", "-1e-999", "5");
            if (depth == 0) return leaf;
            var value = Gen.Frequency((3, leaf), (2, Schema(depth - 1)), (1, Schema(depth - 1).Array[0, 3].Select(v => "[" + string.Join(", ", v) + "]")),
                (1, Gen.Select(Gen.OneOf<string>("a", "b", "A", "x y"), Schema(depth - 1), (k, v) => $"{{\"{k}\": {v}}}")));
            return Gen.Select(Gen.OneOf<string>(keywords), value, (k, v) => $"\"{k}\": {v}").Array[0, 4].Select(m => "{" + string.Join(", ", m) + "}");
        }
        char[] alphabet = [.. "{}[]\",:-0123456789.e tfrunlabxyAB\\T".Distinct()];
        Gen.Select(Schema(3), Gen.Int).Sample((text, seed) =>
        {
            var schema = JsonSchema.From(JsonDocument.Parse(text).RootElement);
            if (!schema.AllowsObject) return;
            var constraint = new JsonConstraint([], new JsonConstraint.JsonObject(schema));
            var random = new Random(seed);
            for (int step = 0; step < 200 && !constraint.Complete; step++)
            {
                var allowed = alphabet.Where(c => constraint.AllowsText(c.ToString())).ToList();
                if (allowed.Count == 0) break; // an unsatisfiable schema (a required child without end) may leave nothing
                constraint.AcceptText(allowed[random.Next(allowed.Count)].ToString());
            }
        }, iter: 1500);
    }

    /// <summary>Pydantic's shape: nested models as local <c>$ref</c>s under <c>$defs</c> (an <c>allOf</c> of one around a
    /// reference too), followed as if written in place; a recursive model (a tree) is followed as deep as the text
    /// nests, compiled once.</summary>
    [Fact]
    public void LocalReferencesAreFollowed()
    {
        const string Pydantic = """
            {"$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}, "unit": {"$ref": "#/$defs/Unit"}}, "required": ["name", "unit"],
                                "additionalProperties": false},
                       "Unit": {"enum": ["c", "f"]}},
             "type": "object", "properties": {"cities": {"type": "array", "items": {"$ref": "#/$defs/City"}}, "home": {"allOf": [{"$ref": "#/$defs/City"}]}},
             "required": ["cities"], "additionalProperties": false}
            """;
        Assert.True(Whole(Schema(Pydantic), "{\"cities\": [{\"name\": \"Paris\", \"unit\": \"c\"}], \"home\": {\"unit\": \"f\", \"name\": \"Rome\"}}"));
        Assert.False(Whole(Schema(Pydantic), "{\"cities\": [{\"name\": \"Paris\", \"unit\": \"k\"}]}"));
        Assert.False(Whole(Schema(Pydantic), "{\"cities\": [{\"name\": \"Paris\"}]}"));
        Assert.False(Whole(Schema(Pydantic), "{\"cities\": [], \"home\": {\"name\": \"x\", \"unit\": \"c\", \"zip\": 1}}"));
        Assert.True(Whole(Schema("""{"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}"""), "{\"a\": [1]}")); // unresolved: free

        // A tree whose children are trees: a binary recursion that would be 2^32 nodes if written out.
        const string Tree = """
            {"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {"v": {"type": "integer"},
              "left": {"$ref": "#/$defs/Node"}, "right": {"$ref": "#/$defs/Node"}}, "required": ["v"], "additionalProperties": false}}}
            """;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var tree = Schema(Tree);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1));
        Assert.True(Whole(tree, "{\"v\": 1, \"left\": {\"v\": 2, \"right\": {\"v\": 3}}}"));
        Assert.False(Whole(Schema(Tree), "{\"v\": 1, \"left\": {\"w\": 2}}"));
    }

    /// <summary>Random walks held to the schema — each step a random character among those the constraint allows, with
    /// closing characters favoured so walks end — always end as JSON that follows the schema (checked by a small
    /// validator of the same subset, written here apart from the constraint).</summary>
    [Fact]
    public void WalksHeldToTheSchemaFollowIt()
    {
        var schema = JsonDocument.Parse(Weather).RootElement;
        char[] alphabet = [.. "{}[]\",:-0123456789.eE tfrunlasvcityhoudknpmxgbz12".Distinct()];
        int complete = 0;
        Gen.Int.Sample(seed =>
        {
            // A walk never gets stuck (Walk fails if it does).
            if (Support.ConstraintText.Walk(Schema(), alphabet, new Random(seed), 600) is not { } text) return;
            complete++;
            using var document = JsonDocument.Parse(text);
            Assert.True(Follows(document.RootElement, schema), text);
        }, iter: 300);
        Assert.True(complete > 100, $"only {complete} of 300 walks ended");
    }

    /// <summary>The subset's rules, checked on a parsed value (the test's own oracle).</summary>
    private static bool Follows(JsonElement value, JsonElement schema)
    {
        if (schema.TryGetProperty("const", out var constant)) return JsonElement.DeepEquals(value, constant);
        if (schema.TryGetProperty("enum", out var values)) return values.EnumerateArray().Any(v => JsonElement.DeepEquals(v, value));
        if (schema.TryGetProperty("anyOf", out var branches)) return branches.EnumerateArray().Any(b => Follows(value, b));
        if (schema.TryGetProperty("type", out var type))
        {
            var names = type.ValueKind == JsonValueKind.Array ? type.EnumerateArray().Select(t => t.GetString()).ToList() : [type.GetString()];
            bool ok = value.ValueKind switch
            {
                JsonValueKind.Object => names.Contains("object"),
                JsonValueKind.Array => names.Contains("array"),
                JsonValueKind.String => names.Contains("string"),
                JsonValueKind.Number => names.Contains("number") || names.Contains("integer") && value.TryGetInt64(out _) && !value.GetRawText().Contains('.'),
                JsonValueKind.True or JsonValueKind.False => names.Contains("boolean"),
                _ => names.Contains("null"),
            };
            if (!ok) return false;
        }
        if (value.ValueKind == JsonValueKind.Object && schema.TryGetProperty("properties", out var properties))
        {
            var keys = value.EnumerateObject().Select(p => p.Name).ToList();
            if (keys.Distinct().Count() != keys.Count) return false;
            bool others = schema.TryGetProperty("additionalProperties", out var more) && more.ValueKind != JsonValueKind.False;
            foreach (var member in value.EnumerateObject())
                if (properties.TryGetProperty(member.Name, out var sub) ? !Follows(member.Value, sub) : !others) return false;
            if (schema.TryGetProperty("required", out var required) && required.EnumerateArray().Any(r => !keys.Contains(r.GetString()!))) return false;
        }
        if (value.ValueKind == JsonValueKind.Array && schema.TryGetProperty("items", out var items))
            return value.EnumerateArray().All(v => Follows(v, items));
        return true;
    }

    [Fact]
    public void LiteralsAndNameChoicesFrameTheObject()
    {
        JsonConstraint Call() => new([], new JsonConstraint.OneOf(["get_weather\"", "get_weather_hourly\"", "time\""]),
            new JsonConstraint.Literal(", \"arguments\": "), new JsonConstraint.JsonObject(), new JsonConstraint.Literal("}"));
        Assert.True(Whole(Call(), "get_weather\", \"arguments\": {\"city\": \"Paris\"}}"));
        Assert.True(Whole(Call(), "get_weather_hourly\", \"arguments\": {}}"));
        Assert.True(Whole(Call(), "time\", \"arguments\": {}}"));
        Assert.False(Whole(Call(), "get_time\", \"arguments\": {}}"));
        Assert.False(Whole(Call(), "get_weather_\", \"arguments\": {}}"));
        Assert.False(Whole(Call(), "time\",\"arguments\": {}}"));
        Assert.False(Whole(Call(), "time\", \"arguments\": {}} "));
        Assert.Throws<ArgumentException>(() => new JsonConstraint([], new JsonConstraint.OneOf(["get", "get_time"])));
        Assert.Throws<ArgumentException>(() => new JsonConstraint([], new JsonConstraint.Literal("")));
        Assert.Throws<ArgumentException>(() => new JsonConstraint([]));
    }

    /// <summary>The token-level face: a token is allowed when all of its text fits (control tokens, with no text, never
    /// are); the mask leaves exactly the allowed ones; a refused token cannot be taken.</summary>
    [Fact]
    public void TokensFitWhenAllTheirTextDoes()
    {
        string[] pieces = ["", "{", "{\"", "}", "\"", "a", "\":", " 1", "}}", "\uFFFD", "x"];
        var constraint = new JsonConstraint(pieces, new JsonConstraint.JsonObject());
        Assert.Equal([1, 2], Enumerable.Range(0, pieces.Length).Where(constraint.Allows));
        var logits = Enumerable.Repeat(1f, pieces.Length).ToArray();
        Assert.Equal(2, constraint.Mask(logits));
        Assert.Equal([1f, 1f], logits.Where(float.IsFinite));
        Assert.False(constraint.Allows(-1));
        Assert.False(constraint.Allows(pieces.Length));
        Assert.Throws<ArgumentException>(() => constraint.Accept(3));
        constraint.Accept(2);                     // {"
        Assert.True(constraint.Allows(9));        // part of a UTF-8 character inside a key
        foreach (int id in new[] { 5, 6, 7, 3 }) constraint.Accept(id); // a": 1}
        Assert.True(constraint.Complete);
        Assert.DoesNotContain(true, Enumerable.Range(0, pieces.Length).Select(constraint.Allows));
    }

    /// <summary>An end token whose text would fit (inside a string, as Qwen's <c>&lt;|im_end|&gt;</c> would) does not end
    /// a constrained sequence before its shape is whole: a stop token ranked first every step is drawn around.</summary>
    [Fact]
    public void AnEndTokenWithTextDoesNotCutTheShape()
    {
        var model = LlamaModel.Load(Nanoscale.IO.CheckpointLoader.Open(Support.SharedData.Stories260K));
        var tokenizer = Llama2cTokenizer.Load(Support.SharedData.Tok512);
        var pieces = TokenPieces.For(tokenizer);
        int stop = tokenizer.Encode(" the", addBos: false)[^1];
        // The stop token's own text is what must come next: allowed by the shape, but not as the end of the sequence.
        var constraint = new JsonConstraint(pieces, new JsonConstraint.Literal("{\"a\": \"" + pieces[stop]), new JsonConstraint.OneOf(["x\"", "y\""]), new JsonConstraint.Literal("}"));
        var sequence = new GenerationSequence(model, tokenizer, tokenizer.Encode("Once", addBos: true), 50, new SamplingOptions { StopTokenIds = [stop] }, [], null,
            CancellationToken.None, deferPrompt: true, session: model.CreateSession(64), constraint: constraint);
        var logits = new float[pieces.Length];
        logits[stop] = 10;
        while (sequence.Advance(logits) is not null) { }
        Assert.True(constraint.Complete);
        Assert.DoesNotContain(stop, sequence.Result().Tokens[1..]);
    }

    /// <summary>The mask by first characters equals asking every token, at every kind of place in an object, with a real
    /// 151,665-token vocabulary (a logits row longer than it, as Qwen's padded one is).</summary>
    [Fact]
    public void TheMaskByFirstCharacterIsEveryTokensAnswer()
    {
        var pieces = TokenPieces.For(TokenizerLoader.Open(Support.SharedData.Path("tokenizers", "qwen2_5")));
        var schema = JsonSchema.From(JsonDocument.Parse(Weather).RootElement);
        foreach (var prefix in new[] { "", "{", "{\"ci", "{\"city\"", "{\"city\": ", "{\"city\": \"Pa", "{\"city\": \"x\", \"days\": 1", "{\"city\": \"x\", \"unit\": \"ce" })
            foreach (var part in new JsonConstraint.Part[] { new JsonConstraint.JsonObject(), new JsonConstraint.JsonObject(schema) })
            {
                var constraint = new JsonConstraint(pieces, part);
                constraint.AcceptText(prefix.Length > 0 ? prefix : " ");
                var fast = Enumerable.Repeat(1f, pieces.Length + 271).ToArray();
                var each = (float[])fast.Clone();
                Assert.Equal(constraint.MaskEach(each), constraint.Mask(fast));
                Assert.Equal(each, fast);
            }
    }

    /// <summary>A generation whose logits always rank a token that does not fit first (the end token) draws again from
    /// the allowed ones: greedy and sampled, it comes out as a whole object and ends there, and its log-probabilities are
    /// those of the logits it was given, unmasked.</summary>
    [Fact]
    public void ASequenceComesOutAsTheShapeItIsHeldTo()
    {
        var model = LlamaModel.Load(Nanoscale.IO.CheckpointLoader.Open(Support.SharedData.Stories260K));
        var tokenizer = Llama2cTokenizer.Load(Support.SharedData.Tok512);
        var pieces = TokenPieces.For(tokenizer);
        Assert.Same(pieces, TokenPieces.For(tokenizer));
        foreach (var sampling in new[] { new SamplingOptions { LogProbs = 0 }, new SamplingOptions { Temperature = 1.0, TopP = 0.95, Seed = 4, LogProbs = 0 } })
        {
            var constraint = new JsonConstraint(pieces, new JsonConstraint.JsonObject());
            var held = new GenerationSequence(model, tokenizer, tokenizer.Encode("Once", addBos: true), 400, sampling, [], null,
                CancellationToken.None, deferPrompt: true, session: model.CreateSession(512), constraint: constraint);
            // Made-up logits each step: the end token first, then a random order in which tokens that close something
            // rank higher (so strings end soon).
            var random = new Random(7);
            var given = new List<float[]>();
            for (int step = 0; step < 400; step++)
            {
                var logits = pieces.Select(p => (float)random.NextDouble() + (p.IndexOfAny(['"', '}', ']']) >= 0 ? 4f : 0f)).ToArray();
                logits[tokenizer.EosId!.Value] = 20;
                given.Add(logits);
                if (held.Advance(logits) is null) break;
            }
            var result = held.Result();
            Assert.Equal(StopReason.EndToken, result.Stop);
            Assert.True(constraint.Complete);
            var text = result.NewText;
            Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(text).RootElement.ValueKind);
            Assert.Equal(text, string.Concat(result.Tokens[result.PromptTokens..].Select(id => pieces[id])));
            for (int i = 0; i < result.GeneratedTokens; i++)
            {
                var logits = given[i];
                double max = logits.Max(), logZ = max + Math.Log(logits.Sum(v => Math.Exp(v - max)));
                Assert.Equal(logits[result.Tokens[result.PromptTokens + i]] - logZ, result.LogProbs![i].LogProb, 4);
            }
        }
    }
}
