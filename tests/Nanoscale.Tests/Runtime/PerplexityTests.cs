using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

public class PerplexityTests
{
    [Theory]
    [InlineData(0, 8)]
    [InlineData(1, 8)]
    [InlineData(2, 8)]
    [InlineData(8, 8)]
    [InlineData(9, 8)]
    [InlineData(15, 8)]
    [InlineData(16, 8)]
    [InlineData(1000, 2)]
    [InlineData(1000, 512)]
    public void WindowsPredictEveryTokenButTheFirstExactlyOnce(int tokens, int context)
    {
        var windows = Perplexity.Windows(tokens, context);
        var predicted = new int[Math.Max(tokens, 1)];
        for (int w = 0; w < windows.Count; w++)
        {
            var (start, length) = windows[w];
            Assert.InRange(length, 2, context);
            if (w > 0) Assert.Equal(windows[w - 1].Start + windows[w - 1].Length - 1, start); // overlap of exactly one
            for (int i = start + 1; i < start + length; i++) predicted[i]++;
        }
        if (tokens > 0) Assert.Equal(0, predicted[0]);
        for (int i = 1; i < tokens; i++) Assert.Equal(1, predicted[i]);
        if (windows.Count > 0) Assert.Equal(tokens, windows[^1].Start + windows[^1].Length);
    }

    [Fact]
    public void SplitsDocumentsAtTheMarker()
    {
        Assert.Equal(["a b", "c"], Perplexity.SplitDocuments("a b\n<|endoftext|>\n c \n<|endoftext|>\n \n", "<|endoftext|>"));
        Assert.Equal(["whole text"], Perplexity.SplitDocuments("\nwhole text\n", "<|endoftext|>"));
    }

    /// <summary>
    /// The fp32 perplexity of stories260K on tinystories-sample.txt, SPEC §13 with ctx 512, pinned.
    /// The first window's NLL is cross-checked by tools/llama2c_ref.py (docs/runtime.md).
    /// </summary>
    [Fact]
    public void Stories260KOnTinyStoriesSample()
    {
        var model = LlamaModelTests.Stories260K.Value;
        var reports = new List<PerplexityProgress>();
        var result = Perplexity.Evaluate(model, LlamaModelTests.Tok512.Value, File.ReadAllText(SharedData.TinyStoriesText),
            new PerplexityOptions { ContextLength = 512 }, new SynchronousProgress<PerplexityProgress>(reports.Add));
        Assert.Equal(ExpectedTokens, result.PredictedTokens);
        Assert.Equal(ExpectedPerplexity, result.Perplexity, ExpectedPerplexity * 1e-4);
        Assert.Equal(Math.Log(result.Perplexity), result.MeanNll, 1e-12);
        Assert.Equal(result.Windows, reports.Count);
        Assert.Equal(result.PredictedTokens, reports[^1].TotalPredictedTokens);
    }

    /// <summary>
    /// Numbers from tools/llama2c_ref.py, an independent pure-Python (double precision) port of llama2.c's tokenizer
    /// and forward pass: the first window alone, and the whole text with ctx 64 (31 windows, so the one-token overlap
    /// and fresh contexts are exercised).
    /// </summary>
    [Theory]
    [InlineData(512, true, 373, 1.315989312218)]
    [InlineData(64, false, 1804, 1.506295776642)]
    [InlineData(512, false, 1804, 1.266441031332)]
    public void AgreesWithThePythonReference(int context, bool firstDocumentOnly, long tokens, double meanNll)
    {
        var model = LlamaModelTests.Stories260K.Value;
        var tokenizer = LlamaModelTests.Tok512.Value;
        string text = File.ReadAllText(SharedData.TinyStoriesText);
        if (firstDocumentOnly) text = Perplexity.SplitDocuments(text, "<|endoftext|>")[0];
        var result = Perplexity.Evaluate(model, tokenizer, text, new PerplexityOptions { ContextLength = context });
        Assert.Equal(tokens, result.PredictedTokens);
        Assert.Equal(meanNll, result.MeanNll, meanNll * 1e-5);
    }

