using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using CsCheck;
using Nanoscale.Runtime;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// The value rules of JSON Schema that constrained decoding follows beyond types and keys — string patterns, formats and
/// lengths, number bounds and steps, item and key counts, branches told apart by their first character — checked
/// against two implementations that are not ours: .NET's <see cref="Regex"/> for patterns, and JsonSchema.Net (a
/// validator of the whole 2020-12 draft, format validation on) for every walk a schema holds.
/// </summary>
public class JsonSchemaRulesTests
{
    private static readonly Json.Schema.EvaluationOptions Validation = new() { RequireFormatValidation = true, OutputFormat = Json.Schema.OutputFormat.List };

    private static readonly JsonSerializerOptions Relaxed = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    private static JsonConstraint Constraint(string schema) =>
        new([], new JsonConstraint.JsonObject(JsonSchema.From(JsonDocument.Parse(schema).RootElement)));

    /// <summary>Whether the whole text fits, character by character, and completes the shape exactly at its end.</summary>
    private static bool Whole(string schema, string text) => Support.ConstraintText.Whole(Constraint(schema), text);

    private static string StringSchema(string rules) =>
        "{\"type\": \"object\", \"properties\": {\"s\": {\"type\": \"string\", " + rules + "}}, \"required\": [\"s\"]}";

    private static string Holding(string value) => "{\"s\": " + JsonSerializer.Serialize(value, Relaxed) + "}";

    // Patterns of the subset over ASCII, and strings to try them on.
    private static readonly string[] Patterns =
    [
        "^[a-z]+$", "^\\d{3}-\\d{4}$", "abc", "^(ab|cd)*e?$", "^a{2,4}b{0,2}$", "^[^0-9]*$", "x$", "^\\w+@\\w+\\.com$",
        "^(?:[A-Z][a-z]*)( [A-Z][a-z]*)*$", "^\\s*\\S+\\s*$", "^[\\-+]?[0-9]+(\\.[0-9]+)?$", "^.{2}$", "^(a|b)*a(a|b){3}$", "",
        "^$", "^[a-c]{1,}\\.[x-z]{1}$", "(foo|bar)baz", "^\\(\\d\\)$", "^[\\]\\[]+$", "^(?<word>[a-z]+)-\\1?$",
    ];

    /// <summary>The pattern automaton's answer on whole strings equals .NET's regular expressions' (ECMAScript
    /// option), pattern by pattern on strings built from the patterns' own characters.</summary>
    [Fact]
    public void PatternsMatchAsRegexDoes()
    {
        var alphabet = "abcdexyzfoobarABC0123456789-+.@ ()[]_\t".ToCharArray();
        foreach (var pattern in Patterns)
        {
            var compiled = JsonPattern.TryCompile(pattern);
            if (pattern.Contains("\\1"))
            {
                Assert.Null(compiled); // a backreference is outside the subset
                continue;
            }
            Assert.NotNull(compiled);
            var regex = new Regex(pattern, RegexOptions.ECMAScript);
            var random = new Random(pattern.Length);
            for (int i = 0; i < 400; i++)
            {
                var text = new string(Enumerable.Range(0, random.Next(0, 9)).Select(_ => alphabet[random.Next(alphabet.Length)]).ToArray());
                if (i % 4 == 0) text = Example(pattern, random) ?? text;
                int state = compiled.Start;
                foreach (char c in text) state = compiled.Next(state, c);
                Assert.True(compiled.Accepts(state) == regex.IsMatch(text), $"/{pattern}/ on '{text}': ours {compiled.Accepts(state)}");
            }
        }
    }

    /// <summary>Random patterns of the subset (literals, '.', classes, escapes, groups, alternation, every quantifier,
    /// anchors) against .NET's <see cref="Regex"/> on random strings over a small alphabet: the same answer on each.</summary>
    [Fact]
    public void RandomPatternsMatchAsRegexDoes()
    {
        string[] atoms = ["a", "b", "c", ".", "[ab]", "[^a]", "[a-c1]", "\\d", "\\w", "\\W", "\\s", "\\.", "1", " "];
        string[] quantifiers = ["", "", "", "*", "+", "?", "{2}", "{1,3}", "{0,2}", "{2,}", "*?", "+?"];
        Gen<string> Pattern(int depth)
        {
            var atom = Gen.OneOf<string>(atoms);
            var group = depth == 0 ? atom : Gen.Select(Pattern(depth - 1), Gen.Bool, (p, capture) => (capture ? "(" : "(?:") + p + ")");
            var piece = Gen.Select(Gen.Frequency((4, atom), (1, group)), Gen.OneOf<string>(quantifiers), (a, q) => a + q);
            var sequence = piece.Array[1, 4].Select(p => string.Concat(p));
            return Gen.Frequency((4, sequence), (1, sequence.Array[2, 3].Select(alts => string.Join("|", alts))));
        }
        var anchored = Gen.Select(Pattern(2), Gen.Int[0, 3], (p, a) => (a & 1) == 1 ? "^" + p + ((a & 2) == 2 ? "$" : "") : (a & 2) == 2 ? "(?:" + p + ")$" : p);
        char[] alphabet = "abc1 _.".ToCharArray();
        Gen.Select(anchored, Gen.Int).Sample((pattern, seed) =>
        {
            var compiled = JsonPattern.TryCompile(pattern);
            Assert.NotNull(compiled);
            // .NET's automaton engine: its backtracking one overflows on nested quantifiers like ((?:[ab]*)*?)+ (the
            // ECMAScript option's ASCII classes are the same as its own on this alphabet).
            var regex = new Regex(pattern, RegexOptions.NonBacktracking);
            var random = new Random(seed);
            for (int i = 0; i < 60; i++)
            {
                var text = new string(Enumerable.Range(0, random.Next(0, 8)).Select(_ => alphabet[random.Next(alphabet.Length)]).ToArray());
                int state = compiled.Start;
                foreach (char c in text) state = compiled.Next(state, c);
                Assert.True(compiled.Accepts(state) == regex.IsMatch(text), $"/{pattern}/ on '{text}': ours {compiled.Accepts(state)}");
            }
        }, iter: 1500);
    }

