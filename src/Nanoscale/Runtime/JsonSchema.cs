using System.Text.Json;
using System.Text.Json.Nodes;

namespace Nanoscale.Runtime;

/// <summary>
/// A JSON schema as <see cref="JsonConstraint"/> holds generated JSON to it — the subset that decides what may be
/// written next: <c>type</c> (a name or a list), <c>enum</c> and <c>const</c>, an object's <c>properties</c> (only those
/// keys, each at most once, when properties are declared and <c>additionalProperties</c> is not <c>true</c> or a schema,
/// as OpenAI's structured outputs have it; other keys' values follow <c>additionalProperties</c> when it is a schema),
/// <c>required</c> (the object cannot close before them), <c>dependentRequired</c> (and draft 7's <c>dependencies</c>
/// lists: nor before the keys a written key depends on), <c>patternProperties</c> (a key that matches a pattern takes its
/// schema; without <c>additionalProperties</c> true or a schema, the keys are the declared ones and the patterns' matches),
/// <c>minProperties</c>/<c>maxProperties</c>, an array's
/// <c>items</c>, <c>prefixItems</c> (tuples) and <c>minItems</c>/<c>maxItems</c>, a string's <c>minLength</c>/<c>maxLength</c> (code points),
/// <c>pattern</c> (<see cref="JsonPattern"/>'s subset of ECMAScript regular expressions) and <c>format</c> (date, time,
/// date-time, duration, uuid, ipv4, ipv6, hostname, email: <see cref="JsonPattern.ForFormat"/>), a number's
/// <c>minimum</c>/<c>maximum</c>/<c>exclusiveMinimum</c>/<c>exclusiveMaximum</c>/<c>multipleOf</c> (exact decimals,
/// <see cref="JsonNumberBounds"/>), <c>anyOf</c>/<c>oneOf</c> of plain types, of branches whose values begin with
/// different characters (pydantic's <c>Optional[Model]</c>: an object or null) and of object branches told apart by a
/// discriminator (<see cref="Discriminated"/>), local <c>$ref</c>s (<c>#/$defs/Name</c>,
/// as pydantic writes nested models; a recursive one is followed to the nesting bound) and <c>allOf</c> (several parts
/// joined into one schema, <see cref="Merge"/>). Everything else — remote references, branches that begin alike
/// (object branches without a discriminator), patterns beyond the subset, formats not listed, parts of an <c>allOf</c>
/// that cannot be joined — leaves the value free (any JSON of the allowed types), so a schema the subset does not cover
/// is followed less closely, never refused. A function's <c>parameters</c> absent means no
/// arguments: <c>{}</c>.
/// </summary>
public sealed class JsonSchema
{
    [Flags]
    internal enum Kinds
    {
        Object = 1, Array = 2, String = 4, Number = 8, Integer = 16, Boolean = 32, Null = 64,
        Any = Object | Array | String | Number | Integer | Boolean | Null,
    }

    internal Kinds Allowed { get; private set; } = Kinds.Any;

    /// <summary><c>enum</c>/<c>const</c>: the allowed values as compact JSON texts (null: no such list).</summary>
    internal string[]? Values { get; private set; }

    /// <summary>An object's declared keys as written inside their quotes, each with its closing quote.</summary>
    internal string[] Keys { get; private set; } = [];

    internal JsonSchema[] KeySchemas { get; private set; } = [];

    /// <summary>A bit per declared key that must be present.</summary>
    internal UInt128 Required { get; private set; }

    /// <summary><c>dependentRequired</c> (and draft 7's <c>dependencies</c> with lists of names): for each declared key
    /// a bit per declared key that must be present when it is (empty: none).</summary>
    internal UInt128[] Dependencies { get; private set; } = [];

    /// <summary>The declared keys that must be present in an object holding the keys <paramref name="seen"/>:
    /// <see cref="Required"/> and the dependencies of those seen.</summary>
    internal UInt128 RequiredWith(UInt128 seen)
    {
        var required = Required;
        for (int i = 0; i < Dependencies.Length; i++)
            if ((seen & (UInt128.One << i)) != 0) required |= Dependencies[i];
        return required;
    }

    /// <summary><c>patternProperties</c>: a key that is not declared and matches a pattern (unanchored, as JSON Schema
    /// reads them) takes that pattern's schema, the first that matches; keys are then written without escapes.</summary>
    internal (JsonPattern Pattern, JsonSchema Schema)[] PatternKeys { get; private set; } = [];

    /// <summary>Whether keys are only the declared ones and those that match one of <see cref="PatternKeys"/>
    /// (<c>patternProperties</c> without <c>additionalProperties</c> true or a schema).</summary>
    internal bool KeysByPattern { get; private set; }

