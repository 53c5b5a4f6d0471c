using System.Text;
using System.Text.Json;
using Nanoscale.IO;

namespace Nanoscale.Pipeline;

/// <summary>
/// Turns chat messages into the prompt text a model was trained on. The <c>chat_template</c> of a
/// <c>tokenizer_config.json</c> is Jinja; rather than interpret Jinja, the template is recognised by the markers of
/// the families Nanoscale runs — Llama-3 (<c>&lt;|start_header_id|&gt;</c>) and ChatML, as Qwen2.5/Qwen3 and SmolLM2
/// use (<c>&lt;|im_start|&gt;</c>) — and rendered as those templates render a conversation with the generation prompt
/// added. A model without a template (llama2.c's stories) gets plain <c>role: content</c> lines and <c>assistant:</c>.
/// </summary>
/// <remarks>Not rendered: tool calls, Qwen's default system message (added only when the template injects one), and
/// any template logic beyond role and content. <see cref="Kind"/> says which rendering is used.</remarks>
internal sealed class ChatTemplate
{
    public enum Family { Plain, Llama3, ChatMl }

    private ChatTemplate(Family kind, string? defaultSystem) => (Kind, DefaultSystem) = (kind, defaultSystem);

    public Family Kind { get; }

    /// <summary>The system message a ChatML template inserts when the conversation has none (Qwen2.5's), or null.</summary>
    public string? DefaultSystem { get; }

    public static ChatTemplate Plain { get; } = new(Family.Plain, null);

    /// <summary>The template of the <c>tokenizer_config.json</c> in <paramref name="folder"/>, or <see cref="Plain"/>.</summary>
    /// <exception cref="CheckpointFormatException">The file is not valid JSON.</exception>
    public static ChatTemplate Find(string? folder)
    {
        var file = folder is null ? null : Path.Combine(folder, "tokenizer_config.json");
        if (file is null || !File.Exists(file) || new FileInfo(file).Length > 16 << 20) return Plain;
        string? template;
        using (var document = JsonErrors.Parse(file, File.ReadAllBytes(file)))
            template = document.RootElement.TryGetProperty("chat_template", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
        if (template is null) return Plain;
        if (template.Contains("<|start_header_id|>", StringComparison.Ordinal)) return new(Family.Llama3, null);
        if (template.Contains("<|im_start|>", StringComparison.Ordinal))
        {
            // Qwen2.5's template opens with a default system message when the conversation has none.
            // The literal system text that follows '<|im_start|>system\n' in some branch, when there is one.
            const string marker = "<|im_start|>system\\n";
            string? system = null;
            for (int at = template.IndexOf(marker, StringComparison.Ordinal); at >= 0 && system is null;
                 at = template.IndexOf(marker, at + 1, StringComparison.Ordinal))
            {
                int start = at + marker.Length, end = template.IndexOf("<|im_end|>", start, StringComparison.Ordinal);
                var candidate = end > start ? template[start..end] : "";
                if (candidate.Length > 0 && !candidate.Contains('{') && !candidate.Contains('\''))
                    system = candidate;
            }
            return new(Family.ChatMl, system);
        }
        return Plain;
    }

    /// <summary>The prompt for <paramref name="messages"/> (role, content), ending where the assistant's reply begins.</summary>
    public string Render(IReadOnlyList<(string Role, string Content)> messages)
    {
        var text = new StringBuilder();
        switch (Kind)
        {
            case Family.Llama3:
                text.Append("<|begin_of_text|>");
                foreach (var (role, content) in messages)
                    text.Append("<|start_header_id|>").Append(role).Append("<|end_header_id|>\n\n").Append(content.Trim()).Append("<|eot_id|>");
                text.Append("<|start_header_id|>assistant<|end_header_id|>\n\n");
                break;
            case Family.ChatMl:
                if (DefaultSystem is not null && (messages.Count == 0 || messages[0].Role != "system"))
                    text.Append("<|im_start|>system\n").Append(DefaultSystem).Append("<|im_end|>\n");
                foreach (var (role, content) in messages)
                    text.Append("<|im_start|>").Append(role).Append('\n').Append(content).Append("<|im_end|>\n");
                text.Append("<|im_start|>assistant\n");
                break;
            default:
                foreach (var (role, content) in messages) text.Append(role).Append(": ").Append(content).Append('\n');
                text.Append("assistant:");
                break;
        }
        return text.ToString();
    }

    /// <summary>The text that ends an assistant turn in this template (a stop string besides the tokenizer's end).</summary>
    public string? EndOfTurn => Kind switch { Family.Llama3 => "<|eot_id|>", Family.ChatMl => "<|im_end|>", _ => null };
}