    /// <summary>Some strings that match, to test the positive side as often as the negative: a walk through the
    /// automaton itself would be circular, so these are written by hand per pattern.</summary>
    private static string? Example(string pattern, Random random) => pattern switch
    {
        "^[a-z]+$" => "abc"[..random.Next(1, 4)],
        "^\\d{3}-\\d{4}$" => $"{random.Next(100, 999)}-{random.Next(1000, 9999)}",
        "^(ab|cd)*e?$" => string.Concat(Enumerable.Repeat(random.Next(2) == 0 ? "ab" : "cd", random.Next(4))) + (random.Next(2) == 0 ? "e" : ""),
        "^a{2,4}b{0,2}$" => new string('a', random.Next(1, 6)) + new string('b', random.Next(0, 4)),
        "^(a|b)*a(a|b){3}$" => string.Concat(Enumerable.Range(0, random.Next(4, 9)).Select(_ => random.Next(2) == 0 ? "a" : "b")),
        "^[a-c]{1,}\\.[x-z]{1}$" => "ab.y",
        "(foo|bar)baz" => "xxbarbazyy",
        "^\\(\\d\\)$" => "(7)",
        "^(?:[A-Z][a-z]*)( [A-Z][a-z]*)*$" => "Ab Cde F",
        _ => null,
    };

    /// <summary>Walks through strings held to a pattern never get stuck and always close as a match, and a pattern with
    /// <c>maxLength</c> too is reached within the length.</summary>
    [Fact]
    public void StringsHeldToAPatternMatchIt()
    {
        var alphabet = Enumerable.Range(0x20, 95).Select(c => (char)c).ToArray();
        foreach (var (pattern, rules) in Patterns.Where(p => !p.Contains("\\1")).Select(p => (p, "")).Concat([("^[a-z]*x[a-z]*$", ", \"maxLength\": 5"),
                     ("^\\d+$", ", \"minLength\": 3, \"maxLength\": 4"), ("^(ab)+$", ", \"maxLength\": 3")]))
        {
            var regex = new Regex(pattern, RegexOptions.ECMAScript);
            var schema = StringSchema("\"pattern\": " + JsonSerializer.Serialize(pattern) + rules);
            int closed = 0;
            for (int seed = 0; seed < 60; seed++)
            {
                var random = new Random(seed);
                var constraint = Constraint(schema);
                constraint.AcceptText("{\"s\": \"");
                var text = new StringBuilder();
                while (text.Length < 200)
                {
                    if (constraint.AllowsText("\"") && random.Next(3) == 0) break;
                    // Backslashes too: an escape is begun only where an escaped character can follow.
                    var allowed = alphabet.Concat("nt").Where(c => c != '"' && constraint.AllowsText(c.ToString())).ToList();
                    if (allowed.Count == 0)
                    {
                        Assert.True(constraint.AllowsText("\""), $"/{pattern}/ stuck after '{text}'");
                        break;
                    }
                    char next = allowed[random.Next(allowed.Count)];
                    constraint.AcceptText(next.ToString());
                    text.Append(next);
                    if (next != '\\') continue;
                    // The escape's letter at once (an escape is begun only where one can follow).
                    var letters = "\"\\/bfnrt".Where(e => constraint.AllowsText(e.ToString())).ToList();
                    Assert.NotEmpty(letters);
                    char letter = letters[random.Next(letters.Count)];
                    constraint.AcceptText(letter.ToString());
                    text.Append(letter);
                }
                if (!constraint.AllowsText("\"")) continue;
                closed++;
                var value = JsonDocument.Parse("\"" + text + "\"").RootElement.GetString()!;
                Assert.True(regex.IsMatch(value), $"/{pattern}/ closed on '{text}'");
                Assert.True(Whole(schema, "{\"s\": \"" + text + "\"}"));
            }
            // An unanchored pattern closes only once a random walk happens to write a match.
            if (pattern.StartsWith('^') && pattern.EndsWith('$')) Assert.True(closed > 10, $"/{pattern}/: only {closed} of 60 walks closed");
        }
    }

    [Theory]
    [InlineData("(?=a)b")]
    [InlineData("a\\bb")]
    [InlineData("(a")]
    [InlineData("a)")]
    [InlineData("[b-a]")]
    [InlineData("a{3,2}")]
    [InlineData("*a")]
    [InlineData("\\cA")]
    [InlineData("(a{100}){100}")]
    public void PatternsOutsideTheSubsetAreLeftFree(string pattern)
    {
        Assert.Null(JsonPattern.TryCompile(pattern));
        // The string is free: any text closes.
        Assert.True(Whole(StringSchema("\"pattern\": " + JsonSerializer.Serialize(pattern)), Holding("anything")));
    }

    [Fact]
    public void LengthsCountCodePoints()
    {
        var schema = StringSchema("\"minLength\": 2, \"maxLength\": 3");
        Assert.False(Whole(schema, Holding("a")));
        Assert.True(Whole(schema, Holding("ab")));
        Assert.True(Whole(schema, Holding("a🌍b")));            // a surrogate pair is one code point
        Assert.True(Whole(schema, "{\"s\": \"\\n\\u00e9\\\"\"}")); // escapes are one character each
        Assert.False(Whole(schema, Holding("abcd")));
        Assert.False(Whole(schema, "{\"s\": \"ab\\u0041\\n\"}"));
        Assert.True(Whole(StringSchema("\"maxLength\": 0"), Holding("")));
        Assert.False(Whole(StringSchema("\"maxLength\": 0"), Holding("a")));
    }

    [Theory]
    [InlineData("date", "2024-02-28", "2024-02-30")]
    [InlineData("date", "1999-12-31", "1999-13-01")]
    [InlineData("time", "23:59:59Z", "24:00:00Z")]
    [InlineData("time", "08:30:00.125+05:30", "08:30:00")]
    [InlineData("date-time", "2024-06-01T12:00:00Z", "2024-06-01 12:00:00Z")]
    [InlineData("duration", "P1Y2M3DT4H5M6S", "P")]
    [InlineData("duration", "PT0.5S", "PT")]
    [InlineData("uuid", "123e4567-e89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a456-42661417400")]
    [InlineData("ipv4", "192.168.0.255", "192.168.0.256")]
    [InlineData("ipv6", "2001:0db8:0000:0000:0000:ff00:0042:8329", "2001:db8::1:2:3:4:5:6")]
    [InlineData("hostname", "api.example-1.com", "-bad.example.com")]
    [InlineData("email", "first.last+tag@mail.example.org", "first..last@example.org")]
    public void FormatsFollowTheirPatterns(string format, string valid, string invalid)
    {
        var schema = StringSchema("\"format\": \"" + format + "\"");
        // "PT0.5S" is valid RFC 3339 but outside the narrower pattern (whole numbers only): such values are never made.
        if (valid != "PT0.5S") Assert.True(Whole(schema, Holding(valid)), valid);
        Assert.False(Whole(schema, Holding(invalid)), invalid);
        Assert.True(Whole(StringSchema("\"format\": \"no-such-format\""), Holding(invalid)));
    }

