using System.Text.Json;
using Nanoscale.Runtime;

namespace Nanoscale.Pipeline;

/// <summary>
/// Finds the function calls in a reply, in the forms chat models are trained to write them (the markers of
/// <see cref="Markers"/>; the text before the first is the reply's content; a last call cut off before its closing
/// marker still counts when it is whole):
/// <list type="bullet">
/// <item>Hermes' and Qwen's <c>&lt;tool_call&gt;{"name": …, "arguments": {…}}&lt;/tool_call&gt;</c> blocks, whose body
/// may instead be Qwen3-Coder's <c>&lt;function=NAME&gt;&lt;parameter=KEY&gt;VALUE&lt;/parameter&gt;…&lt;/function&gt;</c>
/// or GLM-4.5's <c>NAME&lt;arg_key&gt;KEY&lt;/arg_key&gt;&lt;arg_value&gt;VALUE&lt;/arg_value&gt;…</c>;</item>
/// <item>Mistral's <c>[TOOL_CALLS]</c> followed by a JSON list of <c>{"name", "arguments"}</c> objects, or by
/// <c>NAME[ARGS]{…}</c> (with <c>[CALL_ID]ID</c> before <c>[ARGS]</c> in some versions), one marker a call;</item>
/// <item>Phi-4-mini's and Granite's <c>&lt;|tool_call|&gt;</c> followed by one call object or a list of them (up to
/// <c>&lt;|/tool_call|&gt;</c> when written);</item>
/// <item>MiniMax-M2's <c>&lt;minimax:tool_call&gt;&lt;invoke name="NAME"&gt;&lt;parameter name="KEY"&gt;VALUE&lt;/parameter&gt;…&lt;/invoke&gt;…</c>;</item>
/// <item>DeepSeek's <c>&lt;｜tool▁calls▁begin｜&gt;</c> section of <c>&lt;｜tool▁call▁begin｜&gt;NAME&lt;｜tool▁sep｜&gt;{…}&lt;｜tool▁call▁end｜&gt;</c>
/// calls (V3.1), or <c>function&lt;｜tool▁sep｜&gt;NAME</c> and the arguments in a <c>```json</c> fence (V3, R1);</item>
/// <item>Kimi K2's <c>&lt;|tool_calls_section_begin|&gt;</c> section of
/// <c>&lt;|tool_call_begin|&gt;functions.NAME:0&lt;|tool_call_argument_begin|&gt;{…}&lt;|tool_call_end|&gt;</c> calls;</item>
/// <item>Command R7B's <c>&lt;|START_ACTION|&gt;</c> list of <c>{"tool_call_id", "tool_name", "parameters"}</c>;</item>
/// <item>Llama 3.x's whole reply as one JSON object <c>{"name": …, "parameters": {…}}</c> (after
/// <c>&lt;|python_tag|&gt;</c> when it writes one).</item>
/// </list>
/// The XML forms' values are text: a value is a JSON string where the function's schema (when given) types the
/// parameter a string or does not type it and the text is not JSON, else the JSON it spells. Anything else is text: a
/// reply is never turned into a call it does not spell out. Written by hand: the forms are the models' own, and what
/// vLLM and llama.cpp do is per-model parsers of the same kind.
/// </summary>
internal static class ToolCallParser
{
    private const string Open = "<tool_call>", Close = "</tool_call>", PythonTag = "<|python_tag|>";
    private const string MistralCalls = "[TOOL_CALLS]", MistralArguments = "[ARGS]", MistralCallId = "[CALL_ID]";
    private const string PhiOpen = "<|tool_call|>", PhiClose = "<|/tool_call|>";
    private const string MiniMaxOpen = "<minimax:tool_call>", MiniMaxClose = "</minimax:tool_call>";
    private const string DeepSeekCalls = "<｜tool▁calls▁begin｜>", DeepSeekCallsEnd = "<｜tool▁calls▁end｜>", DeepSeekCall = "<｜tool▁call▁begin｜>",
        DeepSeekSeparator = "<｜tool▁sep｜>", DeepSeekCallEnd = "<｜tool▁call▁end｜>";
    private const string KimiCalls = "<|tool_calls_section_begin|>", KimiCallsEnd = "<|tool_calls_section_end|>", KimiCall = "<|tool_call_begin|>",
        KimiArguments = "<|tool_call_argument_begin|>", KimiCallEnd = "<|tool_call_end|>";
    private const string CommandOpen = "<|START_ACTION|>", CommandClose = "<|END_ACTION|>";

