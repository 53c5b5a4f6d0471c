using System.Diagnostics;
using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>One format × thread count of <see cref="GenerationBench"/>.</summary>
/// <param name="Format">The format, or <c>original</c> for the checkpoint as stored.</param>
/// <param name="Threads">Worker threads.</param>
/// <param name="BitsPerWeight">Stored bits per weight of the tensors a codec applies to.</param>
/// <param name="BytesPerToken">Stored bytes the step reads per token: every product's weight (the output head
/// included; the embedding only when it is the tied head).</param>
/// <param name="PromptTokensPerSecond">Tokens per second of the forward pass over the prompt (one window).</param>
/// <param name="GeneratedTokensPerSecond">Tokens per second of the steps (one token each, greedy).</param>
/// <param name="Streams">Sequences generating together in the batched measurement (1: none was made).</param>
/// <param name="StreamsTokensPerSecond">Tokens per second of all <paramref name="Streams"/> sequences together, each
/// step one pass over the weights for all of them (the token factory's step); 0 when <paramref name="Streams"/> is 1.</param>
public sealed record GenerationBenchRow(string Format, int Threads, double BitsPerWeight, long BytesPerToken,
    double PromptTokensPerSecond, double GeneratedTokensPerSecond, int Streams = 1, double StreamsTokensPerSecond = 0)
{
    /// <summary>Stored weight bytes read per second while generating.</summary>
    public double EffectiveGBps => BytesPerToken * GeneratedTokensPerSecond / 1e9;

    /// <summary>The batched aggregate against one stream's rate (0 when no batch was timed).</summary>
    public double StreamsGain => StreamsTokensPerSecond / GeneratedTokensPerSecond;
}

/// <summary>What <see cref="GenerationBench.Run"/> measured, and the machine's copy bandwidth to compare with.</summary>
public sealed record GenerationBenchResult(IReadOnlyList<GenerationBenchRow> Rows, IReadOnlyDictionary<int, double> MemcpyGBps);

