using Nanoscale.Runtime;

namespace Nanoscale.Pipeline;

/// <summary>
/// Fill-in-the-middle prompts, for code completion between the text before a gap and the text after it, from the
/// fill-in-the-middle tokens a code model's tokenizer holds: Qwen2.5-Coder's and CodeGemma's
/// <c>&lt;|fim_prefix|&gt;</c> family, StarCoder's <c>&lt;fim_prefix&gt;</c> family, DeepSeek-Coder's
/// <c>&lt;｜fim▁begin｜&gt;</c> family and Code Llama's <c>&lt;PRE&gt;</c> family, in the order they were trained on
/// (prefix, suffix, middle): <c>PRE prefix SUF suffix MID start</c>, where <c>start</c> is what the middle already
/// begins with; Codestral's <c>[SUFFIX]</c>/<c>[PREFIX]</c> in its own order, suffix first and no middle marker:
/// <c>[SUFFIX] suffix [PREFIX] prefix start</c>. The tokenizer's BOS comes first where it has one, as its plain prompts
/// begin. Other files given as context go first, in the repository-level form where the tokenizer has its
/// repository and file-separator tokens (<c>REPO myproject\n</c>, then <c>SEP name\n text</c> per file and
/// <c>SEP filename\n</c> before the gap's file, as llama.cpp's <c>/infill</c> writes them), else each file's text
/// after a <c>--- name ---</c> line. The markers are their token ids; the text parts are encoded without BOS.
/// </summary>
internal sealed class FillInTheMiddle
{
    /// <summary>A family's markers: prefix, suffix, middle (none: <see cref="SuffixFirst"/>'s order), the ends of a
    /// middle, repository and file separator.</summary>
    private sealed record Family(string[] Prefix, string[] Suffix, string[] Middle, string[] Ends, string? Repository, string? FileSeparator,
        bool SuffixFirst = false);

    private static readonly Family[] Families =
    [
        new(["<|fim_prefix|>"], ["<|fim_suffix|>"], ["<|fim_middle|>"], ["<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|file_separator|>", "<|endoftext|>"],
            "<|repo_name|>", "<|file_sep|>"),
        new(["<fim_prefix>"], ["<fim_suffix>"], ["<fim_middle>"], ["<fim_pad>", "<file_sep>", "<repo_name>", "<|endoftext|>"], "<repo_name>", "<file_sep>"),
        new(["<｜fim▁begin｜>"], ["<｜fim▁hole｜>"], ["<｜fim▁end｜>"], ["<｜end▁of▁sentence｜>", "<|EOT|>"], null, null),
        new(["▁<PRE>", "<PRE>"], ["▁<SUF>", "<SUF>"], ["▁<MID>", "<MID>"], ["▁<EOT>", "<EOT>"], null, null),
        new(["[PREFIX]"], ["[SUFFIX]"], [], [], null, null, SuffixFirst: true),
    ];

    private readonly ITokenizer _tokenizer;
    private readonly int _prefix, _suffix;
    private readonly int? _middle, _repository, _fileSeparator;

    private FillInTheMiddle(ITokenizer tokenizer, int prefix, int suffix, int? middle, int? repository, int? fileSeparator, int[] ends, string name)
    {
        (_tokenizer, _prefix, _suffix, _middle, _repository, _fileSeparator) = (tokenizer, prefix, suffix, middle, repository, fileSeparator);
        EndTokens = ends;
        Name = name;
    }

    /// <summary>Why a gap cannot be filled with a tokenizer that has no such tokens.</summary>
    public const string Missing =
        "the model's tokenizer has no fill-in-the-middle tokens (<|fim_prefix|>, <fim_prefix>, <｜fim▁begin｜> or <PRE> and their suffix and middle, or [PREFIX] and [SUFFIX]), so it cannot fill a gap";

    /// <summary>The family's prefix marker, as its text (for messages).</summary>
    public string Name { get; }

    /// <summary>Tokens that end a middle besides the tokenizer's EOS (padding, file and repository separators).</summary>
    public IReadOnlyList<int> EndTokens { get; }

    /// <summary><paramref name="sampling"/> with <see cref="EndTokens"/> among its stop tokens.</summary>
    public SamplingOptions Ending(SamplingOptions sampling) => sampling with { StopTokenIds = [.. sampling.StopTokenIds.Union(EndTokens)] };

    /// <summary>The fill-in-the-middle tokens of <paramref name="tokenizer"/>, or null when it has no complete family
    /// (each marker one token).</summary>
    public static FillInTheMiddle? Of(ITokenizer tokenizer)
    {
        int? One(string[] texts) => texts.Select(t => tokenizer.Encode(t, addBos: false) is [int id] ? id : (int?)null).FirstOrDefault(id => id is not null);
        foreach (var f in Families)
            if (One(f.Prefix) is int prefix && One(f.Suffix) is int suffix && (f.SuffixFirst || One(f.Middle) is not null))
            {
                int? middle = f.SuffixFirst ? null : One(f.Middle);
                int? repository = f.Repository is { } r ? One([r]) : null, separator = f.FileSeparator is { } s ? One([s]) : null;
                int[] ends = [.. f.Ends.Select(e => One([e])).OfType<int>().Distinct()];
                return new FillInTheMiddle(tokenizer, prefix, suffix, middle, repository is not null && separator is not null ? repository : null,
                    repository is not null ? separator : null, ends, f.Prefix[0]);
            }
        return null;
    }

    /// <summary>The prompt's token ids for the gap between <paramref name="prefix"/> and <paramref name="suffix"/>,
    /// <paramref name="files"/> (name, text) first as context, the middle begun with <paramref name="start"/>.</summary>
    public int[] Prompt(string prefix, string suffix, IReadOnlyList<(string Name, string Text)>? files = null, string start = "")
    {
        var ids = new List<int>();
        if (_tokenizer.BosId is int bos) ids.Add(bos);
        void Text(string text)
        {
            if (text.Length > 0) ids.AddRange(_tokenizer.Encode(text, addBos: false));
        }
        if (files is { Count: > 0 })
        {
            if (_repository is int repository && _fileSeparator is int separator)
            {
                ids.Add(repository);
                Text("myproject\n");
                foreach (var (name, text) in files)
                {
                    ids.Add(separator);
                    Text(name + "\n" + text);
                }
                ids.Add(separator);
                Text("filename\n");
            }
            else
                foreach (var (name, text) in files) Text($"--- {name} ---\n{text}\n");
        }
        if (_middle is int middle)
        {
            ids.Add(_prefix);
            Text(prefix);
            ids.Add(_suffix);
            Text(suffix);
            ids.Add(middle);
        }
        else
        {
            // Codestral's order: the suffix, then the prefix, which the middle goes on from.
            ids.Add(_suffix);
            Text(suffix);
            ids.Add(_prefix);
            Text(prefix);
        }
        Text(start);
        return [.. ids];
    }
}