    /// <summary>The first of <see cref="PatternKeys"/> that <paramref name="key"/> matches whole (null: none); with
    /// <paramref name="begun"/>, the first that some continuation of it could still match.</summary>
    internal JsonSchema? PatternSchema(string key, bool begun = false)
    {
        foreach (var (pattern, schema) in PatternKeys)
        {
            int state = pattern.Start;
            foreach (char c in key)
                if ((state = pattern.Next(state, c)) == JsonPattern.Dead) break;
            if (state != JsonPattern.Dead && (begun || pattern.Accepts(state))) return schema;
        }
        return null;
    }

    /// <summary>Whether keys beyond <see cref="Keys"/> may appear (their values free).</summary>
    internal bool OtherKeys { get; private set; } = true;

    /// <summary>The values of keys beyond <see cref="Keys"/> (<c>additionalProperties</c> as a schema; null: free).</summary>
    internal JsonSchema? OtherValues { get; private set; }

    /// <summary><c>propertyNames</c>: the string schema every key follows (its <c>pattern</c> or <c>format</c>,
    /// <c>minLength</c>, <c>maxLength</c>), as pydantic writes a <c>dict</c> with constrained keys; null: keys free.</summary>
    internal JsonSchema? KeyNames { get; private set; }

    /// <summary>An array's elements (null: any); after <see cref="PrefixItems"/>, the elements beyond them.</summary>
    internal JsonSchema? Items { get; private set; }

    /// <summary>An array's first elements, each its own schema (<c>prefixItems</c>: a tuple, as pydantic writes
    /// <c>tuple[int, str]</c>).</summary>
    internal JsonSchema[] PrefixItems { get; private set; } = [];

    /// <summary>The schema of an array's element <paramref name="index"/> (from 0).</summary>
    internal JsonSchema ItemSchema(int index) => index < PrefixItems.Length ? PrefixItems[index] : Items ?? Any;

    /// <summary>A string's length bounds in code points (<c>minLength</c>, <c>maxLength</c>; <c>format: hostname</c>
    /// caps it at 253).</summary>
    internal int MinLength { get; private set; }

    internal int MaxLength { get; private set; } = int.MaxValue;

    /// <summary>A string's <c>pattern</c>, or the pattern of its <c>format</c> (null: free).</summary>
    internal JsonPattern? Pattern { get; private set; }

    /// <summary>A number's bounds (null: none).</summary>
    internal JsonNumberBounds? Bounds { get; private set; }

    /// <summary>An array's item count bounds.</summary>
    internal int MinItems { get; private set; }

    internal int MaxItems { get; private set; } = int.MaxValue;

    /// <summary><c>uniqueItems</c>: no two items equal. Held where the items are one enum (pydantic's
    /// <c>set[Literal[…]]</c>, <c>set[SomeEnum]</c>): a value written is not offered again; and for string items
    /// (<c>set[str]</c>): a string cannot close as one written before it. Other items are left free.</summary>
    internal bool UniqueItems { get; private set; }

    /// <summary>The enum every item is one of, when <see cref="UniqueItems"/> is held (null: not held).</summary>
    internal IReadOnlyList<string>? UniqueValues => UniqueItems && PrefixItems.Length == 0 && Items?.Values is { } values ? values : null;

    /// <summary>An object's key count bounds.</summary>
    internal int MinProperties { get; private set; }

    internal int MaxProperties { get; private set; } = int.MaxValue;

    /// <summary><c>anyOf</c>/<c>oneOf</c> branches that begin with different characters (an object or null, a string or
    /// a number, …): the value's first character picks its branch. Null: no branches.</summary>
    internal JsonSchema[]? Branches { get; private set; }

    /// <summary>Per branch, the characters a value of it may begin with.</summary>
    internal string[] BranchStarts { get; private set; } = [];

    /// <summary>Whether an object may follow this schema (a JSON object part needs one).</summary>
    public bool AllowsObject => Values is null && Allowed.HasFlag(Kinds.Object);

    /// <summary>Any JSON value.</summary>
    public static JsonSchema Any { get; } = new();

    /// <summary>An object without keys: <c>{}</c> (a function that takes no arguments).</summary>
    public static JsonSchema EmptyObject { get; } = new() { Allowed = Kinds.Object, OtherKeys = false };

    /// <summary>Declared keys per object at most (a larger object's keys are left free).</summary>
    public const int MaxKeys = 128;

    private static readonly JsonSerializerOptions Compact = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The subset of <paramref name="schema"/> that guides generation (see the class).</summary>
    public static JsonSchema From(JsonElement schema) => Compile(schema, schema, 0, []);