    [Theory]
    // integer bounds
    [InlineData("\"type\": \"integer\", \"minimum\": 1, \"maximum\": 5", "3", "0")]
    [InlineData("\"type\": \"integer\", \"minimum\": 1, \"maximum\": 5", "5", "6")]
    [InlineData("\"type\": \"integer\", \"minimum\": 1, \"maximum\": 5", "1", "-1")]
    [InlineData("\"type\": \"integer\", \"minimum\": 10, \"maximum\": 200", "150", "201")]
    [InlineData("\"type\": \"integer\", \"exclusiveMinimum\": 0, \"exclusiveMaximum\": 10", "9", "10")]
    [InlineData("\"type\": \"integer\", \"exclusiveMinimum\": 0", "1", "0")]
    [InlineData("\"type\": \"integer\", \"maximum\": -3", "-3", "-2")]
    [InlineData("\"type\": \"integer\", \"minimum\": -10, \"maximum\": -3", "-10", "-11")]
    [InlineData("\"type\": \"integer\", \"multipleOf\": 5", "-15", "7")]
    [InlineData("\"type\": \"integer\", \"minimum\": 1, \"maximum\": 20, \"multipleOf\": 7", "14", "21")]
    // numbers: fractions, exact decimal bounds and steps
    [InlineData("\"type\": \"number\", \"minimum\": 0, \"maximum\": 1", "0.999", "1.001")]
    [InlineData("\"type\": \"number\", \"minimum\": 0, \"maximum\": 1", "1", "-0.5")]
    [InlineData("\"type\": \"number\", \"exclusiveMaximum\": 0.1", "0.0999", "0.1")]
    [InlineData("\"type\": \"number\", \"minimum\": 0.1", "0.1", "0.0999999")]
    [InlineData("\"type\": \"number\", \"multipleOf\": 0.01", "12.34", "12.345")]
    [InlineData("\"type\": \"number\", \"minimum\": -1.5, \"maximum\": 2.25", "-1.5", "2.2500001")]
    [InlineData("\"type\": \"number\", \"maximum\": 1e2", "100.0", "100.01")]
    [InlineData("\"type\": \"number\", \"minimum\": 0", "5", "5e1")] // held numbers are written without an exponent
    // draft 4's boolean exclusives
    [InlineData("\"type\": \"number\", \"minimum\": 0, \"exclusiveMinimum\": true", "0.5", "0")]
    public void NumbersKeepTheirBounds(string rules, string valid, string invalid)
    {
        var schema = "{\"type\": \"object\", \"properties\": {\"x\": {" + rules + "}}, \"required\": [\"x\"]}";
        Assert.True(Whole(schema, "{\"x\": " + valid + "}"), valid);
        Assert.False(Whole(schema, "{\"x\": " + invalid + "}"), invalid);
        // The validator agrees on both.
        if (rules.Contains("true")) return; // draft 4's form: the validator reads 2020-12
        var validator = Json.Schema.JsonSchema.FromText(schema);
        Assert.True(validator.Evaluate(JsonDocument.Parse("{\"x\": " + valid + "}").RootElement).IsValid);
        if (!invalid.Contains('e') && !rules.Contains("true")) Assert.False(validator.Evaluate(JsonDocument.Parse("{\"x\": " + invalid + "}").RootElement).IsValid);
    }

    /// <summary>A digit is refused as soon as no number beginning so can hold: with a maximum of 5, "6" cannot begin
    /// and "1" cannot go on; with a minimum of 100, "0" cannot begin and "1" must go on to three digits.</summary>
    [Fact]
    public void ADigitIsRefusedOnceNoNumberBeginningSoHolds()
    {
        var constraint = Constraint("""{"type": "object", "properties": {"x": {"type": "integer", "minimum": 1, "maximum": 5}}}""");
        constraint.AcceptText("{\"x\": ");
        Assert.Equal("12345", string.Concat("-0123456789".Where(c => constraint.AllowsText(c.ToString()))));
        constraint.AcceptText("1");
        Assert.Equal("", string.Concat("-0123456789.".Where(c => constraint.AllowsText(c.ToString()))));
        Assert.True(constraint.AllowsText("}"));

        var large = Constraint("""{"type": "object", "properties": {"x": {"type": "integer", "minimum": 100}}}""");
        large.AcceptText("{\"x\": 1");
        Assert.False(large.AllowsText("}"));
        Assert.False(large.AllowsText("0}"));
        Assert.True(large.AllowsText("00}"));
    }

    [Fact]
    public void ItemsAndKeysAreCounted()
    {
        // A tuple (pydantic's tuple[int, str]): each place its own schema, nothing beyond it with "items": false.
        var tuple = """{"type": "object", "properties": {"t": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string", "maxLength": 2}], "items": false, "minItems": 2}}, "required": ["t"]}""";
        Assert.True(Whole(tuple, "{\"t\": [1, \"ab\"]}"));
        Assert.False(Whole(tuple, "{\"t\": [1]}"));
        Assert.False(Whole(tuple, "{\"t\": [\"a\", 1]}"));
        Assert.False(Whole(tuple, "{\"t\": [1, \"a\", 3]}"));
        var open = """{"type": "object", "properties": {"t": {"prefixItems": [{"type": "boolean"}], "items": {"type": "null"}}}}""";
        Assert.True(Whole(open, "{\"t\": [true, null, null]}"));
        Assert.False(Whole(open, "{\"t\": [null]}"));
        var list = """{"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}}, "required": ["a"]}""";
        Assert.False(Whole(list, "{\"a\": []}"));
        Assert.True(Whole(list, "{\"a\": [1]}"));
        Assert.True(Whole(list, "{\"a\": [1, 2]}"));
        Assert.False(Whole(list, "{\"a\": [1, 2, 3]}"));
        var keys = """{"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1, "maxProperties": 2}""";
        Assert.False(Whole(keys, "{}"));
        Assert.True(Whole(keys, "{\"k\": \"v\"}"));
        Assert.False(Whole(keys, "{\"k\": \"v\", \"l\": \"w\", \"m\": \"x\"}"));
        var none = """{"type": "object", "properties": {"a": {"type": "array", "maxItems": 0}}}""";
        Assert.True(Whole(none, "{\"a\": []}"));
        Assert.False(Whole(none, "{\"a\": [1]}"));
    }

