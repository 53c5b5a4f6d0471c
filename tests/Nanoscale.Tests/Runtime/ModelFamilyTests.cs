using System.Text.Json;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// The Llama-family configs people use — SmolLM2, Qwen2.5 (q/k/v biases), Qwen3 (q/k norms, head_dim ≠ hidden/heads),
/// Llama-3.2 (RoPE scaling) — read from config.json and run, with logits cross-checked against an independent pure-Python
/// implementation (tools/hf_llama_ref.py, written from transformers' modeling code) on small models of the same kind.
/// </summary>
public class ModelFamilyTests
{
    /// <summary>Each real model's shape scaled down, keeping what makes it that model.</summary>
    public static TheoryData<string> Families() => ["smollm2", "qwen2.5", "qwen3", "llama3.2"];

    internal static SampleOptions Small(string family) => family switch
    {
        "smollm2" => SampleOptions.SmolLM2_135M with { Dim = 48, HiddenDim = 64, Heads = 3, KvHeads = 1 },
        "qwen2.5" => SampleOptions.Qwen25_05B with { Dim = 56, HiddenDim = 64, Heads = 7, KvHeads = 1 },
        "qwen3" => SampleOptions.Qwen3_06B with { Dim = 64, HiddenDim = 96, Heads = 4, KvHeads = 2, HeadDim = 32 },
        "llama3.2" => SampleOptions.Llama32_1B with { Dim = 64, HiddenDim = 128, Heads = 4, KvHeads = 2, HeadDim = 16 },
        _ => throw new ArgumentException(family),
    } with { Layers = 2, VocabSize = 256, MaxSeqLen = 64, DType = DType.F32 };

    [Theory]
    [MemberData(nameof(Families))]
    public void ConfigsAreReadAsTheRealModelsHaveThem(string family)
    {
        using var dir = new TempDir();
        var options = Small(family);
        SampleCheckpoint.Write(dir.Path, options);
        using var checkpoint = CheckpointLoader.Open(dir.Path);
        var c = checkpoint.Config!;
        Assert.Null(c.Unsupported);
        Assert.Equal(options.EffectiveHeadDim, c.HeadDim);
        Assert.Equal(family == "qwen3", c.QkNorm);
        Assert.Equal(family == "qwen2.5", c.AttentionBias);
        Assert.Equal(family == "llama3.2", c.RopeScaling is not null);
        Assert.True(c.TiedEmbeddings);
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void LogitsAgreeWithAnIndependentImplementation(string family)
    {
        using var dir = new TempDir();
        SampleCheckpoint.Write(dir.Path, Small(family));
        int[] tokens = [1, 17, 200, 3, 99, 42];
        using var checkpoint = CheckpointLoader.Open(dir.Path);
        var model = LlamaModel.Load(checkpoint);
        var logits = new float[tokens.Length * model.Config.VocabSize];
        model.CreateSession().Forward(tokens, logits);

        var reference = RunReference(dir.Path, tokens);
        double scale = reference.SelectMany(r => r).Max(Math.Abs), worst = 0;
        for (int t = 0; t < tokens.Length; t++)
            for (int v = 0; v < model.Config.VocabSize; v++)
                worst = Math.Max(worst, Math.Abs(logits[t * model.Config.VocabSize + v] - reference[t][v]));
        Assert.True(worst <= 1e-4 * scale, $"{family}: largest difference {worst:G3} against logits up to {scale:G3}");
    }

    private static double[][] RunReference(string folder, int[] tokens) =>
        JsonSerializer.Deserialize<double[][]>(PythonTool.Run("hf_llama_ref.py", [folder, .. tokens.Select(t => t.ToString(System.Globalization.CultureInfo.InvariantCulture))]))!;

    [Fact]
    public void AVocabularyOfTwoBillionIsALocatedErrorWithoutALargeAllocation()
    {
        using var dir = new TempDir();
        SampleCheckpoint.Write(dir.Path, new SampleOptions { Layers = 1, Dim = 64, HiddenDim = 128, Heads = 4, KvHeads = 2, VocabSize = 32000 });
        var config = Path.Combine(dir.Path, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"vocab_size\": 32000", "\"vocab_size\": 2000000000"));
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<CheckpointFormatException>(() =>
            LoadedModel.Open(dir.Path, new ModelLoadOptions { TokenizerPath = SharedData.Path("tokenizers", "llama2") }).Dispose());
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Contains("model.embed_tokens.weight", e.Message);
        Assert.Contains("2000000000", e.Message);
        Assert.True(allocated < 256L << 20, $"{allocated} bytes allocated before the error");
    }

    [Fact]
    public void WhatTheRuntimeDoesNotImplementIsRefusedByName()
    {
        using var dir = new TempDir();
        SampleCheckpoint.Write(dir.Path, Small("llama3.2"));
        var config = Path.Combine(dir.Path, "config.json");
        string original = File.ReadAllText(config);

        File.WriteAllText(config, original.Replace("\"rope_type\": \"llama3\"", "\"rope_type\": \"yarn\""));
        Assert.Contains("rope_scaling of type 'yarn' is not supported", Refusal(dir.Path));

        File.WriteAllText(config, original.Replace("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\", \"num_local_experts\": 8"));
        Assert.Contains("mixture-of-experts", Refusal(dir.Path));

        File.WriteAllText(config, original.Replace("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\""));
        Assert.Contains("hidden_act 'gelu'", Refusal(dir.Path));

        static string Refusal(string folder)
        {
            using var checkpoint = CheckpointLoader.Open(folder); // inspect and compress still work
            Assert.NotNull(checkpoint.Config!.Unsupported);
            return Assert.Throws<InputException>(() => LlamaModel.Load(checkpoint)).Message;
        }
    }

    [Fact]
    public void Llama3FrequencyScalingFollowsTransformers()
    {
        var s = new RopeScaling(32f, 1f, 4f, 8192);
        // Long wavelengths are divided by the factor, short ones kept, the band between blended.
        float low = 1f / 500000f * 10, high = 1f;
        Assert.Equal(low / 32f, InferenceSession.ScaledFrequency(low, s));
        Assert.Equal(high, InferenceSession.ScaledFrequency(high, s));
        float middle = 2 * MathF.PI / 4000f; // wavelength 4000: between 8192/4 and 8192/1
        float smooth = (8192f / 4000f - 1f) / 3f;
        Assert.Equal((1 - smooth) * middle / 32f + smooth * middle, InferenceSession.ScaledFrequency(middle, s), 6);
    }
}