    private static JsonSchema Compile(JsonElement schema, JsonElement root, int depth, Dictionary<string, JsonSchema> references)
    {
        if (schema.ValueKind != JsonValueKind.Object || depth > JsonConstraint.MaxDepth) return Any;
        // A local reference (pydantic's "#/$defs/Name") is the schema it points to, compiled once: a recursive schema
        // becomes a cycle, which generation follows only as deep as the text nests.
        if (schema.TryGetProperty("$ref", out var reference))
        {
            if (reference.ValueKind != JsonValueKind.String || Resolve(root, reference.GetString()!) is not { } target) return Any;
            if (references.TryGetValue(reference.GetString()!, out var known)) return known;
            var node = new JsonSchema();
            references[reference.GetString()!] = node;
            node.Become(Compile(target, root, depth + 1, references));
            return node;
        }
        if (schema.TryGetProperty("allOf", out var all) && all.ValueKind == JsonValueKind.Array && all.GetArrayLength() == 1)
            return Compile(all[0], root, depth + 1, references);
        if (all.ValueKind == JsonValueKind.Array && all.GetArrayLength() > 1)
            return MergeOrFree(schema, all, root) is { } merged ? Compile(merged, root, depth + 1, references) : Any;
        if (schema.TryGetProperty("const", out var constant)) return new() { Values = [JsonSerializer.Serialize(constant, Compact)] };
        if (schema.TryGetProperty("enum", out var values) && values.ValueKind == JsonValueKind.Array && values.GetArrayLength() is > 0 and <= MaxKeys)
            return new() { Values = [.. values.EnumerateArray().Select(v => JsonSerializer.Serialize(v, Compact)).Distinct()] };
        var kinds = TypeKinds(schema);
        foreach (var name in (string[])["anyOf", "oneOf"])
            if (kinds is null && schema.TryGetProperty(name, out var branches) && branches.ValueKind == JsonValueKind.Array && branches.GetArrayLength() > 0)
            {
                // Branches that are plain types (nothing else) join.
                Kinds union = 0;
                foreach (var branch in branches.EnumerateArray())
                    union |= branch.ValueKind == JsonValueKind.Object && TypeKinds(branch) is { } k
                        && branch.EnumerateObject().All(p => p.Name is "type" or "description" or "title") ? k : Kinds.Any | (Kinds)128;
                if ((union & (Kinds)128) == 0)
                {
                    kinds = union;
                    continue;
                }
                // Otherwise branches whose values begin with different characters (pydantic's Optional[Model]: an
                // object or null) are followed, the first character choosing; several object branches told apart by a
                // discriminator (a property each sets to its own string constant) count as one; any other overlap
                // leaves the value free.
                var list = branches.EnumerateArray().ToList();
                var starts = list.Select(b => Starts(b, root, 0)).ToList();
                var objects = Enumerable.Range(0, list.Count).Where(i => starts[i] == "{").ToList();
                JsonSchema? discriminated = objects.Count >= 2 ? Discriminated(schema, [.. objects.Select(i => list[i])], root, depth, references) : null;
                var compiled = new List<JsonSchema>();
                var branchStarts = new List<string>();
                for (int i = 0; i < list.Count; i++)
                {
                    if (discriminated is not null && objects.Contains(i))
                    {
                        if (i != objects[0]) continue;
                        compiled.Add(discriminated);
                    }
                    else compiled.Add(Compile(list[i], root, depth + 1, references));
                    branchStarts.Add(starts[i]);
                }
                for (int i = 0; i < branchStarts.Count; i++)
                    for (int j = i + 1; j < branchStarts.Count; j++)
                        if (branchStarts[i].Intersect(branchStarts[j]).Any()) return Any;
                Kinds allowed = 0;
                foreach (var start in branchStarts) allowed |= KindsOf(start);
                return compiled.Count == 1 ? compiled[0] : new() { Allowed = allowed, Branches = [.. compiled], BranchStarts = [.. branchStarts] };
            }
        bool hasProperties = schema.TryGetProperty("properties", out var properties) && properties.ValueKind == JsonValueKind.Object;
        kinds ??= ImpliedKinds(schema);
        var result = new JsonSchema { Allowed = kinds.Value };
        if (kinds.Value.HasFlag(Kinds.String)) result.StringRules(schema);
        if ((kinds.Value & (Kinds.Number | Kinds.Integer)) != 0) result.Bounds = JsonNumberBounds.From(schema);
        if (!kinds.Value.HasFlag(Kinds.Object) && !kinds.Value.HasFlag(Kinds.Array)) return result;

        (result.MinItems, result.MaxItems) = (Count(schema, "minItems", 0), Count(schema, "maxItems", int.MaxValue));
        result.UniqueItems = schema.TryGetProperty("uniqueItems", out var unique) && unique.ValueKind == JsonValueKind.True;
        (result.MinProperties, result.MaxProperties) = (Count(schema, "minProperties", 0), Count(schema, "maxProperties", int.MaxValue));
        var keys = new List<string>();
        var keySchemas = new List<JsonSchema>();
        UInt128 required = 0;
        bool otherKeys = true;
        if (hasProperties && properties.EnumerateObject().Count() <= MaxKeys)
        {
            foreach (var property in properties.EnumerateObject())
            {
                keys.Add(AsKey(property.Name));
                keySchemas.Add(Compile(property.Value, root, depth + 1, references));
            }
            if (schema.TryGetProperty("required", out var names) && names.ValueKind == JsonValueKind.Array)
                foreach (var name in names.EnumerateArray())
                    if (name.ValueKind == JsonValueKind.String && keys.IndexOf(AsKey(name.GetString())) is >= 0 and var i)
                        required |= UInt128.One << i;
            // Declared properties are the object's keys unless the schema says others may come too.
            otherKeys = schema.TryGetProperty("additionalProperties", out var more) && more.ValueKind is JsonValueKind.True or JsonValueKind.Object;
            result.Dependencies = DependenciesOf(schema, keys);
        }
        else if (schema.TryGetProperty("additionalProperties", out var more) && more.ValueKind == JsonValueKind.False)
            otherKeys = false;
        result.Keys = [.. keys];
        result.KeySchemas = [.. keySchemas];
        result.Required = required;
        result.OtherKeys = otherKeys;
        if (otherKeys && schema.TryGetProperty("additionalProperties", out var otherValues) && otherValues.ValueKind == JsonValueKind.Object)
            result.OtherValues = Compile(otherValues, root, depth + 1, references);
        if (schema.TryGetProperty("patternProperties", out var patterned) && patterned.ValueKind == JsonValueKind.Object
            && patterned.EnumerateObject().Count() is > 0 and <= MaxKeys)
        {
            // Keys that match a pattern take its schema; beside declared keys (or any, with additionalProperties) they
            // are the keys the object may have (each key is held to that as it is written, JsonConstraint).
            var patterns = new List<(JsonPattern, JsonSchema)>();
            bool compiledAll = true;
            foreach (var entry in patterned.EnumerateObject())
                if (JsonPattern.TryCompile(entry.Name) is { } compiled) patterns.Add((compiled, Compile(entry.Value, root, depth + 1, references)));
                else compiledAll = false;
            result.PatternKeys = [.. patterns];
            if (!otherKeys)
            {
                // Free keys read as written, each held to being an unwritten declared key or a pattern's match; with a
                // pattern outside the subset, any key.
                result.OtherKeys = true;
                result.KeysByPattern = compiledAll;
            }
        }
        if (result.OtherKeys && result.KeyNames is null && schema.TryGetProperty("propertyNames", out var keyRules) && keyRules.ValueKind == JsonValueKind.Object)
        {
            var keyNames = Compile(keyRules, root, depth + 1, references);
            if (keyNames.Values is { } named && named.All(v => v.StartsWith('"')))
                result.OnlyKeys([.. named.Select(v => v[1..])]);
            else if (keyNames.Pattern is not null || keyNames.MinLength > 0 || keyNames.MaxLength < int.MaxValue)
                result.KeyNames = keyNames;
        }
        result.Items = schema.TryGetProperty("items", out var itemSchema) ? Compile(itemSchema, root, depth + 1, references) : null;
        if (schema.TryGetProperty("prefixItems", out var prefix) && prefix.ValueKind == JsonValueKind.Array && prefix.GetArrayLength() <= MaxKeys)
        {
            result.PrefixItems = [.. prefix.EnumerateArray().Select(p => Compile(p, root, depth + 1, references))];
            // "items": false after a tuple: nothing beyond it.
            if (itemSchema.ValueKind == JsonValueKind.False) result.MaxItems = Math.Min(result.MaxItems, result.PrefixItems.Length);
        }
        return result;
    }