    /// <summary>Pydantic's <c>Optional[Model]</c> (<c>anyOf</c> of a reference and null), unions of a string and a number,
    /// and a recursive optional child are followed branch by branch; branches that begin alike (two objects) leave the
    /// value free.</summary>
    [Fact]
    public void BranchesThatBeginDifferentlyAreFollowed()
    {
        const string Pydantic = """
            {"$defs": {"Address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false},
                       "Node": {"type": "object", "properties": {"v": {"type": "integer"}, "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}},
                                "required": ["v", "next"], "additionalProperties": false}},
             "type": "object",
             "properties": {"home": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}], "default": null},
                            "id": {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "integer", "minimum": 0}]},
                            "list": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}},
             "additionalProperties": false}
            """;
        Assert.True(Whole(Pydantic, "{\"home\": {\"city\": \"Oslo\"}}"));
        Assert.True(Whole(Pydantic, "{\"home\": null}"));
        Assert.False(Whole(Pydantic, "{\"home\": {\"town\": \"Oslo\"}}"));
        Assert.False(Whole(Pydantic, "{\"home\": \"Oslo\"}"));
        Assert.True(Whole(Pydantic, "{\"id\": \"abc\"}"));
        Assert.True(Whole(Pydantic, "{\"id\": 12}"));
        Assert.False(Whole(Pydantic, "{\"id\": \"abcd\"}"));
        Assert.False(Whole(Pydantic, "{\"id\": -1}"));
        Assert.True(Whole(Pydantic, "{\"list\": {\"v\": 1, \"next\": {\"v\": 2, \"next\": null}}}"));
        Assert.False(Whole(Pydantic, "{\"list\": {\"v\": 1, \"next\": {\"v\": 2}}}"));
        var overlapping = """{"type": "object", "properties": {"x": {"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}}}, {"type": "object", "properties": {"b": {"type": "string"}}}]}}}""";
        Assert.True(Whole(overlapping, "{\"x\": {\"c\": [1]}}")); // free
    }

    private const string Pets = """
        {"$defs": {"Cat": {"properties": {"pet_type": {"const": "cat", "title": "Pet Type", "type": "string"}, "meows": {"type": "integer", "minimum": 0}},
                           "required": ["pet_type", "meows"], "title": "Cat", "type": "object", "additionalProperties": false},
                   "Dog": {"properties": {"pet_type": {"enum": ["dog"], "type": "string"}, "barks": {"type": "number"}, "name": {"type": "string", "maxLength": 5}},
                           "required": ["pet_type", "barks"], "title": "Dog", "type": "object", "additionalProperties": false}},
         "properties": {"pet": {"discriminator": {"mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"}, "propertyName": "pet_type"},
                                "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]},
                        "maybe": {"anyOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}, {"type": "null"}]}},
         "required": ["pet", "maybe"], "title": "Model", "type": "object", "additionalProperties": false}
        """;

    /// <summary>Pydantic's discriminated unions (<c>Union[Cat, Dog]</c> with <c>Field(discriminator="pet_type")</c>:
    /// <c>oneOf</c> with OpenAPI's <c>discriminator</c>; and without the keyword, a property each branch sets to its own
    /// constant): the discriminator comes first and its value picks the branch the rest of the object follows.</summary>
    [Fact]
    public void DiscriminatedUnionsFollowTheBranchTheirKeyNames()
    {
        Assert.True(Whole(Pets, "{\"pet\": {\"pet_type\": \"cat\", \"meows\": 3}, \"maybe\": null}"));
        Assert.True(Whole(Pets, "{\"pet\": {\"pet_type\": \"dog\", \"barks\": 1.5, \"name\": \"Rex\"}, \"maybe\": {\"pet_type\": \"cat\", \"meows\": 0}}"));
        Assert.False(Whole(Pets, "{\"pet\": {\"pet_type\": \"cat\", \"barks\": 1}, \"maybe\": null}"));   // a dog's key in a cat
        Assert.False(Whole(Pets, "{\"pet\": {\"pet_type\": \"cat\"}, \"maybe\": null}"));                 // a cat's required key missing
        Assert.False(Whole(Pets, "{\"pet\": {\"pet_type\": \"cow\", \"meows\": 3}, \"maybe\": null}"));
        Assert.False(Whole(Pets, "{\"pet\": {\"meows\": 3, \"pet_type\": \"cat\"}, \"maybe\": null}"));  // the discriminator first
        Assert.False(Whole(Pets, "{\"pet\": {\"pet_type\": \"cat\", \"pet_type\": \"cat\", \"meows\": 3}, \"maybe\": null}"));
        Assert.False(Whole(Pets, "{\"pet\": {\"pet_type\": \"dog\", \"barks\": 1, \"name\": \"Rexxxx\"}, \"maybe\": null}"));
    }


