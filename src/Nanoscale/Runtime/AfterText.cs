namespace Nanoscale.Runtime;

/// <summary>
/// A constraint that holds only after a marker: the text is free until it contains one of <paramref name="markers"/>,
/// and <paramref name="inner"/> holds what follows — the marker itself too with <paramref name="includeMarker"/>. Two
/// uses: a thinking model whose reply begins inside its reasoning block (the chat template opened it) reasons freely and
/// answers in the shape asked for from <c>&lt;/think&gt;</c> on (<see cref="ForReply"/>), where holding the whole reply made
/// it write the answer inside the block; and llama.cpp's lazy grammars (<c>grammar_lazy</c> with word
/// <c>grammar_triggers</c>), where the grammar holds from the first trigger word on, the word included. The text may
/// end before a marker (as an unconstrained reply may); a token whose text completes a marker is allowed when the rest
/// of its text (from the marker, or after it) fits the inner constraint.
/// </summary>
internal sealed class AfterText(JsonConstraint inner, string[] pieces, IReadOnlyList<string> markers, bool includeMarker = false) : ITokenConstraint
{
    private readonly int _longest = markers.Count > 0 && markers.All(m => m.Length > 0) ? markers.Max(m => m.Length)
        : throw new ArgumentException("at least one marker, none empty", nameof(markers));
    private readonly char[] _lasts = [.. markers.Select(m => m[^1]).Distinct()]; // a piece must hold one to end a marker
    private string _tail = ""; // the text's last characters before a marker was met (fewer than the longest marker's)
    private bool _met;

    public AfterText(JsonConstraint inner, string[] pieces, string marker) : this(inner, pieces, [marker]) { }

    /// <summary>A reply's constraint when the reply begins inside a reasoning block (<paramref name="inReasoning"/>): a
    /// shape (<see cref="JsonConstraint"/>) held from the block's close <paramref name="close"/> on; otherwise as it is.</summary>
    public static ITokenConstraint? ForReply(ITokenConstraint? constraint, bool inReasoning, ITokenizer tokenizer, string close) =>
        constraint is JsonConstraint shape && inReasoning ? new AfterText(shape, TokenPieces.For(tokenizer), close) : constraint;

    /// <summary>Whether a marker has been written (the inner constraint holds from there).</summary>
    public bool Met => _met;

    public bool Allows(int id)
    {
        if (_met) return inner.Allows(id);
        if ((uint)id >= (uint)pieces.Length) return false;
        return Rest(pieces[id]) is not { } rest || rest.Length == 0 || inner.AllowsText(rest);
    }

    /// <summary>Where the first marker in <paramref name="text"/> begins, and its length; (−1, 0) when none.</summary>
    private (int At, int Length) Find(string text)
    {
        (int at, int length) = (-1, 0);
        foreach (var marker in markers)
            if (text.IndexOf(marker, StringComparison.Ordinal) is int i and >= 0 && (at < 0 || i < at)) (at, length) = (i, marker.Length);
        return (at, length);
    }

    /// <summary>The text the inner constraint takes when <paramref name="piece"/> completes a marker, else null.</summary>
    private string? Rest(string piece)
    {
        if (piece.Length == 0 || piece.IndexOfAny(_lasts) < 0) return null; // it cannot end a marker
        var text = _tail + piece;
        var (at, length) = Find(text);
        return at < 0 ? null : text[(includeMarker ? at : at + length)..];
    }

    public int Mask(Span<float> logits) => _met ? inner.Mask(logits) : JsonConstraint.MaskByAsking(this, logits);

    public void Accept(int id)
    {
        if (_met)
        {
            inner.Accept(id);
            return;
        }
        if (!Allows(id)) throw new ArgumentException($"token {id} does not fit the constrained text here", nameof(id));
        var text = _tail + pieces[id];
        var (at, length) = Find(text);
        if (at < 0)
        {
            _tail = text.Length < _longest ? text : text[^(_longest - 1)..];
            return;
        }
        _met = true;
        var rest = text[(includeMarker ? at : at + length)..];
        if (rest.Length > 0) inner.AcceptText(rest);
    }

    public bool Complete => _met && inner.Complete;

    public bool MayEnd => !_met || inner.MayEnd;
}
