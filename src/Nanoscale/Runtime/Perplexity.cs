using System.Buffers;
using System.Diagnostics;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>
/// Perplexity as SPEC §13 defines it. Each document gets BOS; windows of at most ctx tokens overlap by exactly one
/// token, so every token but the document's first is predicted exactly once, from a fresh context (an empty key/value
/// cache) that starts at its window's first token.
/// </summary>
public static class Perplexity
{
    /// <summary>
    /// Splits at <paramref name="separator"/> when present. Each piece is trimmed of surrounding whitespace (the
    /// marker usually sits on its own line) and empty pieces are dropped; without the marker the whole text, trimmed
    /// the same way, is one document.
    /// </summary>
    public static IReadOnlyList<string> SplitDocuments(string text, string separator)
    {
        ArgumentNullException.ThrowIfNull(text);
        string[] pieces = string.IsNullOrEmpty(separator) ? [text] : text.Split(separator);
        return [.. pieces.Select(p => p.Trim()).Where(p => p.Length > 0)];
    }

    /// <summary>The windows covering <paramref name="tokenCount"/> tokens: [start, start + length) with consecutive
    /// windows sharing one token. Empty when fewer than 2 tokens (nothing to predict).</summary>
    public static IReadOnlyList<(int Start, int Length)> Windows(int tokenCount, int contextLength)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(contextLength, 2);
        var windows = new List<(int, int)>();
        for (int start = 0; tokenCount - start >= 2; start += contextLength - 1)
        {
            int end = Math.Min(tokenCount, start + contextLength);
            windows.Add((start, end - start));
            if (end == tokenCount) break;
        }
        return windows;
    }

    /// <summary>Tokenizes <paramref name="text"/> (one document per separator-delimited piece, BOS first) and scores it.</summary>
    public static PerplexityResult Evaluate(LlamaModel model, ITokenizer tokenizer, string text, PerplexityOptions? options = null,
        IProgress<PerplexityProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        options ??= new PerplexityOptions();
        var clock = Stopwatch.StartNew();
        return Evaluate(model, Tokenize(tokenizer, text, options.DocumentSeparator), options, progress, cancellationToken, clock);
    }

    /// <summary>The documents of <paramref name="text"/> (<see cref="SplitDocuments"/>) as they are scored: each one's
    /// ids with BOS first when the tokenizer has one.</summary>
    public static IReadOnlyList<int[]> Tokenize(ITokenizer tokenizer, string text, string separator)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return [.. SplitDocuments(text, separator).Select(d => tokenizer.Encode(d, addBos: tokenizer.BosId is not null))];
    }

    /// <summary>
    /// Σ −log p(next token) over a window's predicting positions (<paramref name="hidden"/>, one row each): all the
    /// logits at once when positions × vocabulary fit in <paramref name="maxLogits"/>, else the head over slices of the
    /// vocabulary (whole tiles of its rows), each position's log Σ exp carried across them (every row of the head still
    /// read once a window).
    /// </summary>
    private static double WindowNll(InferenceSession session, ReadOnlySpan<float> hidden, ReadOnlySpan<int> next, int vocab,
        float[] logits, int maxLogits, Kernels.LogSumExp[] sums, float[] targets)
    {
        int rows = next.Length;
        double nll = 0;
        if ((long)rows * vocab <= maxLogits)
        {
            Span<float> all = logits.AsSpan(0, rows * vocab);
            session.ComputeLogits(hidden, all);
            for (int r = 0; r < rows; r++) nll += Kernels.NegativeLogLikelihood(all.Slice(r * vocab, vocab), next[r]);
            return nll;
        }
        // Whole tiles of the head's rows, so each slice's logits are the bits the whole product gives.
        int tile = LinearKernels.RowsPerTile(hidden.Length / rows);
        int slice = Math.Max(tile, maxLogits / rows / tile * tile);
        Array.Clear(sums, 0, rows);
        for (int first = 0; first < vocab; first += slice)
        {
            int count = Math.Min(slice, vocab - first);
            Span<float> part = logits.AsSpan(0, rows * count);
            session.ComputeLogitSlice(hidden, first, count, part);
            for (int r = 0; r < rows; r++)
            {
                sums[r].Add(part.Slice(r * count, count));
                if ((uint)(next[r] - first) < (uint)count) targets[r] = part[r * count + next[r] - first];
            }
        }
        for (int r = 0; r < rows; r++) nll += sums[r].NegativeLogLikelihood(targets[r]);
        return nll;
    }

    /// <summary>The first <paramref name="max"/> tokens of the documents, in order (a cut document keeps its start).</summary>
    private static List<int[]> FirstTokens(IReadOnlyList<int[]> documents, int max)
    {
        var kept = new List<int[]>();
        foreach (var document in documents)
        {
            if (max < 2) break;
            kept.Add(document.Length <= max ? document : document[..max]);
            max -= kept[^1].Length;
        }
        return kept;
    }

    /// <summary>Scores already tokenized documents (each as it should be fed, BOS included).</summary>
    public static PerplexityResult Evaluate(LlamaModel model, IReadOnlyList<int[]> documents, PerplexityOptions? options = null,
        IProgress<PerplexityProgress>? progress = null, CancellationToken cancellationToken = default) =>
        Evaluate(model, documents, options ?? new PerplexityOptions(), progress, cancellationToken, Stopwatch.StartNew());

    private static PerplexityResult Evaluate(LlamaModel model, IReadOnlyList<int[]> documents, PerplexityOptions options,
        IProgress<PerplexityProgress>? progress, CancellationToken cancellationToken, Stopwatch clock)
    {
        ArgumentNullException.ThrowIfNull(documents);
        int context = options.ResolveContext(model.Config.MaxSeqLen);
        if (context < 2 || context > model.Config.MaxSeqLen)
            throw new ArgumentOutOfRangeException(nameof(options), context, $"context length must be 2..{model.Config.MaxSeqLen} (the model's maximum sequence length)");
        if (options.MaxLogits < 1) throw new ArgumentOutOfRangeException(nameof(options), options.MaxLogits, "MaxLogits must be at least 1");
        if (options.MaxTokens is int max) documents = FirstTokens(documents, max);

        var plan = documents.Select(d => Windows(d.Length, context)).ToList();
        int windowsTotal = plan.Sum(w => w.Count);
        long predictedTotal = documents.Sum(d => Math.Max(0L, d.Length - 1L));
        int vocab = model.Config.VocabSize, dim = model.Config.Dim;

        InferenceSession session = model.CreateSession(context);
        float[] hidden = new float[context * dim];
        float[] logits = ArrayPool<float>.Shared.Rent((int)Math.Min((long)(context - 1) * vocab,
            Math.Max(options.MaxLogits, (long)(context - 1) * LinearKernels.RowsPerTile(dim))));
        var sums = new Kernels.LogSumExp[context - 1];
        var targets = new float[context - 1];
        double nllSum = 0;
        long predicted = 0;
        int windowsDone = 0, scoredDocuments = 0;
        try
        {
            for (int d = 0; d < documents.Count; d++)
            {
                if (plan[d].Count > 0) scoredDocuments++;
                foreach (var (start, length) in plan[d])
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    ReadOnlySpan<int> window = documents[d].AsSpan(start, length);
                    session.Reset();
                    Span<float> h = hidden.AsSpan(0, length * dim);
                    session.ForwardHidden(window, h, cancellationToken);
                    // Position i predicts token i + 1; the window's last position predicts nothing here (the next
                    // window starts with that token and predicts its successor from a fresh context).
                    nllSum += WindowNll(session, h[..((length - 1) * dim)], window[1..], vocab, logits, options.MaxLogits, sums, targets);
                    predicted += length - 1;
                    windowsDone++;
                    progress?.Report(new PerplexityProgress(windowsDone, windowsTotal, predicted, predictedTotal));
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(logits);
        }
        if (predicted == 0)
            throw new InputException("the text has no token to predict (every document is empty or a single token)");
        double mean = nllSum / predicted;
        return new PerplexityResult(mean, Math.Exp(mean), predicted, scoredDocuments, windowsDone, context, clock.Elapsed);
    }
}
