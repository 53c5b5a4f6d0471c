using System.Text;
using System.Text.Json;
using Nanoscale.IO;
using Nanoscale.Pipeline.Jinja;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// Turns chat messages into the prompt text a model was trained on: the model's own Jinja <c>chat_template</c>,
/// rendered by <see cref="JinjaTemplate"/> as transformers' <c>apply_chat_template</c> renders it (messages, the
/// generation prompt, <c>bos_token</c>/<c>eos_token</c>, <c>tools</c> and <c>documents</c> as none, and any
/// <c>chat_template_kwargs</c> of the request, such as Qwen3's <c>enable_thinking</c>). The template comes from a file
/// given to <see cref="FromFile"/> (<c>serve --chat-template</c>), else the folder's <c>chat_template.jinja</c>, else the
/// <c>chat_template</c> of its <c>tokenizer_config.json</c> (a string, or the list of named templates, <c>default</c>
/// taken). A model without one (llama2.c's stories) gets plain <c>role: content</c> lines and <c>assistant:</c>.
/// </summary>
internal sealed class ChatTemplate
{
    // Markers that end an assistant turn in the common template families, used as stop strings when the template has them.
    private static readonly string[] TurnEnds = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "</s>"];

    private readonly JinjaTemplate? _jinja;
    private readonly Dictionary<string, object?> _tokens;

    private ChatTemplate(string name, JinjaTemplate? jinja, Dictionary<string, object?> tokens, IReadOnlyList<string> turnEnds, bool thinks = false,
        ToolCallForm? toolForm = null, string text = "") =>
        (Name, _jinja, _tokens, TurnEndings, Thinks, ToolForm, Text) = (name, jinja, tokens, turnEnds, thinks, toolForm, text);

    /// <summary>The template's Jinja text ("" for the plain rendering).</summary>
    public string Text { get; }

    /// <summary>The template's <c>bos_token</c> and <c>eos_token</c> texts (from its tokenizer_config.json), or null.</summary>
    public string? TokenText(string name) => _tokens.TryGetValue(name, out var value) ? value as string : null;

    /// <summary>How the template's model writes a function call: Hermes/Qwen blocks when the template names
    /// <c>&lt;tool_call&gt;</c>, else Llama 3.x's JSON object when it describes <c>tools</c> at all; null when it does
    /// not (a call cannot be forced then).</summary>
    public ToolCallForm? ToolForm { get; }

    /// <summary>Whether the template knows reasoning blocks (<c>&lt;think&gt;</c>: Qwen3, DeepSeek-R1), whose replies a
    /// server splits into reasoning and answer.</summary>
    public bool Thinks { get; }

    public static ChatTemplate Plain { get; } = new("plain", null, [], []);

    /// <summary>Where the template came from (<c>tokenizer_config.json</c>, <c>chat_template.jinja</c>, a file's
    /// path), or <c>plain</c>.</summary>
    public string Name { get; }

    /// <summary>Whether this is the plain rendering (no template): its prompt starts with the tokenizer's BOS, where a
    /// template writes any BOS it wants into the text.</summary>
    public bool IsPlain => _jinja is null;

    /// <summary>Texts that end an assistant turn in this template (stop strings besides the tokenizer's end): those of
    /// the common families that the template writes, and its <c>eos_token</c> when the template uses it.</summary>
    public IReadOnlyList<string> TurnEndings { get; }

    /// <summary>The template <paramref name="model"/> is chatted with: <paramref name="file"/> when given, else the one
    /// a GGUF file carries, else the one beside the model (<see cref="Find"/>), else <see cref="Plain"/>.</summary>
    /// <exception cref="CheckpointFormatException">The template is malformed or outside the Jinja subset.</exception>
    public static ChatTemplate For(LoadedModel model, string? file)
    {
        var folder = Directory.Exists(model.Path) ? model.Path : Path.GetDirectoryName(Path.GetFullPath(model.Path));
        if (file is not null) return FromFile(file, folder);
        return (model.Checkpoint.Container is GgufFile gguf ? FromGguf(gguf) : null) ?? Find(folder);
    }

    /// <summary>The prompt token ids of a conversation: the rendered text tokenized without BOS when a template wrote it
    /// (apply_chat_template's output is tokenized without special tokens added), with BOS in the plain rendering;
    /// <paramref name="replyStart"/> is written after the generation prompt (the reply's forced beginning).</summary>
    public int[] PromptTokens(ITokenizer tokenizer, IReadOnlyList<ChatMessage> messages,
        IReadOnlyDictionary<string, object?>? arguments = null, IReadOnlyList<object>? tools = null, string replyStart = "")
    {
        if (messages.Count == 0) throw new InvalidOptionException("messages", "at least one message is needed");
        return tokenizer.Encode(Render(messages, arguments, tools: tools) + replyStart, addBos: IsPlain && tokenizer.BosId is not null);
    }

    /// <summary><paramref name="sampling"/> with the single-token ids of <see cref="TurnEndings"/> added to its stop tokens.</summary>
    public SamplingOptions EndingTurns(ITokenizer tokenizer, SamplingOptions sampling)
    {
        foreach (var end in TurnEndings)
            if (tokenizer.Encode(end, addBos: false) is [var id] && !sampling.StopTokenIds.Contains(id))
                sampling = sampling with { StopTokenIds = [.. sampling.StopTokenIds, id] };
        return sampling;
    }

    /// <summary>The template of the model in <paramref name="folder"/>, or <see cref="Plain"/>.</summary>
    /// <exception cref="CheckpointFormatException">A template file or <c>tokenizer_config.json</c> is malformed, or
    /// its template is outside the Jinja subset (the message names the line and column).</exception>
    public static ChatTemplate Find(string? folder)
    {
        if (folder is null) return Plain;
        var config = ReadConfig(folder);
        if (FindText(folder, config) is not { } found) return Plain;
        return Create(found.File, Path.GetFileName(found.File), found.Text, config.Settings);
    }

    /// <summary>The text of the template of the model in <paramref name="folder"/> and the file it is in
    /// (<c>chat_template.jinja</c>, else <c>tokenizer_config.json</c>'s <c>chat_template</c>), not parsed; null without one.</summary>
    /// <exception cref="CheckpointFormatException">The file is malformed.</exception>
    public static (string Text, string File)? FindText(string folder) => FindText(folder, ReadConfig(folder));

    private static (string Text, string File)? FindText(string folder, Config config)
    {
        var file = Path.Combine(folder, "chat_template.jinja");
        if (File.Exists(file)) return (ReadTemplate(file), file);
        return config.Template is { } text ? (text, config.Path) : null;
    }

    /// <summary>The template a GGUF file carries (<c>tokenizer.chat_template</c>, as llama.cpp reads it), with its
    /// vocabulary's BOS and EOS as <c>bos_token</c>/<c>eos_token</c>; null when it carries none.</summary>
    public static ChatTemplate? FromGguf(GgufFile gguf)
    {
        if (gguf.Metadata.FirstOrDefault(m => m.Key == GgufKey).Value is not { } text) return null;
        var settings = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
        if (gguf.Vocabulary is { } v)
        {
            if (v.Bos is int bos && bos >= 0 && bos < v.Tokens.Count && v.Tokens[bos] is string b) settings["bos_token"] = b;
            if (v.Eos is int eos && eos >= 0 && eos < v.Tokens.Count && v.Tokens[eos] is string e) settings["eos_token"] = e;
        }
        return Create(gguf.Path, $"GGUF {GgufKey}", text, settings);
    }

    /// <summary>The GGUF metadata key of a chat template (llama.cpp's).</summary>
    public const string GgufKey = "tokenizer.chat_template";

    /// <summary>A folder's <c>tokenizer_config.json</c>, read once: its values (the special tokens come from them) and
    /// its <c>chat_template</c>.</summary>
    private sealed record Config(string Path, OrderedDictionary<string, object?>? Settings, string? Template);

    private static Config ReadConfig(string? folder)
    {
        var path = folder is null ? "" : System.IO.Path.Combine(folder, "tokenizer_config.json");
        if (folder is null || !File.Exists(path) || new FileInfo(path).Length > 16 << 20) return new(path, null, null);
        using var document = JsonErrors.Parse(path, File.ReadAllBytes(path));
        return new(path, JinjaValues.FromJson(document.RootElement) as OrderedDictionary<string, object?>, TemplateOf(path, document.RootElement));
    }

    /// <summary>The Jinja template in <paramref name="file"/> — or, for a <c>.json</c> file (another model's
    /// <c>tokenizer_config.json</c>), its <c>chat_template</c> — with the special tokens of the
    /// <c>tokenizer_config.json</c> in <paramref name="modelFolder"/> when there is one (else the JSON file's own).</summary>
    public static ChatTemplate FromFile(string file, string? modelFolder)
    {
        if (!File.Exists(file)) throw new FileNotFoundException($"chat template {file} not found", file);
        var settings = ReadConfig(modelFolder).Settings;
        if (!file.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return Create(file, file, ReadTemplate(file), settings);
        if (new FileInfo(file).Length > 16 << 20) throw new CheckpointFormatException(file, null, null, "a JSON file over 16 MiB");
        using var document = JsonErrors.Parse(file, File.ReadAllBytes(file));
        var template = TemplateOf(file, document.RootElement)
            ?? throw new CheckpointFormatException(file, "chat_template", null, "this JSON file has no chat template (give a tokenizer_config.json with one, or a .jinja file)");
        return Create(file, file, template, settings ?? JinjaValues.FromJson(document.RootElement) as OrderedDictionary<string, object?>);
    }

    private static string ReadTemplate(string file)
    {
        if (new FileInfo(file).Length > 4 << 20) throw new CheckpointFormatException(file, null, null, "a chat template over 4 MiB");
        try { return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(File.ReadAllBytes(file)); }
        catch (DecoderFallbackException e) { throw new CheckpointFormatException(file, null, e.Index, "the chat template is not valid UTF-8"); }
    }

    /// <summary>The <c>chat_template</c> field: a string, or a list of <c>{name, template}</c> (the <c>default</c> one).</summary>
    private static string? TemplateOf(string file, JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("chat_template", out var t)) return null;
        switch (t.ValueKind)
        {
            case JsonValueKind.String: return t.GetString();
            case JsonValueKind.Null: return null;
            case JsonValueKind.Array:
                foreach (var entry in t.EnumerateArray())
                    if (entry.ValueKind == JsonValueKind.Object && entry.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String
                        && n.GetString() == "default" && entry.TryGetProperty("template", out var body) && body.ValueKind == JsonValueKind.String)
                        return body.GetString();
                throw new CheckpointFormatException(file, "chat_template", null, "a list of named templates without one named 'default'");
            default:
                throw new CheckpointFormatException(file, "chat_template", null, $"a string or a list of named templates expected, found {t.ValueKind}");
        }
    }

    private static ChatTemplate Create(string file, string name, string text, OrderedDictionary<string, object?>? settings)
    {
        JinjaTemplate jinja;
        try { jinja = JinjaTemplate.Parse(text); }
        catch (JinjaException e)
        {
            throw new CheckpointFormatException(file, "chat_template", null,
                $"{e.Message}: outside the Jinja subset Nanoscale renders, or malformed (serve --chat-template FILE takes another)");
        }
        var tokens = new Dictionary<string, object?>();
        foreach (var key in (string[])["bos_token", "eos_token", "unk_token", "pad_token"])
            if (settings is not null && settings.TryGetValue(key, out var value))
                tokens[key] = value is OrderedDictionary<string, object?> added && added.TryGetValue("content", out var content) ? content : value;
        var ends = TurnEnds.Where(e => text.Contains(e, StringComparison.Ordinal)).ToList();
        if (tokens.TryGetValue("eos_token", out var eos) && eos is string eosText && eosText.Length > 0 && text.Contains("eos_token", StringComparison.Ordinal)
            && !ends.Contains(eosText))
            ends.Add(eosText);
        ToolCallForm? form = text.Contains("[TOOL_CALLS]", StringComparison.Ordinal) ? ToolCallForm.Mistral
            : text.Contains("<|tool_call|>", StringComparison.Ordinal) ? ToolCallForm.Phi
            : text.Contains("<tool_call>", StringComparison.Ordinal) ? ToolCallForm.Hermes
            : text.Contains("tools", StringComparison.Ordinal) ? ToolCallForm.LlamaJson : null;
        return new ChatTemplate(name, jinja, tokens, ends, text.Contains(ThinkOpen, StringComparison.Ordinal), form, text);
    }

    /// <summary>A message as Hugging Face templates read it: role and content; an assistant's <c>tool_calls</c> as
    /// <c>[{id, type: "function", function: {name, arguments}}]</c> with the arguments parsed from their JSON text
    /// (templates write them with <c>tojson</c>; text that is not JSON stays a string); a tool message's <c>tool_call_id</c>.</summary>
    private static object? Message(ChatMessage m) => Message(m, argumentsAsText: false);

    /// <summary><see cref="Message(ChatMessage)"/>, the calls' arguments left as their JSON text with
    /// <paramref name="argumentsAsText"/> (for templates that concatenate them as strings, <see cref="Render"/>).</summary>
    private static object? Message(ChatMessage m, bool argumentsAsText)
    {
        var message = new OrderedDictionary<string, object?>(StringComparer.Ordinal) { ["role"] = m.Role, ["content"] = m.Content };
        if (m.ToolCalls is { Count: > 0 } calls)
            message["tool_calls"] = calls.Select(c => (object?)new OrderedDictionary<string, object?>(StringComparer.Ordinal)
            {
                ["id"] = c.Id,
                ["type"] = "function",
                ["function"] = new OrderedDictionary<string, object?>(StringComparer.Ordinal)
                {
                    ["name"] = c.Name, ["arguments"] = argumentsAsText ? c.Arguments : ParsedArguments(c.Arguments),
                },
            }).ToList();
        if (m.ToolCallId is { } id) message["tool_call_id"] = id;
        return message;
    }

    private static object? ParsedArguments(string arguments)
    {
        try
        {
            using var document = JsonDocument.Parse(arguments);
            return JinjaValues.FromJson(document.RootElement);
        }
        catch (JsonException) { return arguments; }
    }

    /// <summary>Whether the prompt for <paramref name="messages"/> leaves the reply inside a reasoning block: what the
    /// generation prompt adds (the text with <c>add_generation_prompt</c> beyond the text without it) opens
    /// <c>&lt;think&gt;</c> and does not close it, as DeepSeek-R1's template and Qwen3's thinking variants do. Then the
    /// reply is reasoning up to its <c>&lt;/think&gt;</c>. <paramref name="rendered"/>: the prompt, when already rendered.</summary>
    public bool OpensReasoning(IReadOnlyList<ChatMessage> messages, IReadOnlyDictionary<string, object?>? arguments = null,
        IReadOnlyList<object>? tools = null, string? rendered = null)
    {
        if (!Thinks || _jinja is null || messages.Count == 0) return false;
        rendered ??= Render(messages, arguments, tools: tools);
        var tail = rendered;
        var without = new Dictionary<string, object?>();
        if (arguments is not null) foreach (var (key, value) in arguments) without[key] = value;
        without["add_generation_prompt"] = false;
        // A template that refuses the conversation without a generation prompt leaves the whole text to decide.
        try { if (Render(messages, without, tools: tools) is var plain && rendered.StartsWith(plain, StringComparison.Ordinal)) tail = rendered[plain.Length..]; }
        catch (InvalidOptionException) { }
        return tail.LastIndexOf(ThinkOpen, StringComparison.Ordinal) > tail.LastIndexOf(ThinkClose, StringComparison.Ordinal);
    }

    /// <summary>The tags of a reasoning block (Qwen3's, DeepSeek-R1's).</summary>
    public const string ThinkOpen = "<think>", ThinkClose = "</think>";

    /// <summary>The prompt for <paramref name="messages"/> (role, content), ending where the assistant's reply begins;
    /// <paramref name="arguments"/> are extra template variables (a request's <c>chat_template_kwargs</c>).</summary>
    /// <exception cref="InvalidOptionException">The template refused the conversation (its <c>raise_exception</c>, e.g.
    /// roles that do not alternate) or failed on it.</exception>
    public string Render(IReadOnlyList<ChatMessage> messages, IReadOnlyDictionary<string, object?>? arguments = null,
        Func<DateTime>? now = null, IReadOnlyList<object>? tools = null)
    {
        if (_jinja is null)
        {
            if (tools is { Count: > 0 }) throw new InvalidOptionException("tools", "the model has no chat template to describe tools with");
            var text = new StringBuilder();
            foreach (var m in messages) text.Append(m.Role).Append(": ").Append(m.Content).Append('\n');
            return text.Append("assistant:").ToString();
        }
        var variables = new Dictionary<string, object?>(_tokens)
        {
            ["tools"] = null,
            ["documents"] = null,
            ["add_generation_prompt"] = true,
        };
        if (tools is { Count: > 0 })
        {
            try { variables["tools"] = tools.Select(t => JinjaValues.FromClr(t)).ToList(); }
            catch (JinjaException e) { throw new InvalidOptionException("tools", e.Reason); }
        }
        if (arguments is not null)
            foreach (var (key, value) in arguments)
                if (key != "messages")
                {
                    try { variables[key] = JinjaValues.FromClr(value); }
                    catch (JinjaException e) { throw new InvalidOptionException("chat_template_kwargs", $"'{key}': {e.Reason}"); }
                }
        bool calls = messages.Any(m => m.ToolCalls is { Count: > 0 });
        variables["messages"] = messages.Select(m => Message(m, calls && _argumentsAsText)).ToList();
        try { return _jinja.Render(variables, now); }
        catch (JinjaException e) when (e.Raised) { throw new InvalidOptionException("messages", $"the model's chat template refused them: {e.Reason}"); }
        catch (JinjaException e) when (calls && !_argumentsAsText)
        {
            // Some templates write a call's arguments by string concatenation (DeepSeek-R1's distills: '```json\n' +
            // arguments), which parsed arguments fail; such a template gets them as their JSON text from now on, as
            // llama.cpp's template engine finds out by trying.
            variables["messages"] = messages.Select(m => Message(m, argumentsAsText: true)).ToList();
            try
            {
                var text = _jinja.Render(variables, now);
                _argumentsAsText = true;
                return text;
            }
            catch (JinjaException) { throw new InvalidOptionException("messages", $"the model's chat template ({Name}) failed on them: {e.Message}"); }
        }
        catch (JinjaException e) { throw new InvalidOptionException("messages", $"the model's chat template ({Name}) failed on them: {e.Message}"); }
    }

    /// <summary>Whether this template takes calls' arguments as their JSON text (it failed on them parsed and rendered
    /// them as text; <see cref="Render"/>).</summary>
    private volatile bool _argumentsAsText;
}
