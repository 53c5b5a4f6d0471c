namespace Nanoscale.Runtime;

/// <summary>Settings of the perplexity protocol (SPEC §13).</summary>
public sealed record PerplexityOptions
{
    /// <summary>The largest default window; longer contexts must be asked for.</summary>
    public const int DefaultMaxContext = 2048;

    /// <summary>Tokens per window including its first (context-only) token; null means
    /// min(model max sequence length, <see cref="DefaultMaxContext"/>). At least 2.</summary>
    public int? ContextLength { get; init; }

    /// <summary>Documents are split at this marker when the text contains it.</summary>
    public string DocumentSeparator { get; init; } = "<|endoftext|>";

    /// <summary>Score at most this many tokens (BOS included) of the text, documents in order, the last one cut;
    /// null: all of it. For a quick number on a large model.</summary>
    public int? MaxTokens { get; init; }

    /// <summary>The most logits held at once (floats; 1M = 4 MiB): a window's predicted positions × the vocabulary when
    /// that fits, else the head runs over slices of the vocabulary (rounded to whole tiles of its rows, at least one) for all
    /// the window's positions and each position's
    /// log Σ exp is carried from slice to slice (<see cref="Kernels.LogSumExp"/>). Bounds memory for large vocabularies:
    /// Llama-3's 128,256 × 255 positions would be 125 MiB.</summary>
    public int MaxLogits { get; init; } = 1 << 20;

    public int ResolveContext(int modelMaxSeqLen) => ContextLength ?? Math.Min(modelMaxSeqLen, DefaultMaxContext);
}

/// <summary>Where a perplexity run stands, reported after each window.</summary>
public readonly record struct PerplexityProgress(int WindowsDone, int WindowsTotal, long PredictedTokens, long TotalPredictedTokens);

/// <summary>The outcome of SPEC §13: mean NLL in nats per predicted token and its exponential.</summary>
/// <param name="MeanNll">Mean negative log-likelihood, nats per predicted token.</param>
/// <param name="Perplexity">exp(<paramref name="MeanNll"/>).</param>
/// <param name="PredictedTokens">Tokens scored: every document's tokens but its first (BOS).</param>
/// <param name="Documents">Documents with at least one predicted token.</param>
/// <param name="Windows">Forward passes run.</param>
/// <param name="ContextLength">Window size used.</param>
/// <param name="Elapsed">Wall time of the forward passes and scoring (and of tokenization when the text was given as text).</param>
public sealed record PerplexityResult(
    double MeanNll,
    double Perplexity,
    long PredictedTokens,
    int Documents,
    int Windows,
    int ContextLength,
    TimeSpan Elapsed)
{
    /// <summary>Predicted tokens per second of wall time.</summary>
    public double TokensPerSecond => Elapsed > TimeSpan.Zero ? PredictedTokens / Elapsed.TotalSeconds : 0;
}
