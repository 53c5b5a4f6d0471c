using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Interop;

/// <summary>
/// Our GGUF files run in llama.cpp (its own library, loaded in the test): the vocabulary we embed tokenizes text as our
/// tokenizer does, and the weights and hyperparameters give the logits our runtime gives.
/// </summary>
public class GgufExportTests
{
    private static string Sample(int chars) => File.ReadAllText(SharedData.Path("text", "tinystories-sample.txt"))[..chars];

    /// <summary>Largest |a − b| over the largest |b| of a row, over all rows.</summary>
    private static double RelativeError(float[][] ours, float[][] theirs)
    {
        double worst = 0;
        for (int t = 0; t < ours.Length; t++)
        {
            double scale = theirs[t].Max(Math.Abs), diff = 0;
            for (int v = 0; v < ours[t].Length; v++) diff = Math.Max(diff, Math.Abs(ours[t][v] - theirs[t][v]));
            worst = Math.Max(worst, diff / scale);
        }
        return worst;
    }

    private static float[][] OurLogits(LlamaModel model, int[] tokens)
    {
        var flat = new float[tokens.Length * model.Config.VocabSize];
        model.CreateSession(tokens.Length).Forward(tokens, flat);
        return [.. Enumerable.Range(0, tokens.Length).Select(t => flat.AsSpan(t * model.Config.VocabSize, model.Config.VocabSize).ToArray())];
    }

    [Fact]
    public void Stories260KInF32RunsInLlamaCppWithOurTokensAndLogits()
    {
        using var dir = new TempDir();
        var gguf = dir.File("stories260K.gguf");
        var report = GgufExport.Export(SharedData.Stories260K, gguf, new GgufExportOptions { Type = "f32" });
        Assert.Equal("llama", report.Vocabulary);
        Assert.Empty(report.Fallbacks);

        using var llama = new LlamaCppRuntime(gguf);
        Assert.Equal(512, llama.VocabSize);
        var tokenizer = Llama2cTokenizer.Load(SharedData.Path("models", "stories260K", "tok512.bin"));
        var text = Sample(2000);
        Assert.Equal(tokenizer.Encode(text, addBos: false), llama.Tokenize(text));

        using var checkpoint = CheckpointLoader.Open(SharedData.Stories260K);
        var model = LlamaModel.Load(checkpoint);
        int[] tokens = [1, .. tokenizer.Encode(text, addBos: false).Take(200)];
        Assert.InRange(RelativeError(OurLogits(model, tokens), llama.Logits(tokens)), 0, 1e-4);
    }
}
