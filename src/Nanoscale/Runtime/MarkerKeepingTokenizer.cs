namespace Nanoscale.Runtime;

/// <summary>
/// A tokenizer whose decoding keeps the text of a few special tokens that <see cref="ITokenizer.Decode"/> drops — a
/// reply's tool-call markers, such as Mistral's <c>[TOOL_CALLS]</c>, so the calls can be read from the text, as vLLM's
/// and llama.cpp's parsers keep them. The ids between them are decoded as runs by the inner tokenizer; everything else
/// is the inner tokenizer's.
/// </summary>
internal sealed class MarkerKeepingTokenizer : ITokenizer
{
    private readonly ITokenizer _inner;
    private readonly Dictionary<int, string> _kept;

    private MarkerKeepingTokenizer(ITokenizer inner, Dictionary<int, string> kept) => (_inner, _kept) = (inner, kept);

    /// <summary><paramref name="tokenizer"/> keeping those of <paramref name="markers"/> that it holds as one special
    /// token (one id, decoded to nothing); the tokenizer itself when it holds none so.</summary>
    public static ITokenizer For(ITokenizer tokenizer, IEnumerable<string> markers)
    {
        var kept = new Dictionary<int, string>();
        foreach (var marker in markers)
            if (tokenizer.Encode(marker, addBos: false) is [int id] && tokenizer.Decode([id]).Length == 0)
                kept[id] = marker;
        return kept.Count == 0 ? tokenizer : new MarkerKeepingTokenizer(tokenizer, kept);
    }

    /// <summary>The special tokens kept, by id.</summary>
    public IReadOnlyDictionary<int, string> Kept => _kept;

    public int VocabSize => _inner.VocabSize;

    public int? BosId => _inner.BosId;

    public int? EosId => _inner.EosId;

    public int[] Encode(string text, bool addBos) => _inner.Encode(text, addBos);

    public string Decode(ReadOnlySpan<int> ids)
    {
        int first = -1;
        for (int i = 0; i < ids.Length && first < 0; i++)
            if (_kept.ContainsKey(ids[i])) first = i;
        if (first < 0) return _inner.Decode(ids);
        var text = new System.Text.StringBuilder();
        int run = 0;
        for (int i = first; i < ids.Length; i++)
            if (_kept.TryGetValue(ids[i], out var marker))
            {
                if (i > run) text.Append(_inner.Decode(ids[run..i]));
                text.Append(marker);
                run = i + 1;
            }
        if (run < ids.Length) text.Append(_inner.Decode(ids[run..]));
        return text.ToString();
    }
}