    /// <summary>
    /// An <c>allOf</c> of several schemas (and the keywords beside it) as one schema where every value that follows it
    /// follows them all: types intersected; properties joined (a key in several takes an <c>allOf</c> of its schemas) and
    /// required keys joined; where a part forbids other keys (<c>additionalProperties: false</c>), only the keys every such
    /// part declares; the tighter of each bound; enums intersected; items as an <c>allOf</c>. Null (the value left free)
    /// where parts disagree in what cannot be joined here: two different patterns, formats or steps, branches in two
    /// parts, or <c>additionalProperties</c> schemas in two.
    /// </summary>
    private static JsonElement? MergeOrFree(JsonElement schema, JsonElement parts, JsonElement root)
    {
        try
        {
            return Merge(schema, parts, root);
        }
        catch (ArgumentException)
        {
            // A part with a name twice in one object (JSON allows it; the node model the join is written in does not):
            // the value is left free, as any schema the join cannot read.
            return null;
        }
    }

    private static JsonElement? Merge(JsonElement schema, JsonElement parts, JsonElement root)
    {
        var merged = new JsonObject();
        var sources = new List<JsonElement> { schema };
        foreach (var part in parts.EnumerateArray())
        {
            var resolved = part;
            for (int hops = 0; resolved.ValueKind == JsonValueKind.Object && resolved.TryGetProperty("$ref", out var r); hops++)
            {
                if (hops > 8 || r.ValueKind != JsonValueKind.String || Resolve(root, r.GetString()!) is not { } target) return null;
                resolved = target;
            }
            if (resolved.ValueKind == JsonValueKind.False) return null;
            if (resolved.ValueKind != JsonValueKind.Object) continue; // true, or not a schema: no rule
            sources.Add(resolved);
        }
        HashSet<string>? allowedKeys = null;
        for (int i = 0; i < sources.Count; i++)
            foreach (var keyword in sources[i].EnumerateObject())
            {
                var source = sources[i];
                var value = keyword.Value;
                var existing = merged[keyword.Name];
                switch (keyword.Name)
                {
                    case "allOf" when i == 0: // the parts themselves
                    case "$defs" or "definitions" or "description" or "title" or "examples" or "default" or "$schema" or "$id" or "$comment":
                        break;
                    case "type":
                    {
                        var names = value.ValueKind == JsonValueKind.Array ? value.EnumerateArray().Select(v => v.ToString()).ToHashSet() : [value.ToString()];
                        if (names.Contains("number")) names.Add("integer");
                        if (existing is JsonArray before)
                        {
                            var kept = before.Select(v => v!.ToString()).Where(n => names.Contains(n) || n == "number" && names.Contains("integer")).ToList();
                            // "number" meeting "integer" alone is "integer".
                            if (kept.Contains("number") && !names.Contains("number")) kept[kept.IndexOf("number")] = "integer";
                            merged["type"] = new JsonArray([.. kept.Distinct().Select(n => (JsonNode)n)]);
                        }
                        else merged["type"] = new JsonArray([.. names.Where(n => !(n == "integer" && names.Contains("number"))).Select(n => (JsonNode)n)]);
                        break;
                    }
                    case "properties" when value.ValueKind == JsonValueKind.Object:
                    {
                        var properties = existing as JsonObject ?? [];
                        foreach (var property in value.EnumerateObject())
                            properties[property.Name] = properties[property.Name] is { } other
                                ? new JsonObject { ["allOf"] = new JsonArray(other.DeepClone(), JsonNode.Parse(property.Value.GetRawText())) }
                                : JsonNode.Parse(property.Value.GetRawText());
                        merged["properties"] = properties;
                        break;
                    }
                    case "required" when value.ValueKind == JsonValueKind.Array:
                    {
                        var names = (existing as JsonArray)?.Select(v => v!.ToString()).ToList() ?? [];
                        names.AddRange(value.EnumerateArray().Select(v => v.ToString()));
                        merged["required"] = new JsonArray([.. names.Distinct().Select(n => (JsonNode)n)]);
                        break;
                    }
                    case "additionalProperties" when value.ValueKind == JsonValueKind.False:
                    {
                        var declared = source.TryGetProperty("properties", out var p) && p.ValueKind == JsonValueKind.Object
                            ? p.EnumerateObject().Select(x => x.Name).ToHashSet() : [];
                        allowedKeys = allowedKeys is null ? declared : [.. allowedKeys.Intersect(declared)];
                        break;
                    }
                    case "additionalProperties" when value.ValueKind == JsonValueKind.True:
                        break;
                    case "minimum" or "exclusiveMinimum" or "minLength" or "minItems" or "minProperties"
                        when value.ValueKind == JsonValueKind.Number:
                        if (existing is null || Tighter(value, existing, larger: true)) merged[keyword.Name] = JsonNode.Parse(value.GetRawText());
                        break;
                    case "maximum" or "exclusiveMaximum" or "maxLength" or "maxItems" or "maxProperties"
                        when value.ValueKind == JsonValueKind.Number:
                        if (existing is null || Tighter(value, existing, larger: false)) merged[keyword.Name] = JsonNode.Parse(value.GetRawText());
                        break;
                    case "enum" when value.ValueKind == JsonValueKind.Array:
                    {
                        var values = value.EnumerateArray().Select(v => JsonNode.Parse(v.GetRawText())).ToList();
                        if (existing is JsonArray before) values = [.. before.Where(b => values.Any(v => JsonNode.DeepEquals(v, b))).Select(b => b!.DeepClone())];
                        merged["enum"] = new JsonArray([.. values]);
                        break;
                    }
                    case "dependentRequired" when value.ValueKind == JsonValueKind.Object:
                    {
                        // Each key's dependents joined.
                        var joined = existing as JsonObject ?? [];
                        foreach (var entry in value.EnumerateObject().Where(e => e.Value.ValueKind == JsonValueKind.Array))
                        {
                            var names = (joined[entry.Name] as JsonArray)?.Select(v => v!.ToString()).ToList() ?? [];
                            names.AddRange(entry.Value.EnumerateArray().Select(v => v.ToString()));
                            joined[entry.Name] = new JsonArray([.. names.Distinct().Select(n => (JsonNode)n)]);
                        }
                        merged["dependentRequired"] = joined;
                        break;
                    }
                    case "items":
                        merged["items"] = existing is null ? JsonNode.Parse(value.GetRawText())
                            : new JsonObject { ["allOf"] = new JsonArray(existing.DeepClone(), JsonNode.Parse(value.GetRawText())) };
                        break;
                    default:
                        // The rest (const, pattern, format, multipleOf, branches, additionalProperties schemas, …): one part
                        // may set it; two different settings cannot be joined here.
                        if (existing is not null && !JsonNode.DeepEquals(existing, JsonNode.Parse(value.GetRawText()))) return null;
                        merged[keyword.Name] = JsonNode.Parse(value.GetRawText());
                        break;
                }
            }
        if (allowedKeys is not null)
        {
            merged["additionalProperties"] = false;
            if (merged["properties"] is JsonObject properties)
                foreach (var name in properties.Select(p => p.Key).Where(n => !allowedKeys.Contains(n)).ToList()) properties.Remove(name);
            else merged["properties"] = new JsonObject();
            if (merged["required"] is JsonArray required && required.Any(r => !allowedKeys.Contains(r!.ToString()))) return null; // unsatisfiable
        }
        return JsonDocument.Parse(merged.ToJsonString()).RootElement;
    }