    /// <summary>The head over slices of the vocabulary (as a large vocabulary's window is scored: here 512 tokens in
    /// slices of 1 to 300, some not dividing it) gives the whole-vocabulary perplexity up to summation order; a
    /// non-positive bound is refused.</summary>
    [Theory]
    [InlineData(63 * 300)]
    [InlineData(63 * 7)]
    [InlineData(1)]
    public void VocabularySlicesGiveTheWholeVocabularysNll(int maxLogits)
    {
        var model = LlamaModelTests.Stories260K.Value;
        var tokenizer = LlamaModelTests.Tok512.Value;
        string text = Perplexity.SplitDocuments(File.ReadAllText(SharedData.TinyStoriesText), "<|endoftext|>")[0];
        var whole = Perplexity.Evaluate(model, tokenizer, text, new PerplexityOptions { ContextLength = 64 });
        var sliced = Perplexity.Evaluate(model, tokenizer, text, new PerplexityOptions { ContextLength = 64, MaxLogits = maxLogits });
        Assert.Equal(whole.PredictedTokens, sliced.PredictedTokens);
        Assert.Equal(whole.MeanNll, sliced.MeanNll, 1e-9);
        Assert.Throws<ArgumentOutOfRangeException>(() => Perplexity.Evaluate(model, tokenizer, text, new PerplexityOptions { MaxLogits = 0 }));
    }

    /// <summary>log Σ exp carried over slices: one slice is <see cref="Kernels.NegativeLogLikelihood"/> bit for bit;
    /// slices in any order, the largest logit early or late, within 1e-12; an empty slice changes nothing.</summary>
    [Fact]
    public void LogSumExpOverSlicesEqualsTheWholeRow()
    {
        var random = new Random(5);
        float[] logits = [.. Enumerable.Range(0, 1000).Select(_ => (float)(random.NextDouble() * 40 - 20))];
        logits[777] = 35;
        foreach (int target in new[] { 0, 777, 999 })
        {
            double expected = Kernels.NegativeLogLikelihood(logits, target);
            var one = new Kernels.LogSumExp();
            one.Add(logits);
            Assert.Equal(expected, one.NegativeLogLikelihood(logits[target]));
            foreach (int slice in new[] { 1, 3, 100, 333 })
            {
                var sliced = new Kernels.LogSumExp();
                sliced.Add([]);
                for (int first = 0; first < logits.Length; first += slice)
                    sliced.Add(logits.AsSpan(first, Math.Min(slice, logits.Length - first)));
                Assert.Equal(expected, sliced.NegativeLogLikelihood(logits[target]), 1e-12);
                var backwards = new Kernels.LogSumExp();
                for (int first = (logits.Length - 1) / slice * slice; first >= 0; first -= slice)
                    backwards.Add(logits.AsSpan(first, Math.Min(slice, logits.Length - first)));
                Assert.Equal(expected, backwards.NegativeLogLikelihood(logits[target]), 1e-12);
            }
        }
    }

    [Fact]
    public void HonoursCancellation()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => Perplexity.Evaluate(LlamaModelTests.Stories260K.Value, LlamaModelTests.Tok512.Value,
            "Once upon a time.", cancellationToken: cts.Token));
    }

    private const long ExpectedTokens = 1804;
    private const double ExpectedPerplexity = 3.5482017479937396; // mean NLL 1.266440925286683 nats, 5 windows

    private sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}

/// <summary>Text as users have it: a Windows copy of the evaluation text (CRLF line endings, a UTF-8 BOM) scores exactly
/// as the original (it used to give 6.254 instead of 3.548 on stories260K).</summary>
public class TextNormalisationTests
{
    [Fact]
    public void CrlfAndABomDoNotChangeThePerplexity()
    {
        using var dir = new TempDir();
        var windows = dir.File("tinystories-crlf.txt");
        var text = File.ReadAllText(SharedData.TinyStoriesText);
        Assert.DoesNotContain('\r', text);
        File.WriteAllText(windows, text.Replace("\n", "\r\n"), new System.Text.UTF8Encoding(encoderShouldEmitUTF8Identifier: true));
        var options = new Nanoscale.Pipeline.EvalOptions { TextPath = SharedData.TinyStoriesText, TokenizerPath = SharedData.Tok512 };
        var original = Nanoscale.Pipeline.Evaluation.Evaluate(SharedData.Stories260K, options);
        var copy = Nanoscale.Pipeline.Evaluation.Evaluate(SharedData.Stories260K, options with { TextPath = windows });
        Assert.Equal(3.548202, original.Perplexity!.Perplexity, 6);
        Assert.Equal(original.Perplexity!.MeanNll, copy.Perplexity!.MeanNll);
        Assert.Equal(original.Perplexity.PredictedTokens, copy.Perplexity.PredictedTokens);
    }
}