/// <summary>
/// Generation speed per format (issue 14's benchmark, <c>nanoscale bench --generate</c>): each format is compressed
/// into a temporary checkpoint, loaded as <c>eval</c> and <c>generate</c> load it, and timed on a prompt of fixed
/// token ids (one forward pass) and then greedy steps; load and compression are not timed. Beside it, the bandwidth
/// of copying a buffer far larger than the caches, per thread count.
/// </summary>
public static class GenerationBench
{
    /// <summary>Measures each of <paramref name="formats"/> on the model at <paramref name="modelPath"/> with each thread
    /// count of <paramref name="threads"/>: a prompt of <paramref name="promptTokens"/> ids, then <paramref name="newTokens"/>
    /// greedy steps. With <paramref name="decodeRows"/> every product decodes rows to floats first
    /// (<see cref="RuntimeOptions.FusedKernels"/> off, the reference path), to compare with the products on the stored codes.
    /// <paramref name="include"/> adds tensors the default selection keeps (e.g. <c>embed|lm_head</c>, to compare with a
    /// runtime whose files quantize the embedding and head too). <paramref name="kvCache"/> is the number type of the
    /// key/value cache the steps read and write (<see cref="RuntimeOptions.KvCache"/>). With <paramref name="streams"/>
    /// above 1, also that many sequences generating together (<see cref="InferenceSession.StepMany"/>, as <c>serve</c>
    /// batches its requests): their prompts in one pass, untimed, then <paramref name="newTokens"/> greedy steps of all
    /// of them, timed.</summary>
    public static GenerationBenchResult Run(string modelPath, IReadOnlyList<string> formats, IReadOnlyList<int> threads,
        int promptTokens, int newTokens, string? workFolder = null, IProgress<string>? log = null,
        CancellationToken cancellationToken = default, bool decodeRows = false, string? include = null,
        KvCacheType kvCache = KvCacheType.F32, int streams = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(promptTokens, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(newTokens, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(streams, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(streams, MaxStreams);
        var rows = new List<GenerationBenchRow>();
        using var source = CheckpointLoader.Open(modelPath);
        var config = source.Config ?? throw new CheckpointFormatException(source.Path, "config", null,
            "the checkpoint does not describe a model architecture, so it cannot be run");
        if (config.Unsupported is { } why) throw new InputException($"{source.Path}: {why}");
        if (KvRows.Unsupported(kvCache, config.KvDim) is { } problem)
            throw new InvalidOptionException(ModelLoadOptions.KvCacheName, $"{source.Path}: {problem}");
        if (promptTokens + newTokens > config.MaxSeqLen)
            throw new InvalidOptionException("tokens", $"prompt {promptTokens} + {newTokens} new tokens exceed the model's {config.MaxSeqLen} positions");
        foreach (string format in formats)
        {
            cancellationToken.ThrowIfCancellationRequested();
            TemporaryFile? temporary = null;
            try
            {
                string path = modelPath;
                if (format != "original")
                {
                    log?.Report($"bench: compressing to {format}");
                    (_, temporary) = CompressionRun.RunTemporary(source, workFolder, new CompressOptions
                    {
                        Codec = CodecRegistry.Create(format),
                        Selection = TensorSelection.For(CodecRegistry.Create(format), include),
                    },
                        measureError: false, cancellationToken: cancellationToken);
                    path = temporary.Path;
                }
                using var checkpoint = LogicalCheckpoint.Open(path);
                using var weights = new LogicalWeightSource(checkpoint);
                var selection = TensorSelection.Default;
                var weighed = checkpoint.Tensors.Where(t => t.Encoded is not null || selection.Selects(t.Plain!)).ToList();
                double bpw = 8.0 * weighed.Sum(t => t.StoredBytes) / Math.Max(1, weighed.Sum(t => t.ElementCount));
                long perToken = checkpoint.Tensors.Where(t => t.Shape.Length == 2 && (t.Name != LlamaTensorNames.Embedding || config.TiedEmbeddings))
                    .Sum(t => t.StoredBytes);
                foreach (int t in threads)
                {
                    var model = LlamaModel.Load(checkpoint.Config ?? config, weights, new RuntimeOptions { Parallelism = new(t), FusedKernels = !decodeRows, KvCache = kvCache }, path);
                    var (prompt, generated) = Time(model, promptTokens, newTokens, cancellationToken);
                    double together = streams > 1 ? TimeStreams(model, streams, promptTokens, newTokens, cancellationToken) : 0;
                    var row = new GenerationBenchRow(format, t, bpw, perToken, prompt, generated, streams, together);
                    log?.Report($"bench: {format} × {t} thread(s): prompt {prompt:0.0} tokens/s, generation {generated:0.00} tokens/s " +
                                $"({row.EffectiveGBps:0.00} GB/s of stored weights)" +
                                (streams > 1 ? $", {streams} streams {together:0.0} tokens/s ({row.StreamsGain:0.0}× one)" : ""));
                    rows.Add(row);
                }
            }
            finally
            {
                temporary?.Dispose();
            }
        }
        return new GenerationBenchResult(rows, threads.Distinct().ToDictionary(t => t, MemcpyGBps));
    }

    /// <summary>Best of two runs after a warm-up run (the JIT's tiers and the first touch of mapped pages would
    /// otherwise count against whichever format comes first): the prompt as one window (logits of its last position
    /// only, as a generation prompt), then greedy steps.</summary>
    private static (double Prompt, double Generated) Time(LlamaModel model, int promptTokens, int newTokens, CancellationToken cancellationToken)
    {
        int vocab = model.Config.VocabSize;
        int[] prompt = FixedIds(promptTokens, vocab);
        double bestPrompt = 0, bestGenerated = 0;
        for (int run = 0; run < 3; run++)
        {
            var session = model.CreateSession(promptTokens + newTokens);
            var logits = new float[vocab];
            var hidden = new float[promptTokens * model.Config.Dim];
            // As a generation prompt runs (GenerationSequence) and as llama.cpp's side of the comparison does: the window
            // on the stored codes where that is a real kernel, the output head on the last position only.
            var clock = Stopwatch.StartNew();
            session.ForwardPrompt(prompt, hidden, cancellationToken);
            session.ComputeLogits(hidden.AsSpan((promptTokens - 1) * model.Config.Dim, model.Config.Dim), logits);
            double promptSeconds = clock.Elapsed.TotalSeconds;
            int next = Kernels.ArgMax(logits);
            var stepLogits = logits.AsSpan(); // reused: a new array per step (the LOH for a large vocabulary) would time the GC too
            clock.Restart();
            for (int i = 0; i < newTokens; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                session.Forward([next], stepLogits, cancellationToken);
                next = Kernels.ArgMax(stepLogits);
            }
            double generateSeconds = clock.Elapsed.TotalSeconds;
            if (run == 0) continue; // warm-up
            bestPrompt = Math.Max(bestPrompt, promptTokens / promptSeconds);
            bestGenerated = Math.Max(bestGenerated, newTokens / generateSeconds);
        }
        return (bestPrompt, bestGenerated);
    }

    /// <summary>Token ids spread over the vocabulary by a fixed multiplicative hash: the same prompts every run and format.</summary>
    private static int[] FixedIds(int count, int vocab) => [.. Enumerable.Range(0, count).Select(i => (int)((i * 2654435761L + 1) % vocab))];

    /// <summary>The most sequences <see cref="Run"/> steps together (each holds its own key/value cache).</summary>
    public const int MaxStreams = 256;

    /// <summary>Aggregate tokens per second of <paramref name="streams"/> sequences stepping together: their prompts
    /// (each its own ids) in one untimed pass, then <paramref name="newTokens"/> greedy steps of all of them; best of
    /// two runs after a warm-up, as <see cref="Time"/>.</summary>
    private static double TimeStreams(LlamaModel model, int streams, int promptTokens, int newTokens, CancellationToken cancellationToken)
    {
        int vocab = model.Config.VocabSize;
        int[] prompts = FixedIds(streams * promptTokens, vocab); // the first stream's prompt is Time's
        int[] counts = [.. Enumerable.Repeat(promptTokens, streams)];
        var logits = new float[(long)streams * vocab];
        var next = new int[streams];
        double best = 0;
        for (int run = 0; run < 3; run++)
        {
            var sessions = Enumerable.Range(0, streams).Select(_ => model.CreateSession(promptTokens + newTokens)).ToList();
            InferenceSession.ForwardMany(sessions, counts, prompts, logits, cancellationToken);
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < newTokens; i++)
            {
                for (int v = 0; v < streams; v++) next[v] = Kernels.ArgMax(logits.AsSpan(v * vocab, vocab));
                InferenceSession.StepMany(sessions, next, logits, cancellationToken);
            }
            double seconds = clock.Elapsed.TotalSeconds;
            if (run > 0) best = Math.Max(best, (double)streams * newTokens / seconds);
        }
        return best;
    }

    /// <summary>Bytes copied per second by <paramref name="threads"/> threads, each copying its own 64 MiB buffers
    /// (far beyond the caches); best of three rounds.</summary>
    public static double MemcpyGBps(int threads)
    {
        const int Bytes = 64 << 20;
        var buffers = Enumerable.Range(0, threads).Select(_ => (From: new byte[Bytes], To: new byte[Bytes])).ToArray();
        foreach (var (from, _) in buffers) Array.Fill(from, (byte)1);
        double best = 0;
        for (int round = 0; round < 3; round++)
        {
            var clock = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
            {
                for (int k = 0; k < 4; k++) buffers[i].From.AsSpan().CopyTo(buffers[i].To);
            });
            best = Math.Max(best, 4.0 * Bytes * threads / clock.Elapsed.TotalSeconds / 1e9);
        }
        return best;
    }
}
