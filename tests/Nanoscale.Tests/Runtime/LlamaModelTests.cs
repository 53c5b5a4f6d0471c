using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

public class LlamaModelTests
{
    internal static readonly Lazy<LlamaModel> Stories260K = new(() =>
    {
        using ICheckpoint checkpoint = CheckpointLoader.Open(SharedData.Stories260K);
        return LlamaModel.Load(checkpoint);
    });

    internal static readonly Lazy<Llama2cTokenizer> Tok512 = new(() => Llama2cTokenizer.Load(SharedData.Tok512, vocabSize: 512));

    private static int[] SampleTokens(int count)
    {
        string text = Perplexity.SplitDocuments(File.ReadAllText(SharedData.TinyStoriesText), "<|endoftext|>")[0];
        return Tok512.Value.Encode(text, addBos: true)[..count];
    }

    [Fact]
    public void GreedyGenerationFromBosTellsTheKnownStory()
    {
        var result = Generation.Greedy(Stories260K.Value, Tok512.Value, "", maxNewTokens: 40);
        Assert.Equal(1, result.PromptTokens);
        Assert.StartsWith("Once upon a time, there was a little girl named Lily.", result.Text);
    }

    [Fact]
    public void GenerationStopsAtTheLimitAndContinuesAPrompt()
    {
        var result = Generation.Greedy(Stories260K.Value, Tok512.Value, "Once upon a time", maxNewTokens: 5);
        Assert.Equal(result.PromptTokens + 5, result.Tokens.Length);
        Assert.False(result.StoppedAtEnd);
        Assert.StartsWith("Once upon a time", result.Text);
        Assert.Empty(Generation.Greedy(Stories260K.Value, Tok512.Value, "", maxNewTokens: 0).Tokens[1..]);
    }

    [Fact]
    public void MatchesTheScalarRun_cPortTokenByToken()
    {
        using ICheckpoint checkpoint = CheckpointLoader.Open(SharedData.Stories260K);
        var reference = new ReferenceLlama(checkpoint);
        int[] tokens = SampleTokens(48);
        var session = Stories260K.Value.CreateSession();
        for (int pos = 0; pos < tokens.Length; pos++)
        {
            float[] expected = reference.Forward(tokens[pos], pos);
            float[] actual = session.Step(tokens[pos]);
            AssertClose(expected, actual, 1e-4f, $"position {pos}");
        }
    }

    [Fact]
    public void WindowPathMatchesTokenByTokenPath()
    {
        var model = Stories260K.Value;
        int[] tokens = SampleTokens(200);
        int vocab = model.Config.VocabSize;
        var window = new float[tokens.Length * vocab];
        model.CreateSession().Forward(tokens, window);

        var session = model.CreateSession();
        for (int pos = 0; pos < tokens.Length; pos++)
            AssertClose(window.AsSpan(pos * vocab, vocab).ToArray(), session.Step(tokens[pos]), 1e-4f, $"position {pos}");
    }

    /// <summary>The key/value cache starts small and doubles as the sequence grows (a session sized for a long
    /// context holds memory for the tokens it has seen): stepping past the first allocation gives the window's
    /// numbers, and the cache grows only when needed.</summary>
    [Fact]
    public void TheCacheGrowsWithTheSequence()
    {
        var model = Stories260K.Value;
        int[] tokens = [.. Enumerable.Range(0, 300).Select(i => SampleTokens(200)[i % 200])];
        int vocab = model.Config.VocabSize;
        var window = new float[tokens.Length * vocab];
        model.CreateSession(512).Forward(tokens, window);

        var session = model.CreateSession(512);
        Assert.Equal(InferenceSession.InitialPositions, session.AllocatedPositions);
        for (int pos = 0; pos < tokens.Length; pos++)
        {
            AssertClose(window.AsSpan(pos * vocab, vocab).ToArray(), session.Step(tokens[pos]), 1e-4f, $"position {pos}");
            Assert.Equal(pos < InferenceSession.InitialPositions ? InferenceSession.InitialPositions : 512, session.AllocatedPositions);
        }
        Assert.Equal(8, model.CreateSession(8).AllocatedPositions); // never more than the capacity
    }

    [Fact]
    public void SingleThreadedAndParallelRunsAgree()
    {
        using ICheckpoint checkpoint = CheckpointLoader.Open(SharedData.Stories260K);
        var serial = LlamaModel.Load(checkpoint, new RuntimeOptions { Parallelism = new(1) });
        var parallel = LlamaModel.Load(checkpoint, new RuntimeOptions { Parallelism = new(4), MinParallelMultiplyAdds = 0 });
        int[] tokens = SampleTokens(130);
        int vocab = serial.Config.VocabSize;
        var a = new float[tokens.Length * vocab];
        var b = new float[tokens.Length * vocab];
        serial.CreateSession().Forward(tokens, a);
        parallel.CreateSession().Forward(tokens, b);
        Assert.Equal(a, b); // each output is one dot product computed the same way, whoever computes it
    }

    [Fact]
    public void SessionRejectsOverflowAndBadTokens()
    {
        var session = Stories260K.Value.CreateSession(4);
        Assert.Throws<ArgumentOutOfRangeException>(() => session.Step(512));
        session.Reset();
        session.Forward([1, 2, 3], new float[3 * 512]);
        Assert.Equal(3, session.Length);
        Assert.Throws<InvalidOperationException>(() => session.Forward([1, 2], new float[2 * 512]));
    }

    [Fact]
    public void LoadNamesAMissingOrMisshapenTensor()
    {
        using ICheckpoint checkpoint = CheckpointLoader.Open(SharedData.Stories260K);
        var source = new CheckpointWeightSource(checkpoint);
        var wider = checkpoint.Config! with { HiddenDim = 173 };
        var e = Assert.Throws<CheckpointFormatException>(() => LlamaModel.Load(wider, source));
        Assert.Equal("model.layers.0.mlp.gate_proj.weight", e.Where);
        var untied = checkpoint.Config! with { TiedEmbeddings = false };
        Assert.Equal("lm_head.weight", Assert.Throws<CheckpointFormatException>(() => LlamaModel.Load(untied, source)).Where);
    }

    internal static void AssertClose(float[] expected, float[] actual, float tolerance, string where)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (!(Math.Abs(expected[i] - actual[i]) <= tolerance * Math.Max(1f, Math.Abs(expected[i]))))
                Assert.Fail($"{where}, logit {i}: expected {expected[i]}, found {actual[i]}");
    }
}