    /// <summary>The texts that begin a reply's calls, in every form this parser reads (Llama 3.x's, a bare JSON object,
    /// apart).</summary>
    public static IReadOnlyList<string> Markers { get; } = [Open, MistralCalls, PhiOpen, MiniMaxOpen, DeepSeekCalls, KimiCalls, CommandOpen];

    /// <summary>Marker texts that some tokenizers hold as special tokens, which decoding would drop: kept in the
    /// decoded reply so the calls can be read (<see cref="Runtime.MarkerKeepingTokenizer"/>).</summary>
    public static IReadOnlyList<string> SpecialMarkers { get; } =
    [
        MistralCalls, MistralArguments, MistralCallId, PhiOpen, PhiClose, DeepSeekCalls, DeepSeekCallsEnd, DeepSeekCall, DeepSeekSeparator,
        DeepSeekCallEnd, KimiCalls, KimiCallsEnd, KimiCall, KimiArguments, KimiCallEnd, CommandOpen, CommandClose,
    ];

    /// <summary>The content before the calls (null when there is none) and the calls, or null when the reply has none.
    /// <paramref name="functions"/>: the offered <c>{name, parameters}</c>, which type the XML forms' values.</summary>
    public static (string? Content, IReadOnlyList<ToolCall> Calls)? Parse(string reply, IReadOnlyList<JsonElement>? functions = null)
    {
        int first = -1;
        string? marker = null;
        foreach (var m in Markers)
            if (reply.IndexOf(m, StringComparison.Ordinal) is var at and >= 0 && (first < 0 || at < first))
                (first, marker) = (at, m);
        if (marker is not null)
        {
            var calls = new List<ToolCall>();
            bool whole = marker switch
            {
                Open => Blocks(reply, first, Open, Close, body => Call(body) is { } json ? [json] : Xml(body, functions) is { } xml ? [xml] : null, calls),
                MistralCalls => Mistral(reply[(first + MistralCalls.Length)..], calls),
                PhiOpen => Blocks(reply, first, PhiOpen, PhiClose, Calls, calls),
                MiniMaxOpen => Blocks(reply, first, MiniMaxOpen, MiniMaxClose, body => Invokes(body, functions), calls),
                DeepSeekCalls => Blocks(reply, first, DeepSeekCalls, DeepSeekCallsEnd,
                    body => Section(body, DeepSeekCall, DeepSeekSeparator, DeepSeekCallEnd, DeepSeekName), calls),
                KimiCalls => Blocks(reply, first, KimiCalls, KimiCallsEnd, body => Section(body, KimiCall, KimiArguments, KimiCallEnd, KimiName), calls),
                _ => Blocks(reply, first, CommandOpen, CommandClose, Calls, calls),
            };
            if (!whole || calls.Count == 0) return null;
            // Leading whitespace stays (what a stream sent before the calls is exactly this content).
            var content = reply[..first].TrimEnd();
            return (content.Trim().Length > 0 ? content : null, calls);
        }
        var text = reply.Trim();
        if (text.StartsWith(PythonTag, StringComparison.Ordinal)) text = text[PythonTag.Length..].Trim();
        return text.StartsWith('{') && Call(text) is { } single ? (null, [single]) : null;
    }

    /// <summary>The blocks from <paramref name="first"/> on, each <paramref name="open"/> … <paramref name="close"/>
    /// (the last may be cut off), read by <paramref name="read"/> into <paramref name="calls"/>; false when one is not
    /// a call.</summary>
    private static bool Blocks(string reply, int first, string open, string close, Func<string, IReadOnlyList<ToolCall>?> read, List<ToolCall> calls)
    {
        for (int at = first; at >= 0; at = reply.IndexOf(open, at, StringComparison.Ordinal))
        {
            int start = at + open.Length;
            int end = reply.IndexOf(close, start, StringComparison.Ordinal);
            // Another block may follow without this one's closing marker (Granite and Phi write them so).
            int next = reply.IndexOf(open, start, StringComparison.Ordinal);
            if (next >= 0 && (end < 0 || next < end)) end = -1;
            int stop = end >= 0 ? end : next >= 0 ? next : reply.Length;
            if (read(reply[start..stop]) is not { Count: > 0 } found) return false;
            calls.AddRange(found);
            if (end < 0 && next < 0) break;
            at = end >= 0 ? end + close.Length : next;
        }
        return true;
    }