    /// <summary>Whether the bound <paramref name="value"/> is tighter than <paramref name="existing"/> (larger for a
    /// lower bound, smaller for an upper one), compared as exact decimals.</summary>
    private static bool Tighter(JsonElement value, JsonNode existing, bool larger) =>
        JsonNumberBounds.Exact.Parse(value.GetRawText()) is { } a && JsonNumberBounds.Exact.Parse(existing.ToJsonString()) is { } b
        && JsonNumberBounds.Exact.Compare(a, b) is var order && (larger ? order > 0 : order < 0);

    /// <summary>
    /// Object branches told apart by a discriminator — a property every branch declares as its own string constant
    /// (<c>const</c>, or an <c>enum</c> of one; OpenAPI's <c>discriminator.propertyName</c> names it, else the first such
    /// property) — as one object schema whose first key must be the discriminator: its value picks the branch the rest
    /// of the object follows (<see cref="UnionBranches"/>). Null when the branches have no such property.
    /// </summary>
    private static JsonSchema? Discriminated(JsonElement schema, IReadOnlyList<JsonElement> branches, JsonElement root, int depth, Dictionary<string, JsonSchema> references)
    {
        var resolved = new List<JsonElement>();
        foreach (var branch in branches)
        {
            var at = branch;
            for (int hops = 0; at.ValueKind == JsonValueKind.Object && at.TryGetProperty("$ref", out var r); hops++)
            {
                if (hops > 8 || r.ValueKind != JsonValueKind.String || Resolve(root, r.GetString()!) is not { } target) return null;
                at = target;
            }
            if (at.ValueKind != JsonValueKind.Object || !at.TryGetProperty("properties", out var p) || p.ValueKind != JsonValueKind.Object) return null;
            resolved.Add(at);
        }
        static string? Constant(JsonElement branch, string name) =>
            branch.GetProperty("properties").TryGetProperty(name, out var property) && property.ValueKind == JsonValueKind.Object
                ? property.TryGetProperty("const", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString()
                : property.TryGetProperty("enum", out var e) && e.ValueKind == JsonValueKind.Array && e.GetArrayLength() == 1 && e[0].ValueKind == JsonValueKind.String ? e[0].GetString()
                : null
                : null;
        var named = schema.TryGetProperty("discriminator", out var d) && d.ValueKind == JsonValueKind.Object && d.TryGetProperty("propertyName", out var n)
            && n.ValueKind == JsonValueKind.String ? n.GetString() : null;
        var candidates = named is not null ? [named] : resolved[0].GetProperty("properties").EnumerateObject().Select(x => x.Name).ToList();
        foreach (var name in candidates)
        {
            var values = resolved.Select(b => Constant(b, name)).ToList();
            if (values.Any(v => v is null) || values.Distinct().Count() != values.Count) continue;
            var compiled = branches.Select(b => Compile(b, root, depth + 1, references)).ToArray();
            var key = AsKey(name);
            return new JsonSchema
            {
                Allowed = Kinds.Object, Keys = [key], Required = 1, OtherKeys = false,
                KeySchemas = [new JsonSchema { Values = [.. values.Select(v => JsonSerializer.Serialize(v, Compact))] }],
                UnionBranches = compiled,
            };
        }
        return null;
    }

    /// <summary>A discriminated union's branches, in the order of its discriminator's values (<see cref="Discriminated"/>);
    /// null for any other schema.</summary>
    internal JsonSchema[]? UnionBranches { get; private set; }

    /// <summary>A string's length bounds, pattern and format.</summary>
    private void StringRules(JsonElement schema)
    {
        MinLength = Count(schema, "minLength", 0);
        MaxLength = Count(schema, "maxLength", int.MaxValue);
        if (schema.TryGetProperty("pattern", out var pattern) && pattern.ValueKind == JsonValueKind.String && pattern.GetString()!.Length <= MaxPattern)
            Pattern = JsonPattern.TryCompile(pattern.GetString()!);
        if (Pattern is null && schema.TryGetProperty("format", out var format) && format.ValueKind == JsonValueKind.String
            && JsonPattern.ForFormat(format.GetString()!) is { } formatPattern)
        {
            Pattern = formatPattern;
            // Host names are at most 253 characters, addresses 254.
            if (format.GetString() is "hostname" or "email") MaxLength = Math.Min(MaxLength, format.GetString() == "email" ? 254 : 253);
        }
    }

    /// <summary>Characters of a <c>pattern</c> at most (a longer one is left free).</summary>
    public const int MaxPattern = 1000;

    /// <summary>A non-negative integer keyword, or <paramref name="otherwise"/> when absent or not one.</summary>
    private static int Count(JsonElement schema, string name, int otherwise) =>
        schema.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long n) && n >= 0
            ? (int)Math.Min(n, int.MaxValue)
            : otherwise;