    /// <summary><c>uniqueItems</c> over one enum (pydantic's <c>set[Color]</c>, the enum through a <c>$ref</c>): a value
    /// written is not offered again, and once every value is written no other item may begin.</summary>
    [Fact]
    public void UniqueEnumItemsAreNotRepeated()
    {
        const string Colors = """
            {"$defs": {"Color": {"enum": ["red", "green", "blue"]}}, "type": "object",
             "properties": {"c": {"type": "array", "items": {"$ref": "#/$defs/Color"}, "uniqueItems": true}, "n": {"type": "array", "items": {"enum": [1, 10]}, "uniqueItems": true}},
             "required": ["c"]}
            """;
        Assert.True(Whole(Colors, "{\"c\": [\"red\", \"blue\"]}"));
        Assert.True(Whole(Colors, "{\"c\": [\"blue\", \"green\", \"red\"]}"));
        Assert.False(Whole(Colors, "{\"c\": [\"red\", \"red\"]}"));
        Assert.False(Whole(Colors, "{\"c\": [\"red\", \"green\", \"blue\", \"red\"]}"));
        var full = Constraint(Colors);
        Assert.True(Support.ConstraintText.Feed(full, "{\"c\": [\"red\", \"green\", \"blue\""));
        Assert.False(full.AllowsText(","));  // nothing is left to write
        Assert.True(full.AllowsText("]"));
        // Values that begin alike (1 and 10) are told apart where they end.
        Assert.True(Whole(Colors, "{\"c\": [], \"n\": [1, 10]}"));
        Assert.True(Whole(Colors, "{\"c\": [], \"n\": [10, 1]}"));
        Assert.False(Whole(Colors, "{\"c\": [], \"n\": [10, 10]}"));
        Assert.False(Whole(Colors, "{\"c\": [], \"n\": [1, 1]}"));
        // Without uniqueItems, repeats stand.
        Assert.True(Whole(Colors.Replace("\"uniqueItems\": true", "\"uniqueItems\": false"), "{\"c\": [\"red\", \"red\"]}"));
    }

    /// <summary><c>propertyNames</c> (pydantic's <c>dict</c> with constrained keys): every key follows its pattern and
    /// lengths; declared keys too; such keys are written without escapes. As an enum, the keys are those names.</summary>
    [Fact]
    public void KeysFollowPropertyNames()
    {
        const string Counts = """
            {"type": "object", "properties": {"total": {"type": "integer"}}, "additionalProperties": {"type": "integer"},
             "propertyNames": {"pattern": "^[a-z]+$", "minLength": 2, "maxLength": 5}}
            """;
        Assert.True(Whole(Counts, "{\"ab\": 1, \"total\": 2, \"xyz\": 3}"));
        Assert.False(Whole(Counts, "{\"Ab\": 1}"));      // the pattern
        Assert.False(Whole(Counts, "{\"a\": 1}"));       // too short
        Assert.False(Whole(Counts, "{\"abcdef\": 1}"));  // too long
        Assert.False(Whole(Counts, "{\"ab\": \"x\"}"));  // the value still follows additionalProperties
        Assert.False(Whole(Counts, "{\"a\\u0062\": 1}")); // no escapes in a held key
        var held = Constraint(Counts);
        Assert.True(Support.ConstraintText.Feed(held, "{\"abcde"));
        Assert.False(held.AllowsText("f"));
        Assert.True(held.AllowsText("\""));
        // A format for keys.
        Assert.True(Whole("""{"type": "object", "additionalProperties": true, "propertyNames": {"format": "date"}}""", "{\"2024-05-06\": 1}"));
        Assert.False(Whole("""{"type": "object", "additionalProperties": true, "propertyNames": {"format": "date"}}""", "{\"yesterday\": 1}"));
        // As an enum (pydantic's dict[Literal["a", "b"], int]): the keys are those names, each at most once.
        const string Named = """
            {"type": "object", "properties": {"b": {"type": "string"}, "z": {"type": "integer"}}, "required": ["b"],
             "additionalProperties": {"type": "integer"}, "propertyNames": {"enum": ["a", "b"]}}
            """;
        Assert.True(Whole(Named, "{\"a\": 1, \"b\": \"x\"}"));
        Assert.True(Whole(Named, "{\"b\": \"x\"}"));
        Assert.False(Whole(Named, "{\"a\": 1}"));             // b is still required
        Assert.False(Whole(Named, "{\"b\": \"x\", \"c\": 1}"));  // not a name
        Assert.False(Whole(Named, "{\"b\": \"x\", \"z\": 1}"));  // declared, but not a name
        Assert.False(Whole(Named, "{\"a\": 1, \"a\": 2, \"b\": \"x\"}"));
        Assert.False(Whole(Named, "{\"a\": \"x\", \"b\": \"x\"}")); // a takes additionalProperties' schema
    }

    // Schemas with every rule above, for the walks.
    /// <summary><c>dependentRequired</c> (and draft 7's <c>dependencies</c> lists): an object holding a key cannot close
    /// before the keys it depends on; one without it closes as before; <c>allOf</c> parts' dependents are joined.</summary>
    [Fact]
    public void DependentKeysMustFollowTheirKey()
    {
        foreach (var keyword in new[] { "dependentRequired", "dependencies" })
        {
            var schema = $$$"""
                {"type": "object", "properties": {"card": {"type": "string"}, "billing": {"type": "string"}, "cvv": {"type": "integer"}, "note": {"type": "string"}},
                 "{{{keyword}}}": {"card": ["billing", "cvv"]}, "additionalProperties": false}
                """;
            Assert.False(Whole(schema, """{"card": "1"}"""));
            Assert.False(Whole(schema, """{"card": "1", "billing": "b"}"""));
            Assert.True(Whole(schema, """{"card": "1", "billing": "b", "cvv": 123}"""));
            Assert.True(Whole(schema, """{"cvv": 1, "card": "1", "billing": "b"}"""));
            Assert.True(Whole(schema, """{"note": "n"}"""));
            Assert.True(Whole(schema, """{}"""));
        }
        const string Joined = """
            {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "dependentRequired": {"a": ["b"]}},
                       {"properties": {"c": {"type": "integer"}}, "dependentRequired": {"a": ["c"]}}]}
            """;
        Assert.False(Whole(Joined, """{"a": 1, "b": 2}"""));
        Assert.True(Whole(Joined, """{"a": 1, "b": 2, "c": 3}"""));
        // propertyNames as an enum keeps the dependents on the keys it keeps.
        const string Named = """
            {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "dependentRequired": {"x": ["y"]},
             "additionalProperties": {"type": "integer"}, "propertyNames": {"enum": ["x", "y", "z"]}}
            """;
        Assert.False(Whole(Named, """{"x": 1}"""));
        Assert.True(Whole(Named, """{"x": 1, "y": 2}"""));
        Assert.True(Whole(Named, """{"z": 1}"""));
    }

