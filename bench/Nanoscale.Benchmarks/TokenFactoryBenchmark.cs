using System.Diagnostics;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;

namespace Nanoscale.Benchmarks;

/// <summary>
/// Aggregate generation speed of the token factory (continuous batching) against the number of concurrent streams:
/// N requests of the same length submitted together, greedy, timed from submission to the last token (prompts
/// included), best of two after a warm-up. With N streams each step reads the weights once for N tokens. Also the
/// managed bytes allocated per generated token and the collections during the best run (garbage a step leaves
/// costs collections that stop both threads). With a level of one stream first, each level's aggregate against it
/// (the 16 streams ≥ 6× one).
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- token-factory MODEL [--tokenizer T] [--streams 1,2,4,8] [--tokens 32] [--threads 2] [--kv-cache f32|f16|bf16|q8|q4] [--json-object | --grammar FILE] [--temperature T] [--top-k K] [--top-p P] [--min-p M] [--one-factory]</code>
/// Greedy by default; the sampling options draw as a server's requests do (llama.cpp's <c>/completion</c> defaults are
/// <c>--temperature 0.8 --top-k 40 --top-p 0.95 --min-p 0.05</c>): each draw runs on the factory's one thread, between steps.
/// Each run has a factory of its own, so its sessions are new (their arrays fresh pages); with <c>--one-factory</c> a
/// level's runs share one factory, as a running server's requests do (pooled sessions and spares, kept prompts): two
/// runs warm it (the second still makes sessions: the first's are kept for their prompts, and spares come only from
/// sessions the full pool drops), then the best of two is timed.
/// </summary>
internal static class TokenFactoryBenchmark
{
    public static int Run(string[] args)
    {
        if (args.Length < 1 || args[0].StartsWith('-'))
        {
            Console.Error.WriteLine("usage: token-factory MODEL [--streams 1,2,4,8] [--tokens 32] [--threads 2] [--kv-cache f32|f16|bf16|q8|q4] [--tokenizer PATH] [--json-object | --grammar FILE] [--temperature T] [--top-k K] [--top-p P] [--min-p M] [--one-factory]");
            return 1;
        }
        string Option(string name, string fallback)
        {
            int i = Array.IndexOf(args, name);
            return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
        }
        var streams = Option("--streams", "1,2,4,8").Split(',').Select(int.Parse).ToArray();
        int tokens = int.Parse(Option("--tokens", "32")), threads = int.Parse(Option("--threads", "2"));
        string? tokenizer = Option("--tokenizer", "") is { Length: > 0 } t ? t : null;
        var kvCache = Enum.Parse<KvCacheType>(Option("--kv-cache", "f32"), ignoreCase: true);
        // --json-object: every request held to one JSON object (constrained decoding, as response_format json_object),
        // ending where it closes or at --tokens; what the mask costs the batch's one worker thread.
        bool json = args.Contains("--json-object");
        // --grammar FILE: every request held to a GBNF grammar (as serve's grammar), the same measure.
        string? grammar = Option("--grammar", "") is { Length: > 0 } g ? File.ReadAllText(g) : null;
        var sampling = new SamplingOptions
        {
            StopTokenIds = [], Temperature = double.Parse(Option("--temperature", "0")), TopK = int.Parse(Option("--top-k", "0")),
            TopP = double.Parse(Option("--top-p", "1")), MinP = double.Parse(Option("--min-p", "0")),
        };
        sampling.Validate();
        using var model = LoadedModel.Open(args[0], new ModelLoadOptions { TokenizerPath = tokenizer, Parallelism = new(threads), KvCache = kvCache });
        Console.WriteLine($"| streams | generated tokens | seconds | aggregate tokens/s | vs one stream | per stream tokens/s | largest batch | allocated KB/token | collections |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        double one = 0; // one stream's aggregate, when that level ran first
        foreach (int n in streams)
        {
            double best = double.MaxValue;
            int largest = 0;
            long allocated = 0;
            int collections = 0;
            long generatedTokens = 0;
            // --one-factory: the level's runs share a factory (and its pooled sessions), as a server's requests do.
            using var shared = args.Contains("--one-factory") ? new TokenFactory(model.Model, model.Tokenizer, maxBatch: n) : null;
            int runs = shared is null ? 3 : 4;
            for (int run = 0; run < runs; run++)
            {
                using var own = shared is null ? new TokenFactory(model.Model, model.Tokenizer, maxBatch: n) : null;
                var factory = shared ?? own!;
                var prompts = Enumerable.Range(0, n).Select(i => model.Tokenizer.Encode($"Story {i}: once upon a time", addBos: model.Tokenizer.BosId is not null)).ToArray();
                long bytes = GC.GetTotalAllocatedBytes(precise: true);
                int gcs = GC.CollectionCount(0);
                var clock = Stopwatch.StartNew();
                var pieces = json || grammar is not null ? TokenPieces.For(model.Tokenizer) : null;
                var all = prompts.Select(p => factory.SubmitAsync(p, tokens, sampling with { Seed = Array.IndexOf(prompts, p) },
                    constraint: json ? new JsonConstraint(pieces!, new JsonConstraint.JsonObject())
                        : grammar is not null ? new JsonConstraint(pieces!, new JsonConstraint.Grammar(grammar)) : null)).ToArray();
                Task.WaitAll(all);
                generatedTokens = all.Sum(t => t.Result.GeneratedTokens);
                if (run >= runs - 2 && clock.Elapsed.TotalSeconds < best)
                {
                    best = clock.Elapsed.TotalSeconds;
                    allocated = GC.GetTotalAllocatedBytes(precise: true) - bytes;
                    collections = GC.CollectionCount(0) - gcs;
                }
                largest = factory.LargestBatch;
            }
            long generated = json ? generatedTokens : (long)n * tokens;
            if (n == 1 && one == 0) one = generated / best;
            string ratio = one > 0 ? $"{generated / best / one:0.00}×" : "—";
            Console.WriteLine($"| {n} | {generated} | {best:0.000} | {generated / best:0.0} | {ratio} | {tokens / best:0.0} | {largest} | {allocated / 1024.0 / generated:0.0} | {collections} |");
        }
        return 0;
    }
}