    /// <summary>The characters a value of <paramref name="schema"/> may begin with (read from the schema's JSON, so a
    /// reference not yet compiled answers too): an object '{', an array '[', a string '"', a boolean 't'/'f', null 'n',
    /// a number '-' or a digit; an enum's values' first characters.</summary>
    private static string Starts(JsonElement schema, JsonElement root, int depth)
    {
        const string Everything = "{[\"tfn-0123456789";
        if (schema.ValueKind != JsonValueKind.Object || depth > JsonConstraint.MaxDepth) return Everything;
        if (schema.TryGetProperty("$ref", out var reference))
            return reference.ValueKind == JsonValueKind.String && Resolve(root, reference.GetString()!) is { } target ? Starts(target, root, depth + 1) : Everything;
        if (schema.TryGetProperty("allOf", out var all) && all.ValueKind == JsonValueKind.Array && all.GetArrayLength() == 1)
            return Starts(all[0], root, depth + 1);
        if (schema.TryGetProperty("const", out var constant)) return JsonSerializer.Serialize(constant, Compact)[..1];
        if (schema.TryGetProperty("enum", out var values) && values.ValueKind == JsonValueKind.Array && values.GetArrayLength() is > 0 and <= MaxKeys)
            return new string([.. values.EnumerateArray().Select(v => JsonSerializer.Serialize(v, Compact)[0]).Distinct()]);
        var kinds = TypeKinds(schema);
        if (kinds is null)
            foreach (var name in (string[])["anyOf", "oneOf"])
                if (schema.TryGetProperty(name, out var branches) && branches.ValueKind == JsonValueKind.Array && branches.GetArrayLength() > 0)
                    return new string([.. branches.EnumerateArray().SelectMany(b => Starts(b, root, depth + 1)).Distinct()]);
        kinds ??= ImpliedKinds(schema);
        var starts = new System.Text.StringBuilder();
        if (kinds.Value.HasFlag(Kinds.Object)) starts.Append('{');
        if (kinds.Value.HasFlag(Kinds.Array)) starts.Append('[');
        if (kinds.Value.HasFlag(Kinds.String)) starts.Append('"');
        if (kinds.Value.HasFlag(Kinds.Boolean)) starts.Append("tf");
        if (kinds.Value.HasFlag(Kinds.Null)) starts.Append('n');
        if ((kinds.Value & (Kinds.Number | Kinds.Integer)) != 0) starts.Append("-0123456789");
        return starts.ToString();
    }

