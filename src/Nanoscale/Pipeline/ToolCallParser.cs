using System.Text.Json;
using Nanoscale.Runtime;

namespace Nanoscale.Pipeline;

/// <summary>
/// Finds the function calls in a reply, in the two forms chat models are trained to write them: Hermes' and Qwen's
/// <c>&lt;tool_call&gt;{"name": …, "arguments": {…}}&lt;/tool_call&gt;</c> blocks (one or more; the text before the
/// first is the reply's content; a last block cut off before its closing tag still counts when its JSON is whole), and
/// Llama 3.x's whole reply as one JSON object <c>{"name": …, "parameters": {…}}</c> (after <c>&lt;|python_tag|&gt;</c>
/// when it writes one). Anything else is text: a reply is never turned into a call it does not spell out.
/// </summary>
internal static class ToolCallParser
{
    private const string Open = "<tool_call>", Close = "</tool_call>", PythonTag = "<|python_tag|>";

    /// <summary>The content before the calls (null when there is none) and the calls, or null when the reply has none.</summary>
    public static (string? Content, IReadOnlyList<ToolCall> Calls)? Parse(string reply)
    {
        int first = reply.IndexOf(Open, StringComparison.Ordinal);
        if (first >= 0)
        {
            var calls = new List<ToolCall>();
            for (int at = first; at >= 0; at = reply.IndexOf(Open, at, StringComparison.Ordinal))
            {
                int start = at + Open.Length;
                int end = reply.IndexOf(Close, start, StringComparison.Ordinal);
                var body = end < 0 ? reply[start..] : reply[start..end];
                if (Call(body) is not { } call) return null;
                calls.Add(call);
                if (end < 0) break;
                at = end + Close.Length;
            }
            // Leading whitespace stays (what a stream sent before the calls is exactly this content).
            var content = reply[..first].TrimEnd();
            return (content.Trim().Length > 0 ? content : null, calls);
        }
        var text = reply.Trim();
        if (text.StartsWith(PythonTag, StringComparison.Ordinal)) text = text[PythonTag.Length..].Trim();
        return text.StartsWith('{') && Call(text) is { } single ? (null, [single]) : null;
    }

    /// <summary>A JSON object with a string <c>name</c> and an object (or JSON text) under <c>arguments</c> (Hermes,
    /// Qwen) or <c>parameters</c> (Llama 3.x); none is no arguments.</summary>
    private static ToolCall? Call(string json)
    {
        try
        {
            using var document = JsonDocument.Parse(json.Trim(), new JsonDocumentOptions { MaxDepth = 64 });
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("name", out var name) || name.ValueKind != JsonValueKind.String
                || string.IsNullOrEmpty(name.GetString()))
                return null;
            string arguments = !root.TryGetProperty("arguments", out var a) && !root.TryGetProperty("parameters", out a) ? "{}"
                : a.ValueKind == JsonValueKind.Object ? a.GetRawText()
                : a.ValueKind == JsonValueKind.String ? a.GetString()!
                : "";
            return arguments.Length == 0 ? null : new ToolCall(ToolCall.NewId(), name.GetString()!, arguments);
        }
        catch (JsonException) { return null; }
    }

    /// <summary>
    /// How a reply is made to call a function (OpenAI's <c>tool_choice</c> <c>required</c> or a named function): the
    /// text the reply is made to begin with (written after the generation prompt) and the constraint on what the model
    /// writes after it — one of the offered functions' names (unless <paramref name="function"/> names it), then its
    /// arguments as a JSON object that follows the function's <c>parameters</c> schema (<see cref="JsonSchema"/>'s
    /// subset: its keys, types, enums and required keys; <c>{}</c> without parameters), then the call's closing brace.
    /// The reply is whole when the constraint is: the start and the model's text together are then one call
    /// <see cref="Parse"/> reads. <paramref name="functions"/>: the offered <c>{name, description, parameters}</c>.
    /// </summary>
    public static (string Start, ITokenConstraint Constraint) Forced(ToolCallForm form, string[] pieces, IReadOnlyList<JsonElement> functions, string? function)
    {
        string arguments = form == ToolCallForm.Hermes ? "arguments" : "parameters";
        string open = form == ToolCallForm.Hermes ? Open + "\n" : "";
        if (function is not null)
            return ($"{open}{{\"name\": {JsonSerializer.Serialize(function, AsWritten)}, \"{arguments}\": ",
                new JsonConstraint(pieces, new JsonConstraint.JsonObject(Parameters(functions.First(f => Name(f) == function))), new JsonConstraint.Literal("}")));
        // A name as JSON writes it inside its quotes, and the closing quote that ends it; the first definition of a name.
        var offered = functions.DistinctBy(Name).ToList();
        var options = offered.Select(f => JsonSerializer.Serialize(Name(f), AsWritten)[1..]).ToList();
        return ($"{open}{{\"name\": \"",
            new JsonConstraint(pieces, new JsonConstraint.OneOf(options), new JsonConstraint.Literal($", \"{arguments}\": "),
                new JsonConstraint.JsonObject { ForOption = [.. offered.Select(Parameters)] }, new JsonConstraint.Literal("}")));

        static string Name(JsonElement f) => f.GetProperty("name").GetString()!;
    }

    /// <summary>A function's arguments schema: its <c>parameters</c>, or none (no <c>parameters</c>: <c>{}</c>). A schema
    /// that does not allow an object leaves the arguments any object.</summary>
    public static JsonSchema Parameters(JsonElement function)
    {
        if (!function.TryGetProperty("parameters", out var parameters) || parameters.ValueKind == JsonValueKind.Null) return JsonSchema.EmptyObject;
        var schema = JsonSchema.From(parameters);
        return schema.AllowsObject ? schema : JsonSchema.Any;
    }

    /// <summary>Names in JSON as a model writes them: only quotes, backslashes and control characters escaped.</summary>
    private static readonly JsonSerializerOptions AsWritten = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

}

/// <summary>How a model writes a function call: Hermes' and Qwen's <c>&lt;tool_call&gt;{"name", "arguments"}</c> blocks,
/// or Llama 3.x's reply as one <c>{"name", "parameters"}</c> object.</summary>
internal enum ToolCallForm
{
    Hermes,
    LlamaJson,
}
