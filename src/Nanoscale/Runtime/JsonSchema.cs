using System.Text.Json;

namespace Nanoscale.Runtime;

/// <summary>
/// A JSON schema as <see cref="JsonConstraint"/> holds generated JSON to it — the subset that decides what may be
/// written next: <c>type</c> (a name or a list), <c>enum</c> and <c>const</c>, an object's <c>properties</c> (only those
/// keys, each at most once, when properties are declared and <c>additionalProperties</c> is not <c>true</c> or a schema,
/// as OpenAI's structured outputs have it; any keys otherwise), <c>required</c> (the object cannot close before them),
/// an array's <c>items</c>, <c>anyOf</c>/<c>oneOf</c> of plain types (<c>["string", "null"]</c>'s other spelling), local
/// <c>$ref</c>s (<c>#/$defs/Name</c>, as pydantic writes nested models; a recursive one is followed to the nesting bound)
/// and an <c>allOf</c> of one schema. Everything else — remote references, <c>allOf</c> of several, patterns, lengths,
/// bounds, branches with their own properties — leaves
/// the value free (any JSON of the allowed types), so a schema the subset does not cover is followed less closely, never
/// refused. A function's <c>parameters</c> absent means no arguments: <c>{}</c>.
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

    /// <summary>Whether keys beyond <see cref="Keys"/> may appear (their values free).</summary>
    internal bool OtherKeys { get; private set; } = true;

    /// <summary>An array's elements (null: any).</summary>
    internal JsonSchema? Items { get; private set; }

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
        if (schema.TryGetProperty("const", out var constant)) return new() { Values = [JsonSerializer.Serialize(constant, Compact)] };
        if (schema.TryGetProperty("enum", out var values) && values.ValueKind == JsonValueKind.Array && values.GetArrayLength() is > 0 and <= MaxKeys)
            return new() { Values = [.. values.EnumerateArray().Select(v => JsonSerializer.Serialize(v, Compact)).Distinct()] };
        var kinds = TypeKinds(schema);
        foreach (var name in (string[])["anyOf", "oneOf"])
            if (kinds is null && schema.TryGetProperty(name, out var branches) && branches.ValueKind == JsonValueKind.Array)
            {
                // Branches that are plain types (nothing else) join; any other branch leaves the value free.
                Kinds union = 0;
                foreach (var branch in branches.EnumerateArray())
                {
                    if (branch.ValueKind != JsonValueKind.Object || TypeKinds(branch) is not { } k
                        || branch.EnumerateObject().Any(p => p.Name is not ("type" or "description" or "title")))
                        return Any;
                    union |= k;
                }
                kinds = union == 0 ? null : union;
            }
        bool hasProperties = schema.TryGetProperty("properties", out var properties) && properties.ValueKind == JsonValueKind.Object;
        kinds ??= hasProperties ? Kinds.Object : schema.TryGetProperty("items", out _) ? Kinds.Array : Kinds.Any;
        if (!kinds.Value.HasFlag(Kinds.Object) && !kinds.Value.HasFlag(Kinds.Array)) return new() { Allowed = kinds.Value };

        var keys = new List<string>();
        var keySchemas = new List<JsonSchema>();
        UInt128 required = 0;
        bool otherKeys = true;
        if (hasProperties && properties.EnumerateObject().Count() <= MaxKeys)
        {
            foreach (var property in properties.EnumerateObject())
            {
                keys.Add(JsonSerializer.Serialize(property.Name, Compact)[1..]);
                keySchemas.Add(Compile(property.Value, root, depth + 1, references));
            }
            if (schema.TryGetProperty("required", out var names) && names.ValueKind == JsonValueKind.Array)
                foreach (var name in names.EnumerateArray())
                    if (name.ValueKind == JsonValueKind.String && keys.IndexOf(JsonSerializer.Serialize(name.GetString(), Compact)[1..]) is >= 0 and var i)
                        required |= UInt128.One << i;
            // Declared properties are the object's keys unless the schema says others may come too.
            otherKeys = schema.TryGetProperty("additionalProperties", out var more) && more.ValueKind is JsonValueKind.True or JsonValueKind.Object;
        }
        else if (schema.TryGetProperty("additionalProperties", out var more) && more.ValueKind == JsonValueKind.False)
            otherKeys = false;
        var items = schema.TryGetProperty("items", out var itemSchema) ? Compile(itemSchema, root, depth + 1, references) : null;
        return new() { Allowed = kinds.Value, Keys = [.. keys], KeySchemas = [.. keySchemas], Required = required, OtherKeys = otherKeys, Items = items };
    }

    /// <summary>Takes <paramref name="other"/>'s rules (a reference's node, filled once its target is compiled).</summary>
    private void Become(JsonSchema other) =>
        (Allowed, Values, Keys, KeySchemas, Required, OtherKeys, Items) = (other.Allowed, other.Values, other.Keys, other.KeySchemas, other.Required, other.OtherKeys, other.Items);

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