    /// <summary>The kinds a schema without <c>type</c> allows: an object where it declares properties, an array where it
    /// describes items, anything otherwise.</summary>
    private static Kinds ImpliedKinds(JsonElement schema) =>
        schema.TryGetProperty("properties", out var p) && p.ValueKind == JsonValueKind.Object ? Kinds.Object
            : schema.TryGetProperty("items", out _) || schema.TryGetProperty("prefixItems", out _) ? Kinds.Array : Kinds.Any;

    /// <summary>The kinds whose values begin with one of <paramref name="starts"/>.</summary>
    private static Kinds KindsOf(string starts)
    {
        Kinds kinds = 0;
        foreach (char c in starts)
            kinds |= c switch
            {
                '{' => Kinds.Object,
                '[' => Kinds.Array,
                '"' => Kinds.String,
                't' or 'f' => Kinds.Boolean,
                'n' => Kinds.Null,
                _ => Kinds.Number | Kinds.Integer,
            };
        return kinds;
    }

    /// <summary>The branch a value beginning with <paramref name="c"/> follows: itself without branches, null when no
    /// branch begins so.</summary>
    internal JsonSchema? Pick(char c)
    {
        if (Branches is null) return this;
        for (int i = 0; i < Branches.Length; i++)
            if (BranchStarts[i].Contains(c)) return Branches[i].Pick(c);
        return null;
    }

    /// <summary>A name as <see cref="Keys"/> holds it: as JSON writes it inside its quotes, with its closing quote.</summary>
    private static string AsKey(string? name) => JsonSerializer.Serialize(name, Compact)[1..];