    /// <summary>Mistral's calls after <c>[TOOL_CALLS]</c>: a JSON list, or <c>NAME[ARGS]{…}</c> pieces each after its
    /// own marker.</summary>
    private static bool Mistral(string after, List<ToolCall> calls)
    {
        if (after.TrimStart().StartsWith('['))
        {
            if (Calls(after) is not { Count: > 0 } list) return false;
            calls.AddRange(list);
            return true;
        }
        foreach (var piece in after.Split(MistralCalls))
        {
            int arguments = piece.IndexOf(MistralArguments, StringComparison.Ordinal);
            if (arguments < 0) return false;
            var name = piece[..arguments];
            if (name.IndexOf(MistralCallId, StringComparison.Ordinal) is var id and >= 0) name = name[..id];
            name = name.Trim();
            var json = piece[(arguments + MistralArguments.Length)..].Trim();
            if (!IsName(name) || !IsObject(json)) return false;
            calls.Add(new ToolCall(ToolCall.NewId(), name, json));
        }
        return true;
    }

    /// <summary>A section's calls, each <paramref name="open"/> HEAD <paramref name="separator"/> TAIL
    /// <paramref name="close"/> (the last may be cut off after its arguments), HEAD and TAIL read by
    /// <paramref name="call"/> into a name and arguments.</summary>
    private static IReadOnlyList<ToolCall>? Section(string body, string open, string separator, string close, Func<string, string, (string Name, string Arguments)?> call)
    {
        var calls = new List<ToolCall>();
        foreach (var piece in body.Split(open).Skip(1))
        {
            int at = piece.IndexOf(separator, StringComparison.Ordinal);
            if (at < 0) return null;
            var tail = piece[(at + separator.Length)..];
            if (tail.IndexOf(close, StringComparison.Ordinal) is var end and >= 0) tail = tail[..end];
            if (call(piece[..at], tail) is not { } found || !IsName(found.Name) || !IsObject(found.Arguments)) return null;
            calls.Add(new ToolCall(ToolCall.NewId(), found.Name, found.Arguments));
        }
        return calls.Count > 0 ? calls : null;
    }

    /// <summary>DeepSeek V3.1's <c>NAME</c> / <c>{…}</c>, or V3's and R1's <c>function</c> / <c>NAME```json{…}```</c>.</summary>
    private static (string, string)? DeepSeekName(string head, string tail)
    {
        if (head.Trim() != "function") return (head.Trim(), tail.Trim());
        int fence = tail.IndexOf("```json", StringComparison.Ordinal);
        if (fence < 0) return null;
        int end = tail.IndexOf("```", fence + 7, StringComparison.Ordinal);
        return (tail[..fence].Trim(), (end < 0 ? tail[(fence + 7)..] : tail[(fence + 7)..end]).Trim());
    }

    /// <summary>Kimi K2's <c>functions.NAME:INDEX</c> / <c>{…}</c>.</summary>
    private static (string, string)? KimiName(string head, string tail)
    {
        var name = head.Trim();
        if (name.StartsWith("functions.", StringComparison.Ordinal)) name = name["functions.".Length..];
        if (name.LastIndexOf(':') is var colon and > 0) name = name[..colon];
        return (name, tail.Trim());
    }

    /// <summary>One call object or a JSON list of them.</summary>
    private static IReadOnlyList<ToolCall>? Calls(string json)
    {
        var text = json.Trim();
        if (!text.StartsWith('[')) return Call(text) is { } one ? [one] : null;
        try
        {
            using var document = JsonDocument.Parse(text, new JsonDocumentOptions { MaxDepth = 64 });
            var list = new List<ToolCall>();
            foreach (var item in document.RootElement.EnumerateArray())
                if (Call(item.GetRawText()) is { } call) list.Add(call);
                else return null;
            return list;
        }
        catch (JsonException) { return null; }
    }

