using System.Buffers.Binary;
using Nanoscale.IO;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.IO;

public class Llama2cTests
{
    [Fact]
    public void ReadsStories260KConfigAndShapes()
    {
        using var model = Llama2cCheckpoint.Open(SharedData.Stories260K);
        var c = model.Config;
        Assert.Equal((64, 172, 5, 8, 4, 512, 512), (c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.VocabSize, c.MaxSeqLen));
        Assert.True(c.TiedEmbeddings);
        Assert.Equal(RopeStyle.Interleaved, c.RopeStyle);
        Assert.Null(model.Find("lm_head.weight"));

        Assert.Equal(new long[] { 512, 64 }, model.Find("model.embed_tokens.weight")!.Shape);
        Assert.Equal(new long[] { 64, 64 }, model.Find("model.layers.4.self_attn.q_proj.weight")!.Shape);
        Assert.Equal(new long[] { 32, 64 }, model.Find("model.layers.0.self_attn.k_proj.weight")!.Shape);
        Assert.Equal(new long[] { 172, 64 }, model.Find("model.layers.2.mlp.gate_proj.weight")!.Shape);
        Assert.Equal(new long[] { 64, 172 }, model.Find("model.layers.2.mlp.down_proj.weight")!.Shape);
        Assert.Equal(new long[] { 64 }, model.Find("model.norm.weight")!.Shape);
        Assert.Equal(1 + 5 * 9 + 1, model.Tensors.Count);
        Assert.Equal(260_032, model.Tensors.Sum(t => t.ElementCount));

        using var view = model.Map(model.Find("model.embed_tokens.weight")!);
        var first = new float[3];
        view.ReadFloats(0, first);
        Assert.Equal([-0.29474878f, 0.5618956f, 0.17542253f], first);
    }

    [Fact]
    public void PerLayerSlicesAreContiguousInFileOrder()
    {
        using var model = Llama2cCheckpoint.Open(SharedData.Stories260K);
        var q0 = model.Find("model.layers.0.self_attn.q_proj.weight")!;
        var q1 = model.Find("model.layers.1.self_attn.q_proj.weight")!;
        Assert.Equal(q0.FileOffset + 64 * 64 * 4, q1.FileOffset);
        var norm = model.Find("model.norm.weight")!;
        Assert.Equal(new FileInfo(SharedData.Stories260K).Length - 4L * 512 * 8, norm.FileOffset + norm.ByteLength);
    }

    public static TheoryData<string, int, int, string> BadHeaders() => new()
    {
        { "negative dim", 0, -64, "dim -64" },
        { "absurd hidden", 1, int.MaxValue, "hidden_dim" },
        { "zero layers", 2, 0, "n_layers 0" },
        { "absurd layers", 2, 1_000_000, "n_layers 1000000" },
        { "heads not dividing dim", 3, 7, "n_heads 7" },
        { "kv heads above heads", 4, 16, "n_kv_heads 16" },
        { "zero vocab", 5, 0, "vocab_size 0" },
        { "int min vocab", 5, int.MinValue, "vocab_size" },
        { "negative seq_len", 6, -1, "seq_len -1" },
        { "seq_len not matching file", 6, 1024, "describes" },
        { "separate classifier missing", 5, -512, "truncated" },
    };

    [Theory]
    [MemberData(nameof(BadHeaders))]
    public void AbsurdHeaderIsRefused(string kind, int field, int value, string expected)
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(SharedData.Stories260K);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4 * field), value);
        var path = dir.File("bad.bin");
        File.WriteAllBytes(path, bytes);
        var error = Assert.Throws<CheckpointFormatException>(() => Llama2cCheckpoint.Open(path).Dispose());
        Assert.True(error.Message.Contains(expected, StringComparison.Ordinal), $"{kind}: {error.Message}");
    }

    [Fact]
    public void TruncatedFileIsRefused()
    {
        using var dir = new TempDir();
        var path = dir.File("short.bin");
        File.WriteAllBytes(path, File.ReadAllBytes(SharedData.Stories260K)[..100_000]);
        var error = Assert.Throws<CheckpointFormatException>(() => CheckpointLoader.Open(path).Dispose());
        Assert.Contains("but the file has 100000 (truncated?)", error.Message);
    }

    [Fact]
    public void VersionedExportIsNamed()
    {
        using var dir = new TempDir();
        var path = dir.File("v1.bin");
        File.WriteAllBytes(path, [.. "ak42"u8, .. new byte[60]]);
        var error = Assert.Throws<CheckpointFormatException>(() => CheckpointLoader.Open(path).Dispose());
        Assert.Contains("version-1/2 export", error.Message);
    }
}