    /// <summary>Each declared key's dependent keys (<c>dependentRequired</c>, or <c>dependencies</c> entries that are
    /// lists of names) as bits of <paramref name="keys"/>; names not declared cannot be tracked and are left out.</summary>
    private static UInt128[] DependenciesOf(JsonElement schema, List<string> keys)
    {
        var dependencies = new UInt128[keys.Count];
        bool any = false;
        foreach (var keyword in new[] { "dependentRequired", "dependencies" })
            if (schema.TryGetProperty(keyword, out var map) && map.ValueKind == JsonValueKind.Object)
                foreach (var entry in map.EnumerateObject())
                    if (entry.Value.ValueKind == JsonValueKind.Array && keys.IndexOf(AsKey(entry.Name)) is >= 0 and var i)
                        foreach (var name in entry.Value.EnumerateArray())
                            if (name.ValueKind == JsonValueKind.String && keys.IndexOf(AsKey(name.GetString())) is >= 0 and var j)
                            {
                                dependencies[i] |= UInt128.One << j;
                                any = true;
                            }
        return any ? dependencies : [];
    }

    /// <summary><c>propertyNames</c> as an enum (pydantic's <c>dict[Literal[…], V]</c>, <c>dict[SomeEnum, V]</c>): the
    /// object's keys are those names (as <see cref="Keys"/> holds them), each at most once; declared keys among them keep
    /// their schemas (and whether they are required), the others take <c>additionalProperties</c>'.</summary>
    private void OnlyKeys(IReadOnlyList<string> names)
    {
        var keys = new List<string>();
        var schemas = new List<JsonSchema>();
        UInt128 required = 0;
        var moved = new int[Keys.Length]; // each declared key's new place, or −1
        for (int i = 0; i < Keys.Length; i++)
        {
            moved[i] = -1;
            if (names.Contains(Keys[i]))
            {
                if ((Required & (UInt128.One << i)) != 0) required |= UInt128.One << keys.Count;
                moved[i] = keys.Count;
                keys.Add(Keys[i]);
                schemas.Add(KeySchemas[i]);
            }
        }
        if (Dependencies.Length > 0)
        {
            var dependencies = new UInt128[Math.Min(MaxKeys, keys.Count + names.Count)];
            for (int i = 0; i < Dependencies.Length; i++)
                for (int j = 0; j < Dependencies.Length && moved[i] >= 0; j++)
                    if ((Dependencies[i] & (UInt128.One << j)) != 0 && moved[j] >= 0) dependencies[moved[i]] |= UInt128.One << moved[j];
            Dependencies = dependencies;
        }
        foreach (var name in names)
            if (!keys.Contains(name) && keys.Count < MaxKeys)
            {
                keys.Add(name);
                schemas.Add(OtherValues ?? Any);
            }
        (Keys, KeySchemas, Required, OtherKeys, OtherValues) = ([.. keys], [.. schemas], required, false, null);
    }

    /// <summary>Takes <paramref name="other"/>'s rules (a reference's node, filled once its target is compiled).</summary>
    private void Become(JsonSchema other)
    {
        (Allowed, Values, Keys, KeySchemas, Required, OtherKeys, Items) = (other.Allowed, other.Values, other.Keys, other.KeySchemas, other.Required, other.OtherKeys, other.Items);
        (MinLength, MaxLength, Pattern, Bounds) = (other.MinLength, other.MaxLength, other.Pattern, other.Bounds);
        (MinItems, MaxItems, MinProperties, MaxProperties, Branches, BranchStarts, OtherValues, PrefixItems) =
            (other.MinItems, other.MaxItems, other.MinProperties, other.MaxProperties, other.Branches, other.BranchStarts, other.OtherValues, other.PrefixItems);
        (UnionBranches, UniqueItems, KeyNames, Dependencies, PatternKeys, KeysByPattern) =
            (other.UnionBranches, other.UniqueItems, other.KeyNames, other.Dependencies, other.PatternKeys, other.KeysByPattern);
    }

    /// <summary>The schema a local JSON pointer (<c>#/$defs/Name</c>) points to in <paramref name="root"/>, or null.</summary>
    private static JsonElement? Resolve(JsonElement root, string pointer)
    {
        if (pointer == "#") return root;
        if (!pointer.StartsWith("#/", StringComparison.Ordinal)) return null;
        var at = root;
        foreach (var raw in pointer[2..].Split('/'))
        {
            var name = Uri.UnescapeDataString(raw).Replace("~1", "/").Replace("~0", "~");
            if (at.ValueKind != JsonValueKind.Object || !at.TryGetProperty(name, out at)) return null;
        }
        return at;
    }

    /// <summary>The kinds <c>type</c> names (a name or a list), or null without a usable <c>type</c>.</summary>
    private static Kinds? TypeKinds(JsonElement schema)
    {
        if (!schema.TryGetProperty("type", out var type)) return null;
        Kinds kinds = 0;
        foreach (var name in type.ValueKind == JsonValueKind.Array ? type.EnumerateArray() : new[] { type }.AsEnumerable())
            kinds |= name.ValueKind != JsonValueKind.String ? 0 : name.GetString() switch
            {
                "object" => Kinds.Object,
                "array" => Kinds.Array,
                "string" => Kinds.String,
                "number" => Kinds.Number | Kinds.Integer,
                "integer" => Kinds.Integer,
                "boolean" => Kinds.Boolean,
                "null" => Kinds.Null,
                _ => 0,
            };
        return kinds == 0 ? null : kinds;
    }
}