    /// <summary>Qwen3-Coder's <c>&lt;function=NAME&gt;</c> body or GLM-4.5's <c>NAME&lt;arg_key&gt;…</c> body.</summary>
    private static ToolCall? Xml(string body, IReadOnlyList<JsonElement>? functions)
    {
        var text = body.Trim();
        var arguments = new List<(string Key, string Value)>();
        string name;
        if (text.StartsWith("<function=", StringComparison.Ordinal))
        {
            int nameEnd = text.IndexOf('>');
            if (nameEnd < 0) return null;
            name = text["<function=".Length..nameEnd].Trim();
            int at = nameEnd + 1;
            while (text.IndexOf("<parameter=", at, StringComparison.Ordinal) is var open and >= 0)
            {
                int keyEnd = text.IndexOf('>', open);
                int close = keyEnd < 0 ? -1 : text.IndexOf("</parameter>", keyEnd, StringComparison.Ordinal);
                if (close < 0) return null;
                arguments.Add((text[(open + "<parameter=".Length)..keyEnd].Trim(), OneNewline(text[(keyEnd + 1)..close])));
                at = close + "</parameter>".Length;
            }
        }
        else
        {
            int keys = text.IndexOf("<arg_key>", StringComparison.Ordinal);
            name = (keys < 0 ? text : text[..keys]).Trim();
            if (!IsName(name)) return null;
            for (int at = keys; at >= 0; at = text.IndexOf("<arg_key>", at, StringComparison.Ordinal))
            {
                int keyEnd = text.IndexOf("</arg_key>", at, StringComparison.Ordinal);
                int value = keyEnd < 0 ? -1 : text.IndexOf("<arg_value>", keyEnd, StringComparison.Ordinal);
                int valueEnd = value < 0 ? -1 : text.IndexOf("</arg_value>", value, StringComparison.Ordinal);
                if (valueEnd < 0) return null;
                arguments.Add((text[(at + "<arg_key>".Length)..keyEnd].Trim(), text[(value + "<arg_value>".Length)..valueEnd]));
                at = valueEnd + "</arg_value>".Length;
            }
        }
        return IsName(name) ? new ToolCall(ToolCall.NewId(), name, ArgumentsJson(name, arguments, functions)) : null;
    }

    /// <summary>Whether an XML form's text is a function's name: letters, digits, <c>_ . - :</c>, as API names are.</summary>
    private static bool IsName(string name) => name.Length is > 0 and <= 128 && name.All(c => char.IsLetterOrDigit(c) || c is '_' or '.' or '-' or ':');

    /// <summary>MiniMax-M2's <c>&lt;invoke name="NAME"&gt;&lt;parameter name="KEY"&gt;VALUE&lt;/parameter&gt;…&lt;/invoke&gt;</c> calls.</summary>
    private static IReadOnlyList<ToolCall>? Invokes(string body, IReadOnlyList<JsonElement>? functions)
    {
        var calls = new List<ToolCall>();
        for (int at = body.IndexOf("<invoke name=\"", StringComparison.Ordinal); at >= 0; at = body.IndexOf("<invoke name=\"", at, StringComparison.Ordinal))
        {
            int nameEnd = body.IndexOf("\">", at + 14, StringComparison.Ordinal);
            int end = nameEnd < 0 ? -1 : body.IndexOf("</invoke>", nameEnd, StringComparison.Ordinal);
            if (end < 0) return null;
            var name = body[(at + 14)..nameEnd];
            var arguments = new List<(string, string)>();
            for (int p = body.IndexOf("<parameter name=\"", nameEnd, StringComparison.Ordinal); p >= 0 && p < end;
                 p = body.IndexOf("<parameter name=\"", p, StringComparison.Ordinal))
            {
                int keyEnd = body.IndexOf("\">", p + 17, StringComparison.Ordinal);
                int close = keyEnd < 0 ? -1 : body.IndexOf("</parameter>", keyEnd, StringComparison.Ordinal);
                if (close < 0 || close > end) return null;
                arguments.Add((body[(p + 17)..keyEnd], body[(keyEnd + 2)..close]));
                p = close + "</parameter>".Length;
            }
            if (!IsName(name)) return null;
            calls.Add(new ToolCall(ToolCall.NewId(), name, ArgumentsJson(name, arguments, functions)));
            at = end + "</invoke>".Length;
        }
        return calls.Count > 0 ? calls : null;
    }

    /// <summary>A value as the XML forms write it: one newline each side dropped (Qwen3-Coder puts values on lines of
    /// their own).</summary>
    private static string OneNewline(string value)
    {
        if (value.StartsWith('\n')) value = value[1..];
        if (value.EndsWith('\n')) value = value[..^1];
        return value;
    }

