using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// A constraint that holds only after a marker (<see cref="AfterText"/>: a thinking model's reply held to a shape from
/// its reasoning block's close on): free before it, the inner shape after it — also within the token that completes
/// the marker — and the text may end before the marker but not inside an unfinished shape.
/// </summary>
public class AfterTextTests
{
    [Fact]
    public void TheShapeHoldsFromTheMarkerOn()
    {
        string[] pieces = ["ab", "</th", "ink>", "ink>{", "ink>x", "{", "}", "x", "", "\"a\":1"];
        var c = new AfterText(new JsonConstraint(pieces, new JsonConstraint.JsonObject()), pieces, "</think>");
        Assert.All(Enumerable.Range(0, pieces.Length), id => Assert.True(c.Allows(id), $"before the marker: {pieces[id]}"));
        Assert.True(c.MayEnd);
        c.Accept(0);
        c.Accept(1); // "</th": the marker not yet whole
        Assert.False(c.Met);
        Assert.True(c.Allows(2));  // "ink>": the marker, nothing after it
        Assert.True(c.Allows(3));  // "ink>{": the marker, then the object's start
        Assert.False(c.Allows(4)); // "ink>x": x cannot begin an object
        Assert.True(c.Allows(7));  // "x": still free
        var logits = new float[pieces.Length];
        Assert.Equal(pieces.Length - 1, c.Mask(logits));
        Assert.True(float.IsNegativeInfinity(logits[4]));
        c.Accept(3);
        Assert.True(c.Met);
        Assert.False(c.MayEnd);
        Assert.False(c.Allows(7));
        Assert.True(c.Allows(9));
        c.Accept(9);
        c.Accept(6);
        Assert.True(c.Complete);
    }

    /// <summary>Several markers, the marker included (llama.cpp's lazy grammar): the first marker the text meets starts
    /// the shape, and the shape reads the marker itself.</summary>
    [Fact]
    public void TheFirstOfSeveralMarkersStartsTheShapeItself()
    {
        string[] pieces = ["hi ", "<to", "ol>", "ol>x", "<b>", "[", "]", "1"];
        JsonConstraint Shape() => new(pieces, new JsonConstraint.Grammar("root ::= (\"<tool>\" | \"<b>\") \"[\" [0-9]* \"]\""));
        var c = new AfterText(Shape(), pieces, ["<tool>", "<b>"], includeMarker: true);
        c.Accept(0);
        c.Accept(1);
        Assert.True(c.Allows(2));
        Assert.False(c.Allows(3)); // "<tool>x": x is not "["
        c.Accept(2);
        Assert.True(c.Met);
        Assert.False(c.Allows(4));
        c.Accept(5);
        c.Accept(7);
        c.Accept(6);
        Assert.True(c.Complete);
        var other = new AfterText(Shape(), pieces, ["<tool>", "<b>"], includeMarker: true);
        other.Accept(4); // "<b>" alone is a marker, read by the shape
        Assert.True(other.Met);
        Assert.True(other.Allows(5));
    }

    /// <summary>A generation (stories260K, greedy): the text up to the marker is the model's own, the rest what the
    /// expression allows.</summary>
    [Fact]
    public void AGenerationIsFreeUntilTheMarker()
    {
        var model = LlamaModel.Load(Nanoscale.IO.CheckpointLoader.Open(SharedData.Stories260K));
        var tokenizer = Llama2cTokenizer.Load(SharedData.Tok512);
        var pieces = TokenPieces.For(tokenizer);
        int[] prompt = tokenizer.Encode("Once upon a time", addBos: true);
        var free = Generation.Generate(model, tokenizer, prompt, 30, new SamplingOptions()).Text;
        Assert.Contains(", there ", free);
        var held = new AfterText(new JsonConstraint(pieces, new JsonConstraint.Matches(" (was|is) a big dog\\.")), pieces, " there");
        var text = Generation.Generate(model, tokenizer, prompt, 30, new SamplingOptions(), constraint: held).Text;
        int marker = text.IndexOf(" there", StringComparison.Ordinal);
        Assert.True(marker >= 0, text);
        Assert.Equal(free[..marker], text[..marker]);
        Assert.Matches("^ (was|is) a big dog\\.$", text[(marker + " there".Length)..]);
        Assert.True(held.Complete);
    }
}
