using System.Security.Cryptography;
using System.Text.Json;

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
            return arguments.Length == 0 ? null : new ToolCall(NewId(), name.GetString()!, arguments);
        }
        catch (JsonException) { return null; }
    }

    /// <summary>An id for a call, as OpenAI's look: <c>call_</c> and 24 random hex digits.</summary>
    public static string NewId() => "call_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12));
}