    /// <summary>The arguments object of an XML form's text values: each a JSON string where the parameter is typed a
    /// string, or untyped and not JSON; else the JSON value it spells (a number, a boolean, an object…).</summary>
    private static string ArgumentsJson(string function, List<(string Key, string Value)> arguments, IReadOnlyList<JsonElement>? functions)
    {
        var offered = functions?.FirstOrDefault(f => f.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String && n.GetString() == function);
        JsonElement? properties = offered is { ValueKind: JsonValueKind.Object } o && o.TryGetProperty("parameters", out var p) && p.ValueKind == JsonValueKind.Object
            && p.TryGetProperty("properties", out var props) && props.ValueKind == JsonValueKind.Object ? props : null;
        var json = new System.Text.StringBuilder("{");
        foreach (var (key, value) in arguments)
        {
            if (json.Length > 1) json.Append(", ");
            json.Append(JsonSerializer.Serialize(key, AsWritten)).Append(": ");
            bool typedString = properties is { } ps && ps.TryGetProperty(key, out var schema) && schema.ValueKind == JsonValueKind.Object
                && schema.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String && type.GetString() == "string";
            json.Append(typedString || !IsJson(value.Trim()) ? JsonSerializer.Serialize(value, AsWritten) : value.Trim());
        }
        return json.Append('}').ToString();
    }

    private static bool IsJson(string text)
    {
        if (text.Length == 0) return false;
        try
        {
            using var _ = JsonDocument.Parse(text, new JsonDocumentOptions { MaxDepth = 64 });
            return true;
        }
        catch (JsonException) { return false; }
    }

    private static bool IsObject(string text) => IsJson(text) && text.StartsWith('{');

    /// <summary>A JSON object with a string <c>name</c> (Command R7B's <c>tool_name</c>) and an object (or JSON text)
    /// under <c>arguments</c> (Hermes, Qwen, Mistral, Phi, Granite) or <c>parameters</c> (Llama 3.x, Command R7B); none is
    /// no arguments.</summary>
    private static ToolCall? Call(string json)
    {
        try
        {
            using var document = JsonDocument.Parse(json.Trim(), new JsonDocumentOptions { MaxDepth = 64 });
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("name", out var name) && !root.TryGetProperty("tool_name", out name)
                || name.ValueKind != JsonValueKind.String || string.IsNullOrEmpty(name.GetString()))
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
        // Each form's call as its model writes it: the text before the call object, the key of its arguments, and the
        // text after the object's closing brace (a Mistral list's bracket; Hermes' and Phi's closing tags may follow
        // freely, the parser reads a call without them).
        string arguments = form == ToolCallForm.LlamaJson ? "parameters" : "arguments";
        var (open, close) = form switch
        {
            ToolCallForm.Hermes => (Open + "\n", "}"),
            ToolCallForm.Mistral => (MistralCalls + "[", "}]"),
            ToolCallForm.Phi => (PhiOpen, "}"),
            _ => ("", "}"),
        };
        if (function is not null)
            return ($"{open}{{\"name\": {JsonSerializer.Serialize(function, AsWritten)}, \"{arguments}\": ",
                new JsonConstraint(pieces, new JsonConstraint.JsonObject(Parameters(functions.First(f => Name(f) == function))), new JsonConstraint.Literal(close)));
        // A name as JSON writes it inside its quotes, and the closing quote that ends it; the first definition of a name.
        var offered = functions.DistinctBy(Name).ToList();
        var options = offered.Select(f => JsonSerializer.Serialize(Name(f), AsWritten)[1..]).ToList();
        return ($"{open}{{\"name\": \"",
            new JsonConstraint(pieces, new JsonConstraint.OneOf(options), new JsonConstraint.Literal($", \"{arguments}\": "),
                new JsonConstraint.JsonObject { ForOption = [.. offered.Select(Parameters)] }, new JsonConstraint.Literal(close)));

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

/// <summary>How a model writes a function call, as a forced call is written: Hermes' and Qwen's
/// <c>&lt;tool_call&gt;{"name", "arguments"}</c> blocks, Llama 3.x's reply as one <c>{"name", "parameters"}</c> object,
/// Mistral's <c>[TOOL_CALLS][{"name", "arguments"}]</c> list, Phi-4-mini's <c>&lt;|tool_call|&gt;{"name", "arguments"}</c>.</summary>
internal enum ToolCallForm
{
    Hermes,
    LlamaJson,
    Mistral,
    Phi,
}
