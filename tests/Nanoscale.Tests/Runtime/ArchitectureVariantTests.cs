using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>The Hugging Face side of the architecture (SPEC §12): half-split RoPE and Qwen2's q/k/v biases.</summary>
public class ArchitectureVariantTests
{
    private static readonly int[] Tokens = [1, 403, 407, 261, 378, 11, 97, 286, 261, 300, 412, 13, 42, 99, 2, 5];

    private static float[] Logits(LlamaModel model)
    {
        var logits = new float[Tokens.Length * model.Config.VocabSize];
        model.CreateSession().Forward(Tokens, logits);
        return logits;
    }

    /// <summary>
    /// Hugging Face's llama conversion permutes each head's q and k rows so that pair (2j, 2j+1) becomes
    /// (j, j + headDim/2); with <see cref="RopeStyle.Halves"/> the permuted model must give the same logits.
    /// </summary>
    [Fact]
    public void HalvesRopeOnPermutedWeightsEqualsInterleavedRope()
    {
        using ICheckpoint checkpoint = CheckpointLoader.Open(SharedData.Stories260K);
        ModelConfig config = checkpoint.Config!;
        var weights = InMemoryWeights.From(checkpoint);
        for (int l = 0; l < config.Layers; l++)
        {
            Permute(weights, LlamaTensorNames.Query(l), config.Heads, config.HeadDim);
            Permute(weights, LlamaTensorNames.Key(l), config.KvHeads, config.HeadDim);
        }
        float[] expected = Logits(LlamaModel.Load(checkpoint));
        float[] actual = Logits(LlamaModel.Load(config with { RopeStyle = RopeStyle.Halves }, weights));
        LlamaModelTests.AssertClose(expected, actual, 1e-4f, "halves vs interleaved");
        Assert.NotEqual(expected, Logits(LlamaModel.Load(config, weights))); // the permutation matters
    }

    private static void Permute(InMemoryWeights weights, string name, int heads, int headDim)
    {
        var (data, shape) = weights.Tensors[name];
        int columns = (int)shape[1], half = headDim / 2;
        var permuted = new float[data.Length];
        for (int h = 0; h < heads; h++)
            for (int j = 0; j < half; j++)
            {
                Array.Copy(data, (h * headDim + 2 * j) * columns, permuted, (h * headDim + j) * columns, columns);
                Array.Copy(data, (h * headDim + 2 * j + 1) * columns, permuted, (h * headDim + half + j) * columns, columns);
            }
        weights.Tensors[name] = (permuted, shape);
    }

    [Fact]
    public void AttentionBiasesMatchTheReference()
    {
        using ICheckpoint checkpoint = CheckpointLoader.Open(SharedData.Stories260K);
        ModelConfig config = checkpoint.Config! with { AttentionBias = true };
        var weights = InMemoryWeights.From(checkpoint);
        var random = new Random(7);
        float[] Bias(int n) => [.. Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() - 0.5))];
        for (int l = 0; l < config.Layers; l++)
        {
            weights.Tensors[LlamaTensorNames.QueryBias(l)] = (Bias(config.Dim), [config.Dim]);
            weights.Tensors[LlamaTensorNames.KeyBias(l)] = (Bias(config.KvDim), [config.KvDim]);
            weights.Tensors[LlamaTensorNames.ValueBias(l)] = (Bias(config.KvDim), [config.KvDim]);
        }
        var model = LlamaModel.Load(config, weights);
        var reference = new ReferenceLlama(config, weights.TryRead);
        var session = model.CreateSession();
        for (int pos = 0; pos < Tokens.Length; pos++)
            LlamaModelTests.AssertClose(reference.Forward(Tokens[pos], pos), session.Step(Tokens[pos]), 1e-4f, $"position {pos}");
        Assert.NotEqual(Logits(LlamaModel.Load(checkpoint)), Logits(model));

        weights.Tensors.Remove(LlamaTensorNames.KeyBias(3));
        Assert.Equal(LlamaTensorNames.KeyBias(3), Assert.Throws<CheckpointFormatException>(() => LlamaModel.Load(config, weights)).Where);
    }
}
