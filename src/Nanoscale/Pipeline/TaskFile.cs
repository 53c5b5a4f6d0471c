using System.Text.Json;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// Reads a multiple-choice task file: JSON Lines, one item per line,
/// <c>{"context": "...", "choices": ["...", "..."], "answer": 1}</c> (blank lines skipped). Every problem names the
/// file, the line and the field.
/// </summary>
public static class TaskFile
{
    /// <summary>More items than any zero-shot suite has (HellaSwag's validation split is 10,042).</summary>
    public const int MaxItems = 1_000_000;

    /// <exception cref="InvalidOptionException">The file is missing, too large, or an item is malformed.</exception>
    public static List<ChoiceItem> Read(string path, string option = "tasks")
    {
        string text = TextInput.Read(path, option);
        var items = new List<ChoiceItem>();
        int lineNumber = 0;
        foreach (var line in text.Split('\n'))
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            string where = $"{path} line {lineNumber}";
            if (items.Count == MaxItems) throw new InvalidOptionException(option, $"{where}: more than {MaxItems} items");
            JsonDocument document;
            try { document = JsonDocument.Parse(line); }
            catch (JsonException e) { throw new InvalidOptionException(option, $"{where}: not a JSON object ({e.Message})", e); }
            using (document)
            {
                var root = document.RootElement;
                if (root.ValueKind != JsonValueKind.Object) throw new InvalidOptionException(option, $"{where}: not a JSON object");
                if (!root.TryGetProperty("context", out var context) || context.ValueKind != JsonValueKind.String)
                    throw new InvalidOptionException(option, $"{where}: \"context\" must be a string");
                if (!root.TryGetProperty("choices", out var choices) || choices.ValueKind != JsonValueKind.Array)
                    throw new InvalidOptionException(option, $"{where}: \"choices\" must be an array of strings");
                var list = new List<string>();
                foreach (var choice in choices.EnumerateArray())
                {
                    if (choice.ValueKind != JsonValueKind.String || choice.GetString()!.Length == 0)
                        throw new InvalidOptionException(option, $"{where}: choice {list.Count} must be a non-empty string");
                    list.Add(choice.GetString()!);
                }
                if (list.Count < 2) throw new InvalidOptionException(option, $"{where}: \"choices\" has {list.Count}; at least 2 are needed");
                if (!root.TryGetProperty("answer", out var answer) || answer.ValueKind != JsonValueKind.Number
                    || !answer.TryGetInt32(out int index) || index < 0 || index >= list.Count)
                    throw new InvalidOptionException(option, $"{where}: \"answer\" must be the index of a choice, 0..{list.Count - 1}");
                items.Add(new ChoiceItem(context.GetString()!, list, index));
            }
        }
        if (items.Count == 0) throw new InvalidOptionException(option, $"{path} has no items");
        return items;
    }
}