    /// <summary><c>patternProperties</c>: a key that matches a pattern takes its schema; with <c>additionalProperties:
    /// false</c> (or declared properties and no <c>additionalProperties</c>) the keys are the declared ones and those
    /// that match a pattern; with <c>additionalProperties: true</c> other keys stay free.</summary>
    [Fact]
    public void PatternPropertiesTypeTheKeysTheyMatch()
    {
        const string Only = """{"type": "object", "patternProperties": {"^x-": {"type": "integer"}, "_id$": {"type": "string", "maxLength": 3}}, "additionalProperties": false}""";
        Assert.True(Whole(Only, """{"x-a": 1, "user_id": "abc"}"""));
        Assert.False(Whole(Only, """{"x-a": "s"}"""));
        Assert.False(Whole(Only, """{"user_id": "abcd"}"""));
        Assert.False(Whole(Only, """{"other": 1}"""));
        Assert.True(Whole(Only, "{}"));
        const string Declared = """{"type": "object", "properties": {"name": {"type": "string"}}, "patternProperties": {"^n[0-9]+$": {"type": "boolean"}}, "required": ["name"]}""";
        Assert.True(Whole(Declared, """{"name": "a", "n1": true, "n22": false}"""));
        Assert.False(Whole(Declared, """{"name": "a", "n1": 5}"""));
        Assert.False(Whole(Declared, """{"name": "a", "zzz": 1}"""));
        Assert.False(Whole(Declared, """{"n1": true}"""));
        const string Open = """{"type": "object", "patternProperties": {"^n": {"type": "integer"}}, "additionalProperties": true}""";
        Assert.True(Whole(Open, """{"nx": 1, "other": "s"}"""));
        Assert.False(Whole(Open, """{"nx": "s"}"""));
    }

    /// <summary><c>uniqueItems</c> of strings (pydantic's <c>set[str]</c>): an item cannot close as a string written
    /// before it in the array (escapes undone), so it goes on or differs.</summary>
    [Fact]
    public void UniqueStringItemsDiffer()
    {
        const string Tags = """{"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}}, "required": ["tags"]}""";
        Assert.True(Whole(Tags, """{"tags": ["a", "b", "ab", ""]}"""));
        Assert.False(Whole(Tags, """{"tags": ["a", "b", "a"]}"""));
        Assert.False(Whole(Tags, """{"tags": ["", ""]}"""));
        Assert.False(Whole(Tags, """{"tags": ["ab", "a\u0062"]}"""));
        // Another array's strings are its own: the same string in two unique arrays is fine.
        const string Two = """{"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}, "b": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}}}""";
        Assert.True(Whole(Two, """{"a": ["x", "y"], "b": ["x", "y"]}"""));
        // Without uniqueItems, repeats are fine.
        Assert.True(Whole("""{"type": "object", "properties": {"t": {"type": "array", "items": {"type": "string"}}}}""", """{"t": ["a", "a"]}"""));
    }

    private static readonly string[] WalkSchemas =
    [
        """
        {"type": "object", "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{2,4}$"}, "name": {"type": "string", "minLength": 2, "maxLength": 6},
            "age": {"type": "integer", "minimum": 0, "maximum": 120}, "price": {"type": "number", "exclusiveMinimum": 0, "maximum": 99.5, "multipleOf": 0.25},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "minItems": 1, "maxItems": 3},
            "pair": {"type": "array", "prefixItems": [{"type": "integer", "minimum": 0, "maximum": 9}, {"enum": ["x", "y"]}], "items": false, "minItems": 2},
            "when": {"type": "string", "format": "date-time"}, "sizes": {"type": "array", "items": {"enum": ["S", "M", "L", 1, 10]}, "uniqueItems": true}},
         "required": ["code", "name", "age", "price", "tags", "when", "pair", "sizes"], "additionalProperties": false}
        """,
        """
        {"$defs": {"Address": {"type": "object", "properties": {"zip": {"type": "string", "pattern": "^\\d{5}$"}, "ip": {"type": "string", "format": "ipv4"}},
                               "required": ["zip"], "additionalProperties": false}},
         "type": "object", "properties": {
            "home": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]}, "id": {"anyOf": [{"type": "string", "format": "uuid"}, {"type": "integer", "exclusiveMaximum": -5}]},
            "day": {"type": "string", "format": "date"}, "mail": {"type": "string", "format": "email"}, "span": {"type": "string", "format": "duration"},
            "score": {"type": ["number", "null"], "minimum": -2.5, "maximum": 2.5}, "host": {"type": "string", "format": "hostname", "maxLength": 20},
            "extra": {"type": "object", "additionalProperties": {"type": "integer", "multipleOf": 3}, "maxProperties": 2, "propertyNames": {"pattern": "^k[0-9]{1,2}$"}}},
         "required": ["home", "id", "day", "mail", "span", "score", "host", "extra"], "additionalProperties": false}
        """,
        """
        {"$defs": {"Base": {"type": "object", "properties": {"id": {"type": "integer", "minimum": 1}}, "required": ["id"]}},
         "type": "object", "properties": {"item": {"allOf": [{"$ref": "#/$defs/Base"}, {"properties": {"label": {"type": "string", "maxLength": 4},
            "id": {"maximum": 9}}, "required": ["label"]}, {"properties": {"label": {"pattern": "^[a-z]+$"}}}]},
            "by": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 9}, "propertyNames": {"enum": ["x", "yy"]}},
            "n": {"allOf": [{"type": "number", "minimum": -3}, {"type": "integer", "maximum": 3}, {"exclusiveMaximum": 2}]}},
         "required": ["item", "n", "by"], "additionalProperties": false}
        """,
        Pets,
        """
        {"type": "object", "properties": {"t": {"type": "string", "format": "time"}, "v6": {"type": "string", "format": "ipv6"}, "n": {"type": "number", "minimum": 1000000, "maximum": 1000001}},
         "required": ["t", "v6", "n"], "additionalProperties": false}
        """,
        """
        {"type": "object", "properties": {"card": {"type": "string", "maxLength": 4}, "billing": {"type": "string", "maxLength": 4},
            "cvv": {"type": "integer", "minimum": 100, "maximum": 999}, "note": {"type": "string", "maxLength": 3}},
         "dependentRequired": {"card": ["billing", "cvv"], "note": ["card"]}, "additionalProperties": false}
        """,
        """
        {"type": "object", "patternProperties": {"^x-[a-c]{1,2}$": {"type": "integer", "minimum": 0, "maximum": 9}, "^[a-c]_id$": {"type": "string", "maxLength": 3}},
         "properties": {"name": {"type": "string", "maxLength": 2}}, "additionalProperties": false, "maxProperties": 4}
        """,
        """
        {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "uniqueItems": true, "maxItems": 5}},
         "required": ["tags"], "additionalProperties": false}
        """,
    ];

