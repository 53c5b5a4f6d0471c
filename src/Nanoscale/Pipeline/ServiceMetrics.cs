namespace Nanoscale.Pipeline;

/// <summary>
/// What a <see cref="CompletionService"/> has done since it started, for monitoring (<c>serve</c>'s <c>/metrics</c>, in
/// Prometheus' text format): requests admitted, finished, cancelled, failed and turned away; prompt, cached and
/// generated tokens; embeddings; and the time from a request's arrival to its first generated text as a histogram.
/// Thread-safe; every number only grows.
/// </summary>
public sealed class ServiceMetrics
{
    /// <summary>The histogram's upper bounds, seconds (a last, unbounded bucket follows).</summary>
    public static IReadOnlyList<double> FirstTextBounds { get; } = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

    private long _admitted, _finished, _cancelled, _failed, _rejected;
    private long _promptTokens, _cachedPromptTokens, _generatedTokens, _embeddingInputs, _embeddingTokens;
    private readonly long[] _firstText = new long[FirstTextBounds.Count + 1];
    private long _firstTextCount;
    private double _firstTextSum;
    private readonly object _histogramLock = new();

    public long Admitted => Interlocked.Read(ref _admitted);
    public long Finished => Interlocked.Read(ref _finished);
    public long Cancelled => Interlocked.Read(ref _cancelled);
    public long Failed => Interlocked.Read(ref _failed);

    /// <summary>Requests turned away because the batch and the queue were full (HTTP 429).</summary>
    public long Rejected => Interlocked.Read(ref _rejected);

    public long PromptTokens => Interlocked.Read(ref _promptTokens);

    /// <summary>Prompt tokens taken from kept or running caches instead of run (counted in <see cref="PromptTokens"/> too).</summary>
    public long CachedPromptTokens => Interlocked.Read(ref _cachedPromptTokens);

    public long GeneratedTokens => Interlocked.Read(ref _generatedTokens);
    public long EmbeddingInputs => Interlocked.Read(ref _embeddingInputs);
    public long EmbeddingTokens => Interlocked.Read(ref _embeddingTokens);

    /// <summary>The first-text histogram: requests per bucket (not cumulative; the last is above every bound), their
    /// count and the sum of their seconds.</summary>
    public (long[] Buckets, long Count, double SumSeconds) FirstText()
    {
        lock (_histogramLock) return ([.. _firstText], _firstTextCount, _firstTextSum);
    }

    internal void Admit() => Interlocked.Increment(ref _admitted);
    internal void Reject() => Interlocked.Increment(ref _rejected);
    internal void Cancel() => Interlocked.Increment(ref _cancelled);
    internal void Fail() => Interlocked.Increment(ref _failed);

    internal void Finish(CompletionOutcome outcome)
    {
        Interlocked.Increment(ref _finished);
        Interlocked.Add(ref _promptTokens, outcome.PromptTokens);
        Interlocked.Add(ref _cachedPromptTokens, outcome.CachedPromptTokens);
        Interlocked.Add(ref _generatedTokens, outcome.CompletionTokens);
    }

    internal void Embedded(int inputs, int tokens)
    {
        Interlocked.Add(ref _embeddingInputs, inputs);
        Interlocked.Add(ref _embeddingTokens, tokens);
    }

    internal void FirstTextAfter(TimeSpan wait)
    {
        double seconds = wait.TotalSeconds;
        int bucket = 0;
        while (bucket < FirstTextBounds.Count && seconds > FirstTextBounds[bucket]) bucket++;
        lock (_histogramLock)
        {
            _firstText[bucket]++;
            _firstTextCount++;
            _firstTextSum += seconds;
        }
    }
}
