namespace Nanoscale.Runtime;

/// <summary>
/// A constraint that holds only after a marker: the text is free until it contains <paramref name="marker"/> (a
/// reasoning block's close, <c>&lt;/think&gt;</c>), and <paramref name="inner"/> holds what follows it — so a thinking
/// model whose reply begins inside its reasoning block (the chat template opened it) reasons freely and answers in the
/// shape asked for, where holding the whole reply made it write the answer inside the block (llama.cpp's lazy grammar
/// triggered by a word does the same). The text may end before the marker (as an unconstrained reply may); a token
/// whose text completes the marker is allowed when the rest of its text fits the inner constraint.
/// </summary>
internal sealed class AfterText(JsonConstraint inner, string[] pieces, string marker) : ITokenConstraint
{
    private string _tail = ""; // the text's last characters before the marker was met (fewer than the marker's)
    private bool _met;

    /// <summary>A reply's constraint when the reply begins inside a reasoning block (<paramref name="inReasoning"/>): a
    /// shape (<see cref="JsonConstraint"/>) held from the block's close <paramref name="close"/> on; otherwise as it is.</summary>
    public static ITokenConstraint? ForReply(ITokenConstraint? constraint, bool inReasoning, ITokenizer tokenizer, string close) =>
        constraint is JsonConstraint shape && inReasoning ? new AfterText(shape, TokenPieces.For(tokenizer), close) : constraint;

    /// <summary>Whether the marker has been written (the inner constraint holds from there).</summary>
    public bool Met => _met;

    public bool Allows(int id)
    {
        if (_met) return inner.Allows(id);
        if ((uint)id >= (uint)pieces.Length) return false;
        return Rest(pieces[id]) is not { } rest || rest.Length == 0 || inner.AllowsText(rest);
    }

    /// <summary>The text after the marker when <paramref name="piece"/> completes it, else null.</summary>
    private string? Rest(string piece)
    {
        if (piece.Length == 0 || piece.IndexOf(marker[^1]) < 0) return null; // it cannot end the marker
        var text = _tail + piece;
        int at = text.IndexOf(marker, StringComparison.Ordinal);
        return at < 0 ? null : text[(at + marker.Length)..];
    }

    public int Mask(Span<float> logits)
    {
        if (_met) return inner.Mask(logits);
        int allowed = 0;
        for (int id = 0; id < logits.Length; id++)
            if (Allows(id)) allowed++;
            else logits[id] = float.NegativeInfinity;
        return allowed;
    }

    public void Accept(int id)
    {
        if (_met)
        {
            inner.Accept(id);
            return;
        }
        if (!Allows(id)) throw new ArgumentException($"token {id} does not fit the constrained text here", nameof(id));
        var text = _tail + pieces[id];
        int at = text.IndexOf(marker, StringComparison.Ordinal);
        if (at < 0)
        {
            _tail = text.Length < marker.Length ? text : text[^(marker.Length - 1)..];
            return;
        }
        _met = true;
        if (text.Length > at + marker.Length) inner.AcceptText(text[(at + marker.Length)..]);
    }

    public bool Complete => _met && inner.Complete;

    public bool MayEnd => !_met || inner.MayEnd;
}
