using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tests.Support;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.Pipeline;

public class InspectorTests
{
    [Fact]
    public void Stories260KSelectsOnlyLinearWeights()
    {
        using var model = CheckpointLoader.Open(SharedData.Stories260K);
        var report = Inspector.Inspect(model);
        var selected = report.Tensors.Where(t => t.Selected).Select(t => t.Name).ToList();
        Assert.Equal(5 * 7, selected.Count); // q, k, v, o, gate, up, down per layer
        Assert.DoesNotContain("model.embed_tokens.weight", selected);
        Assert.Equal(260_032, report.Parameters);
        Assert.All(report.Tensors, t => Assert.Equal(0, t.Statistics!.NonFinite));

        var mxfp4 = report.Estimates.Single(e => e.Format == "mxfp4");
        // Per layer: q 64×2 + k 32×2 + v 32×2 + o 64×2 + gate 172×2 + up 172×2 + down 64×6 = 1456 blocks of
        // 17 bytes over 45312 weights; down_proj's 172 columns end in a short block stored padded to 32.
        Assert.Equal(1456 * 17 * 8 / 45312.0, mxfp4.BitsPerWeight, 9);
    }

    [Theory]
    [InlineData("h.0.attn.q_proj.weight", true)]
    [InlineData("h.0.attn.q_proj.bias", false)]
    [InlineData("input.wpe", false)]
    [InlineData("h.3.ln_1.weight", false)]
    [InlineData("model.layers.0.mlp.down_proj.weight", true)]
    [InlineData("model.embed_tokens.weight", false)]
    [InlineData("lm_head.weight", false)]
    public void DefaultSelectionFollowsTheSpec(string name, bool selected)
    {
        long[] shape = name.EndsWith("bias") || name.Contains("ln_") ? [768] : [768, 768];
        var tensor = new TensorInfo(name, DType.BF16, shape, "x", 0, 2 * TensorShape.ElementCount(shape));
        Assert.Equal(selected, TensorSelection.Default.Selects(tensor));
    }

    [Fact]
    public void IncludeAndExcludeOverrideTheDefault()
    {
        var embed = new TensorInfo("model.embed_tokens.weight", DType.F32, [10, 4], "x", 0, 160);
        var q = new TensorInfo("model.layers.0.self_attn.q_proj.weight", DType.F32, [4, 4], "x", 0, 64);
        var selection = new TensorSelection(include: "embed", exclude: "q_proj");
        Assert.True(selection.Selects(embed));
        Assert.False(selection.Selects(q));
        Assert.Equal("TensorSelection.Include", Assert.Throws<InvalidOptionException>(() => new TensorSelection(include: "(unclosed")).Option);
    }

    [Fact]
    public void SampleCheckpointIsDeterministicAndRealisticallyShaped()
    {
        using var a = new TempDir();
        using var b = new TempDir();
        var options = new SampleOptions { Dim = 64, HiddenDim = 128, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 256 };
        SampleCheckpoint.Write(a.Path, options);
        SampleCheckpoint.Write(b.Path, options);
        Assert.Equal(File.ReadAllBytes(Path.Combine(a.Path, "model.safetensors")), File.ReadAllBytes(Path.Combine(b.Path, "model.safetensors")));

        using var model = CheckpointLoader.Open(a.Path);
        Assert.Equal(2, model.Config!.Layers);
        Assert.Equal(SampleCheckpoint.ParameterCount(options), model.Tensors.Sum(t => t.ElementCount));
        var report = Inspector.Inspect(model);
        var q = report.Tensors.Single(t => t.Name == "model.layers.0.self_attn.q_proj.weight").Statistics!;
        Assert.InRange(q.Kurtosis, 4, 60); // heavy-tailed, like trained weights
    }

    [Fact]
    public void ShardedSampleSplitsAtTheShardSize()
    {
        using var dir = new TempDir();
        var options = new SampleOptions { Dim = 64, HiddenDim = 128, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 256, ShardBytes = 40_000 };
        SampleCheckpoint.Write(dir.Path, options);
        Assert.True(Directory.GetFiles(dir.Path, "model-*-of-*.safetensors").Length > 2);
        using var model = CheckpointLoader.Open(dir.Path);
        Assert.Equal(SampleCheckpoint.ParameterCount(options), model.Tensors.Sum(t => t.ElementCount));
    }
}
