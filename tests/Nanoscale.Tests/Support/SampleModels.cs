using Nanoscale.Pipeline;

namespace Nanoscale.Tests.Support;

/// <summary>Small generated models in real families' shapes, with their real tokenizers (and chat templates).</summary>
internal static class SampleModels
{
    /// <summary>A two-layer Qwen2.5-shaped model (q/k/v biases, tied head, 151,936 tokens) with Qwen2.5's real tokenizer
    /// and chat template, in a new folder of <paramref name="dir"/>.</summary>
    public static string Qwen25(TempDir dir, int maxSeqLen = 512) => SampleCheckpoint.Write(dir.File("qwen"), new SampleOptions
    {
        ModelType = "qwen2", Dim = 64, HiddenDim = 128, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 151936, MaxSeqLen = maxSeqLen,
        RopeTheta = 1000000f, NormEps = 1e-6f, TiedEmbeddings = true, TokenizerFrom = SharedData.Path("tokenizers", "qwen2_5"),
    });
}
