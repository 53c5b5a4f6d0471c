using System.Buffers.Binary;
using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

public class Llama2cTokenizerTests
{
    private static readonly Lazy<Llama2cTokenizer> Tok512 = new(() => Llama2cTokenizer.Load(SharedData.Tok512, vocabSize: 512));

    [Fact]
    public void LoadsTok512()
    {
        var tok = Tok512.Value;
        Assert.Equal(512, tok.VocabSize);
        Assert.Equal(7, tok.MaxTokenLength);
        Assert.Equal("<0x0A>", System.Text.Encoding.ASCII.GetString(tok.Piece(13)));
        Assert.Equal(410, tok.SpaceId);
        Assert.Equal(1, tok.BosId);
        Assert.Equal(2, tok.EosId);
    }

    [Theory]
    [InlineData("Once upon a time, there was a little girl named Lily.")]
    [InlineData("He said, “Wow, that is a really amazing vase! Can I buy it?”\nThe end.")]
    [InlineData("naïve café 🙂 日本")]
    [InlineData("a")]
    [InlineData("  two  spaces\n\nand\ttabs ")]
    public void RoundTripsThroughDecode(string text)
    {
        var tok = Tok512.Value;
        int[] ids = tok.Encode(text, addBos: true);
        Assert.Equal(1, ids[0]);
        Assert.Equal(text, tok.Decode(ids));
    }

    [Fact]
    public void MatchesTheRescanningReferenceOnRealText()
    {
        var tok = Tok512.Value;
        string text = File.ReadAllText(SharedData.TinyStoriesText);
        foreach (string doc in Perplexity.SplitDocuments(text, "<|endoftext|>").Append("naïve café 🙂 <0x41> x"))
            Assert.Equal(ReferenceLlama2cEncoder.Encode(tok, doc, bos: true), tok.Encode(doc, addBos: true));
    }

    [Fact]
    public void EncodesKnownPieces()
    {
        var tok = Tok512.Value;
        Assert.Empty(tok.Encode("", addBos: false));
        Assert.Equal([1], tok.Encode("", addBos: true));
        int[] ids = tok.Encode("a\nb", addBos: false);
        Assert.Contains(13, ids); // '\n' has no piece: byte fallback 0x0A + 3
        int[] once = tok.Encode("Once", addBos: false);
        Assert.Equal(" Once", tok.Decode(once)); // no BOS: the dummy-prefix space stays, as in llama2.c
        Assert.Equal("🙂", tok.Decode(tok.Encode("🙂", addBos: true)));
    }

    [Fact]
    public void RejectsOutOfRangeIds() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => Tok512.Value.Decode([512]));

    private static byte[] Build(int maxLength, params (float Score, byte[] Piece)[] tokens)
    {
        var bytes = new List<byte>();
        var buf = new byte[4];
        BinaryPrimitives.WriteInt32LittleEndian(buf, maxLength); bytes.AddRange(buf);
        foreach (var (score, piece) in tokens)
        {
            BinaryPrimitives.WriteSingleLittleEndian(buf, score); bytes.AddRange(buf);
            BinaryPrimitives.WriteInt32LittleEndian(buf, piece.Length); bytes.AddRange(buf);
            bytes.AddRange(piece);
        }
        return [.. bytes];
    }

    private static readonly (float, byte[])[] Minimal = [(0, "<unk>"u8.ToArray()), (0, "<s>"u8.ToArray()), (0, "</s>"u8.ToArray()), (-1, " "u8.ToArray())];

    [Fact]
    public void ParsesAMinimalFile()
    {
        var tok = Llama2cTokenizer.Parse(Build(5, Minimal), "mini.bin");
        Assert.Equal(4, tok.VocabSize);
        Assert.Equal([1, 3, 0], tok.Encode(" ", addBos: true)[..2].Append(0).ToArray()[..3]);
        Assert.Equal([3, 0], tok.Encode("x", addBos: false)); // no byte tokens in this vocabulary: <unk>
    }

    [Theory]
    [InlineData(2, "max_token_length", 0)]          // shorter than the header
    [InlineData(13, "token 0", 12)]                 // the 5-byte piece of token 0 has 1 byte
    public void RejectsTruncation(int keep, string where, long offset)
    {
        byte[] data = Build(5, Minimal)[..keep];
        var e = Assert.Throws<CheckpointFormatException>(() => Llama2cTokenizer.Parse(data, "t.bin"));
        Assert.Equal("t.bin", e.File);
        Assert.Equal(where, e.Where);
        Assert.Equal(offset, e.Offset);
    }

    [Fact]
    public void RejectsBadFields()
    {
        byte[] data = Build(5, Minimal);
        BinaryPrimitives.WriteInt32LittleEndian(data, -3);
        Assert.Equal(0, Assert.Throws<CheckpointFormatException>(() => Llama2cTokenizer.Parse(data, "t.bin")).Offset);

        data = Build(3, Minimal); // "<unk>" is 5 bytes, longer than max_token_length 3
        var e = Assert.Throws<CheckpointFormatException>(() => Llama2cTokenizer.Parse(data, "t.bin"));
        Assert.Equal("token 0 length", e.Where);
        Assert.Equal(8, e.Offset);

        data = Build(5, Minimal);
        BinaryPrimitives.WriteSingleLittleEndian(data.AsSpan(4), float.NaN);
        Assert.Equal("token 0 score", Assert.Throws<CheckpointFormatException>(() => Llama2cTokenizer.Parse(data, "t.bin")).Where);

        data = Build(5, Minimal);
        Assert.Contains("model's vocabulary has 5", Assert.Throws<CheckpointFormatException>(() => Llama2cTokenizer.Parse(data, "t.bin", vocabSize: 5)).Message);
        Assert.Contains("follow the last of 3", Assert.Throws<CheckpointFormatException>(() => Llama2cTokenizer.Parse(data, "t.bin", vocabSize: 3)).Message);
        Assert.Contains("at least", Assert.Throws<CheckpointFormatException>(() => Llama2cTokenizer.Parse(Build(5, Minimal[..2]), "t.bin")).Message);
    }
}
