using System.Diagnostics;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;

namespace Nanoscale.Benchmarks;

/// <summary>
/// What prompt caching saves a chat client: a conversation of several turns (a long system message, short user
/// messages, greedy replies), each turn sent whole as chat clients do, through <c>serve</c>'s service with the cache on
/// and off (one at a time, each after a warm-up). Per turn: prompt tokens, the tokens the cache held, and the time to
/// the first text and to the whole reply; the replies of the two runs are compared (they should be equal). Then a
/// burst: <c>--burst N</c> requests at once with the same system message (one application's users), cache off and on,
/// then a second wave of N (the same application's next users, the system message's cache warm), optionally under a KV
/// budget (<c>--kv-budget SIZE</c>): per wave the prompt tokens run, the most requests running at once, the time to the
/// first text, and the KV cache kept after it (with the cache on, the system message's once, shared).
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- prompt-cache MODEL [--turns 6] [--reply 32] [--system-chars 2000] [--threads 2] [--chat-template FILE] [--burst 8] [--kv-budget SIZE]</code>
/// </summary>
internal static class PromptCacheBenchmark
{
    private static readonly string[] Questions =
    [
        "Tell me a short story about a cat.", "Why was the cat sad?", "What did the cat's friend do next?",
        "Give the story a happy ending.", "Now summarise it in one sentence.", "Who was your favourite character?",
        "Write a title for it.", "Thank you! One more: what did they eat?",
    ];

    public static int Run(string[] args)
    {
        if (args.Length < 1 || args[0].StartsWith('-'))
        {
            Console.Error.WriteLine("usage: prompt-cache MODEL [--turns 6] [--reply 32] [--system-chars 2000] [--threads 2] [--chat-template FILE] [--tokenizer T] [--burst 8] [--kv-budget SIZE]");
            return 1;
        }
        string Option(string name, string fallback)
        {
            int i = Array.IndexOf(args, name);
            return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
        }
        int turns = Math.Clamp(int.Parse(Option("--turns", "6")), 1, Questions.Length);
        int reply = int.Parse(Option("--reply", "32")), threads = int.Parse(Option("--threads", "2"));
        int systemChars = int.Parse(Option("--system-chars", "2000"));
        string? template = Option("--chat-template", "") is { Length: > 0 } t ? t : null;
        string? tokenizer = Option("--tokenizer", "") is { Length: > 0 } k ? k : null;
        // A long system message (instructions, a document to talk about): real text, so its tokens are typical.
        string text = File.ReadAllText(LosslessData.FindShared("text", "tinystories-sample.txt"));
        string system = "You are a storyteller. Here are stories in the style to follow:\n" + text[..Math.Min(systemChars, text.Length)];

        var runs = new Dictionary<bool, List<(int Prompt, int Cached, double First, double Whole, string Reply)>>();
        foreach (bool cache in new[] { false, true })
        {
            using var service = new CompletionService(LoadedModel.Open(args[0], new ModelLoadOptions { TokenizerPath = tokenizer, Parallelism = new(threads) }),
                "bench", chatTemplateFile: template, promptCache: cache);
            service.WarmUp();
            var rows = new List<(int, int, double, double, string)>();
            List<ChatMessage> conversation = [new("system", system)];
            for (int turn = 0; turn < turns; turn++)
            {
                conversation.Add(new("user", Questions[turn]));
                var clock = Stopwatch.StartNew();
                double first = double.NaN;
                var outcome = service.CompleteAsync(new CompletionRequest { Messages = conversation, MaxTokens = reply },
                    _ => { if (double.IsNaN(first)) first = clock.Elapsed.TotalSeconds; }).GetAwaiter().GetResult();
                double whole = clock.Elapsed.TotalSeconds;
                rows.Add((outcome.PromptTokens, outcome.CachedPromptTokens, double.IsNaN(first) ? whole : first, whole, outcome.Text));
                conversation.Add(new("assistant", outcome.Text));
            }
            runs[cache] = rows;
        }
        Console.WriteLine("| turn | prompt tokens | cached tokens | first text, no cache ms | first text, cache ms | reply, no cache ms | reply, cache ms | same reply |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|:---:|");
        double offFirst = 0, onFirst = 0;
        for (int turn = 0; turn < turns; turn++)
        {
            var (off, on) = (runs[false][turn], runs[true][turn]);
            offFirst += off.First;
            onFirst += on.First;
            Console.WriteLine($"| {turn + 1} | {on.Prompt} | {on.Cached} | {off.First * 1000:0} | {on.First * 1000:0} | {off.Whole * 1000:0} | {on.Whole * 1000:0} | {(off.Reply == on.Reply ? "yes" : "no")} |");
        }
        Console.WriteLine($"\nfirst text, all turns: {offFirst:0.00} s without the cache, {onFirst:0.00} s with it ({offFirst / onFirst:0.0}×)");

        // A burst: N users of one application (the same system message) ask at once; the first runs the shared
        // beginning, the others read it instead of running it again. Then a second wave: the beginning is kept.
        int burst = int.Parse(Option("--burst", "8"));
        if (burst < 2) return 0;
        long? budget = Option("--kv-budget", "") is { Length: > 0 } b ? ModelFolder.ParseShardSize(b, "--kv-budget") : null;
        Console.WriteLine($"\n{burst} requests at once sharing the system message ({reply} new tokens each), twice{(budget is { } x ? $", KV budget {x / 1048576.0:0.#} MiB" : "")}:\n");
        Console.WriteLine("| prompt cache | wave | prompt tokens run | most running at once | first text p50 ms | first text max ms | all done s | KV kept after, MiB | of it shared, MiB |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (bool cache in new[] { false, true })
        {
            using var service = new CompletionService(LoadedModel.Open(args[0], new ModelLoadOptions { TokenizerPath = tokenizer, Parallelism = new(threads) }),
                "bench", maxBatch: burst, kvBudgetBytes: budget, chatTemplateFile: template, promptCache: cache);
            service.WarmUp();
            for (int wave = 1; wave <= 2; wave++)
            {
                var clock = Stopwatch.StartNew();
                var firsts = new double[burst];
                int most = 0;
                var outcomes = Task.WhenAll(Enumerable.Range(0, burst).Select(i =>
                {
                    firsts[i] = double.NaN;
                    string question = Questions[(i + (wave - 1) * burst) % Questions.Length] + (wave == 2 ? " Please." : "");
                    return service.CompleteAsync(new CompletionRequest { Messages = [new("system", system), new("user", question)], MaxTokens = reply },
                        _ =>
                        {
                            if (double.IsNaN(firsts[i])) firsts[i] = clock.Elapsed.TotalSeconds;
                            lock (firsts) most = Math.Max(most, service.Running);
                        });
                })).GetAwaiter().GetResult();
                double done = clock.Elapsed.TotalSeconds;
                var sorted = firsts.Select(f => double.IsNaN(f) ? done : f).Order().ToArray();
                long run = outcomes.Sum(o => (long)o.PromptTokens - o.CachedPromptTokens);
                Console.WriteLine($"| {(cache ? "on" : "off")} | {wave} | {run} | {most} | {sorted[burst / 2] * 1000:0} | {sorted[^1] * 1000:0} | {done:0.00} | " +
                                  $"{service.PooledKvBytes / 1048576.0:0.0} | {service.SharedPrefixes.Bytes / 1048576.0:0.0} |");
            }
        }
        return 0;
    }
}