    /// <summary>The schema without OpenAPI's <c>discriminator</c> (an annotation this validator's 2020-12 dialect
    /// refuses as an unknown keyword; it changes nothing a value must be).</summary>
    private static string WithoutAnnotations(string schema)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(schema)!;
        void Strip(System.Text.Json.Nodes.JsonNode? at)
        {
            if (at is System.Text.Json.Nodes.JsonObject o)
            {
                o.Remove("discriminator");
                foreach (var (_, child) in o.ToList()) Strip(child);
            }
            else if (at is System.Text.Json.Nodes.JsonArray a)
                foreach (var child in a) Strip(child);
        }
        Strip(node);
        return node.ToJsonString();
    }

    /// <summary>A string's \u escapes write a surrogate only in a pair — a high one then a low one, as JSON writers escape a
    /// character beyond the first plane — refused at the digit that makes it lone (a lone one is JSON text that strict
    /// readers such as System.Text.Json do not take as a string; a random walk once wrote \uDFBD); a pair counts as one
    /// character of a maxLength; keys alike.</summary>
    [Fact]
    public void SurrogateEscapesComeOnlyInPairs()
    {
        string free = "{\"type\": \"object\", \"properties\": {\"s\": {\"type\": \"string\"}}, \"required\": [\"s\"]}";
        Assert.True(Whole(free, "{\"s\": \"\\ud83d\\ude00\"}"));
        Assert.True(Whole(free, "{\"s\": \"a\\uD800\\uDFFFb\\u00e9\\uFFFF\"}"));
        Assert.True(Whole(StringSchema("\"maxLength\": 1"), "{\"s\": \"\\ud83d\\ude00\"}"));
        Assert.False(Whole(StringSchema("\"maxLength\": 1"), "{\"s\": \"a\\ud83d\\ude00\"}"));
        Assert.False(Support.ConstraintText.Feed(Constraint(free), "{\"s\": \"\\uDC")); // a low one first
        Assert.False(Support.ConstraintText.Feed(Constraint(free), "{\"s\": \"\\udfbd"));
        Assert.False(Support.ConstraintText.Feed(Constraint(free), "{\"s\": \"\\ud83d\"")); // a high one alone
        Assert.False(Support.ConstraintText.Feed(Constraint(free), "{\"s\": \"\\ud83dx"));
        Assert.False(Support.ConstraintText.Feed(Constraint(free), "{\"s\": \"\\ud83d\\u0041"));
        Assert.False(Support.ConstraintText.Feed(Constraint(free), "{\"s\": \"\\ud83d\\ud8"));
        Assert.True(Support.ConstraintText.Feed(Constraint(free), "{\"s\": \"\\ud83d\\udc"));
        string anyKeys = "{\"type\": \"object\", \"additionalProperties\": {\"type\": \"integer\"}}";
        Assert.True(Whole(anyKeys, "{\"\\u00e9\": 1}"));
        Assert.True(Whole(anyKeys, "{\"\\u00E9\\uD83C\\uDF0D\": 1}"));
        Assert.False(Support.ConstraintText.Feed(Constraint(anyKeys), "{\"\\udf"));
        Assert.False(Support.ConstraintText.Feed(Constraint(anyKeys), "{\"\\uD83C\""));
        Assert.False(Support.ConstraintText.Feed(Constraint(anyKeys), "{\"\\uD83C\\u00"));
        Assert.True(Support.ConstraintText.Feed(Constraint(anyKeys), "{\"\\uD7"));
    }

    /// <summary>Random walks held to each schema — each step a random character among those allowed, closing
    /// characters favoured — end as JSON that JsonSchema.Net, with format validation on, finds valid; none gets stuck.</summary>
    [Fact]
    public void WalksAreValidPerAnIndependentValidator()
    {
        var alphabet = Enumerable.Range(0x20, 95).Select(c => (char)c).ToArray();
        foreach (var text in WalkSchemas)
        {
            var validator = Json.Schema.JsonSchema.FromText(WithoutAnnotations(text));
            int complete = 0;
            Gen.Int.Sample(seed =>
            {
                if (Support.ConstraintText.Walk(Constraint(text), alphabet, new Random(seed), 2000) is not { } json) return;
                complete++;
                using var document = JsonDocument.Parse(json);
                var result = validator.Evaluate(document.RootElement, Validation);
                Assert.True(result.IsValid, json + "\n" + JsonSerializer.Serialize((result.Details ?? []).Where(d => d.Errors is { Count: > 0 }).Select(d => (d.InstanceLocation.ToString(), d.Errors))));
            }, iter: 150, threads: 1);
            Assert.True(complete > 100, $"only {complete} of 150 walks ended");
        }
    }

    /// <summary>The mask by first characters equals asking every token inside values held to rules (a pattern, a
    /// bounded number, a length), with Qwen2.5's real vocabulary: multi-character pieces cross the rules' states.</summary>
    [Fact]
    public void TheMaskHoldsTheRulesForEveryToken()
    {
        var pieces = TokenPieces.For(TokenizerLoader.Open(Support.SharedData.Path("tokenizers", "qwen2_5")));
        var schema = JsonSchema.From(JsonDocument.Parse(WalkSchemas[0]).RootElement);
        foreach (var prefix in new[] { "{\"code\": \"", "{\"code\": \"AB-1", "{\"age\": ", "{\"age\": 1", "{\"price\": 9", "{\"price\": 99.",
                     "{\"name\": \"abcde", "{\"when\": \"2024-0", "{\"tags\": [\"a\", \"b\", \"c\"" })
        {
            var constraint = new JsonConstraint(pieces, new JsonConstraint.JsonObject(schema));
            constraint.AcceptText(prefix);
            var fast = Enumerable.Repeat(1f, pieces.Length).ToArray();
            var each = (float[])fast.Clone();
            Assert.Equal(constraint.MaskEach(each), constraint.Mask(fast));
            Assert.Equal(each, fast);
            Assert.True(fast.Count(float.IsFinite) > 0, prefix);
        }
    }

    /// <summary>An <c>allOf</c> of several parts is followed as one schema that every part holds: properties and
    /// required keys joined, a key's schemas in several parts all held, bounds tightened, types intersected, keys limited
    /// to those every part that forbids others declares; parts that cannot be joined (two patterns) leave the value free.</summary>
    [Fact]
    public void SeveralPartsOfAnAllOfAreAllHeld()
    {
        const string Joined = """
            {"type": "object", "properties": {"x": {"allOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]},
                                                            {"properties": {"b": {"type": "integer", "minimum": 0}, "a": {"maxLength": 2}}, "required": ["b"]}]}}}
            """;
        Assert.True(Whole(Joined, "{\"x\": {\"a\": \"hi\", \"b\": 1}}"));
        Assert.True(Whole(Joined, "{\"x\": {\"b\": 0, \"a\": \"\"}}"));
        Assert.False(Whole(Joined, "{\"x\": {\"b\": 0, \"a\": \"\", \"c\": [true]}}")); // declared keys only, as without allOf
        Assert.False(Whole(Joined, "{\"x\": {\"a\": \"hi\"}}"));
        Assert.False(Whole(Joined, "{\"x\": {\"a\": \"hi\", \"b\": -1}}"));
        Assert.False(Whole(Joined, "{\"x\": {\"a\": \"hey\", \"b\": 1}}"));
        Assert.False(Whole(Joined, "{\"x\": {\"a\": 1, \"b\": 1}}"));
        const string Closed = """
            {"type": "object", "properties": {"x": {"allOf": [{"properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "additionalProperties": false},
                                                            {"properties": {"a": {"type": "string"}, "c": {"type": "string"}}, "additionalProperties": false}]}}}
            """;
        Assert.True(Whole(Closed, "{\"x\": {\"a\": \"s\"}}"));
        Assert.False(Whole(Closed, "{\"x\": {\"b\": \"s\"}}"));
        Assert.False(Whole(Closed, "{\"x\": {\"c\": \"s\"}}"));
        const string Numbers = """{"type": "object", "properties": {"n": {"allOf": [{"type": "number", "minimum": -3}, {"type": "integer", "maximum": 3}, {"minimum": 0}]}}}""";
        Assert.True(Whole(Numbers, "{\"n\": 3}"));
        Assert.False(Whole(Numbers, "{\"n\": -1}"));
        Assert.False(Whole(Numbers, "{\"n\": 1.5}"));
        // A part with a name twice (JSON allows it) is read without failing, the value left free.
        Assert.True(Whole("""{"type": "object", "properties": {"x": {"allOf": [{"minimum": {"a": 1, "a": 2}}, {"maximum": 3}]}}}""", "{\"x\": [true]}"));
        const string TwoPatterns = """{"type": "object", "properties": {"s": {"allOf": [{"type": "string", "pattern": "^a"}, {"pattern": "b$"}]}}}""";
        Assert.True(Whole(TwoPatterns, "{\"s\": [1]}")); // left free
    }

    /// <summary>A reply held to a regular expression (vLLM's <c>guided_regex</c>): whole matches only; the text may end
    /// at any match and is complete where a match admits nothing more; choices are escaped literals.</summary>
    [Fact]
    public void RepliesHeldToARegularExpression()
    {
        JsonConstraint Regex(string regex) => new([], new JsonConstraint.Matches(regex));
        var yesNo = Regex("(yes|no)");
        Assert.False(yesNo.MayEnd);
        Assert.False(yesNo.AllowsText("maybe"));
        yesNo.AcceptText("ye");
        Assert.False(yesNo.MayEnd);
        yesNo.AcceptText("s");
        Assert.True(yesNo.Complete);
        var digits = Regex("\\d+");
        digits.AcceptText("12");
        Assert.True(digits.MayEnd);
        Assert.False(digits.Complete);
        Assert.True(digits.AllowsText("3"));
        Assert.False(digits.AllowsText("a"));
        Assert.Throws<ArgumentException>(() => Regex("(?!x)y"));
        Assert.Throws<ArgumentException>(() => new JsonConstraint([], new JsonConstraint.Matches("a"), new JsonConstraint.Literal("b")));
        var choice = JsonConstraint.Matches.Choice(["a.b", "c|d", "(x)", "a.bc", "\\"]);
        foreach (var whole in new[] { "a.b", "c|d", "(x)", "a.bc", "\\" }) Assert.True(new Regex("^" + choice + "$").IsMatch(whole), whole);
        foreach (var not in new[] { "axb", "c", "x", "a.b.", "" }) Assert.False(new Regex("^" + choice + "$").IsMatch(not), not);
        var chosen = Regex(choice);
        chosen.AcceptText("a.b");
        Assert.True(chosen.MayEnd);      // "a.b" is a choice, "a.bc" another
        Assert.False(chosen.Complete);
        chosen.AcceptText("c");
        Assert.True(chosen.Complete);
    }

    /// <summary>A generation held to a regular expression may end (an end token drawn) once its text matches, and not
    /// before: the end token ranked first every step ends it at the first match.</summary>
    [Fact]
    public void ASequenceHeldToARegularExpressionEndsAtAMatch()
    {
        var model = LlamaModel.Load(Nanoscale.IO.CheckpointLoader.Open(Support.SharedData.Stories260K));
        var tokenizer = Llama2cTokenizer.Load(Support.SharedData.Tok512);
        var pieces = TokenPieces.For(tokenizer);
        var constraint = new JsonConstraint(pieces, new JsonConstraint.Matches(" [a-z]{3,}( [a-z]+)*"));
        var sequence = new GenerationSequence(model, tokenizer, tokenizer.Encode("Once", addBos: true), 50, new SamplingOptions { Seed = 1, Temperature = 1 }, [], null,
            CancellationToken.None, deferPrompt: true, session: model.CreateSession(64), constraint: constraint);
        var random = new Random(3);
        while (sequence.Advance(pieces.Select(_ => (float)random.NextDouble()).Select((v, id) => id == tokenizer.EosId ? 30f : v).ToArray()) is not null) { }
        var result = sequence.Result();
        Assert.Equal(StopReason.EndToken, result.Stop);
        Assert.Matches("^ [a-z]{3,}( [a-z]+)*$", result.NewText);
        // It ended at the first match: without its last token the text did not match.
        var shorter = string.Concat(result.Tokens[result.PromptTokens..^1].Select(id => pieces[id]));
        Assert.DoesNotMatch("^ [a-z]{3,}( [a-z]+)*$", shorter);
    }
}
