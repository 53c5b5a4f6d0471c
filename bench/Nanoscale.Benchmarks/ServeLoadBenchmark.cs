using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Nanoscale.Benchmarks;

/// <summary>
/// A small load generator for <c>nanoscale serve</c> (issue 15's benchmark): starts the server on a free loopback port
/// as its own process, then for each concurrency level runs that many streaming completions at once (greedy, a fixed
/// number of tokens each; or sampled with <c>--temperature T [--top-p P]</c>, seeded per stream) and reports the aggregate generated tokens/s and the p50/p99 time to the first streamed text.
/// With <c>--disconnect F</c> a fraction F of each level's clients go away after their first streamed text; after
/// every level the server's <c>/health</c> must come back to nothing in service and no KV cache reserved (the seconds it
/// took are reported), and the server's peak resident memory is reported beside the model's size and the KV budget.
/// Loopback only, bounded in count and time.
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- serve-load MODEL [--streams 1,4,16] [--tokens 32] [--max-batch 16] [--tokenizer T] [--disconnect 0.25] [--kv-budget 512MB] [--kv-cache f16] [--no-prompt-cache] [--temperature T] [--top-p P]</code>
/// </summary>
internal static class ServeLoadBenchmark
{
    public static int Run(string[] args)
    {
        if (args.Length < 1 || args[0].StartsWith('-'))
        {
            Console.Error.WriteLine("usage: serve-load MODEL [--streams 1,4,16] [--tokens 32] [--max-batch 16] [--disconnect FRACTION] [--kv-budget SIZE] [--kv-cache T] [--no-prompt-cache] [--temperature T] [--top-p P] (needs the CLI built in Release)");
            return 1;
        }
        string Option(string name, string fallback)
        {
            int i = Array.IndexOf(args, name);
            return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
        }
        var streams = Option("--streams", "1,4,16").Split(',').Select(int.Parse).ToArray();
        int tokens = int.Parse(Option("--tokens", "32"));
        var invariant = System.Globalization.CultureInfo.InvariantCulture;
        s_temperature = double.Parse(Option("--temperature", "0"), invariant);
        s_topP = double.Parse(Option("--top-p", "1"), invariant);
        var cli = Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "src", "Nanoscale.Cli", "bin", "Release", "net10.0", "nanoscale.dll");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        double disconnect = double.Parse(Option("--disconnect", "0"), System.Globalization.CultureInfo.InvariantCulture);
        foreach (var a in new[] { Path.GetFullPath(cli), "serve", args[0], "--port", "0", "--max-batch", Option("--max-batch", "16"), "--max-queue", "256" })
            start.ArgumentList.Add(a);
        if (Option("--kv-budget", "") is { Length: > 0 } kvBudget) { start.ArgumentList.Add("--kv-budget"); start.ArgumentList.Add(kvBudget); }
        if (Option("--kv-cache", "") is { Length: > 0 } kvCache) { start.ArgumentList.Add("--kv-cache"); start.ArgumentList.Add(kvCache); }
        if (Option("--tokenizer", "") is { Length: > 0 } tokenizer) { start.ArgumentList.Add("--tokenizer"); start.ArgumentList.Add(tokenizer); }
        // Each level's prompts are the warm-up's and the last level's: with the prompt cache they run from its kept caches.
        if (args.Contains("--no-prompt-cache")) start.ArgumentList.Add("--no-prompt-cache");
        using var server = Process.Start(start)!;
        _ = server.StandardOutput.ReadToEndAsync();
        string? url = null;
        while (url is null && server.StandardError.ReadLine() is { } line)
            if (Regex.Match(line, @"on (http://127\.0\.0\.1:\d+)") is { Success: true } m) url = m.Groups[1].Value;
        if (url is null) { Console.Error.WriteLine("the server did not start"); return 1; }
        using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromMinutes(10) };
        Console.WriteLine("| streams | disconnected | generated tokens | seconds | aggregate tokens/s | vs one stream | TTFT p50 ms | TTFT p99 ms | idle again after s |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        double one = 0; // one stream's aggregate, when that level ran first (no one leaving)
        try
        {
            // Warm-up: the server's code paths for one and for several streams reach the JIT's final tier first.
            for (int round = 0; round < 3; round++)
                Task.WhenAll(Enumerable.Range(0, 1 + 3 * round).Select(i => Stream(http, i, tokens))).GetAwaiter().GetResult();
            long idleRss = Rss(server.Id);
            foreach (int n in streams)
            {
                var clock = Stopwatch.StartNew();
                int leaving = (int)Math.Round(n * disconnect);
                var results = Task.WhenAll(Enumerable.Range(0, n).Select(i => Stream(http, i, tokens, leave: i < leaving))).GetAwaiter().GetResult();
                double seconds = clock.Elapsed.TotalSeconds;
                var ttft = results.Select(r => r.FirstText).Order().ToArray();
                long generated = results.Sum(r => (long)r.Tokens);
                double idle = WaitIdle(http);
                if (n == 1 && leaving == 0 && one == 0) one = generated / seconds;
                string ratio = one > 0 ? $"{generated / seconds / one:0.00}×" : "—";
                Console.WriteLine($"| {n} | {leaving} | {generated} | {seconds:0.00} | {generated / seconds:0.0} | {ratio} | {Percentile(ttft, 0.5):0} | {Percentile(ttft, 0.99):0} | " +
                                  (idle < 0 ? "**not idle after 60 s**" : $"{idle:0.00}") + " |");
                if (idle < 0) return 1;
            }
            Console.WriteLine();
            Console.WriteLine($"server resident memory {idleRss / 1048576.0:0} MiB after the warm-up, peak {PeakRss(server.Id) / 1048576.0:0} MiB; model files {ModelBytes(args[0]) / 1048576.0:0} MiB" +
                              (Option("--kv-budget", "") is { Length: > 0 } b ? $"; KV budget {b}" : ""));
        }
        finally
        {
            server.Kill(entireProcessTree: true);
        }
        return 0;
    }

    /// <summary>Seconds until the server's /health says nothing is in service and no KV cache is reserved; −1 after 60 s.</summary>
    private static double WaitIdle(HttpClient http)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(60))
        {
            using var health = JsonDocument.Parse(http.GetStringAsync("/health").GetAwaiter().GetResult());
            if (health.RootElement.GetProperty("in_service").GetInt32() == 0 && health.RootElement.GetProperty("kv_reserved_bytes").GetInt64() == 0)
                return clock.Elapsed.TotalSeconds;
            Thread.Sleep(20);
        }
        return -1;
    }

    /// <summary>VmHWM (peak resident memory) of a process (Linux), in bytes; 0 where it cannot be read.</summary>
    private static long PeakRss(int pid) => Status(pid, "VmHWM:");

    /// <summary>VmRSS (resident memory now) of a process (Linux), in bytes; 0 where it cannot be read.</summary>
    private static long Rss(int pid) => Status(pid, "VmRSS:");

    private static long Status(int pid, string key)
    {
        try
        {
            var line = File.ReadLines($"/proc/{pid}/status").FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal));
            return line is null ? 0 : long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { return 0; }
    }

    private static long ModelBytes(string path) => Directory.Exists(path)
        ? new DirectoryInfo(path).EnumerateFiles("*.safetensors").Sum(f => f.Length)
        : new FileInfo(path).Length;

    private static double Percentile(double[] sorted, double p) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];

    /// <summary>One streaming completion: milliseconds to its first text chunk, and its completion tokens (a client that
    /// leaves after its first chunk counts the one token it saw).</summary>
    private static double s_temperature, s_topP = 1;

    private static async Task<(double FirstText, int Tokens)> Stream(HttpClient http, int i, int tokens, bool leave = false)
    {
        var body = JsonSerializer.Serialize(new { prompt = $"Story {i}: once upon a time", max_tokens = tokens, temperature = s_temperature, top_p = s_topP, seed = i, stream = true });
        var clock = Stopwatch.StartNew();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        double first = -1;
        int count = 0;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: {", StringComparison.Ordinal)) continue;
            if (first < 0) first = clock.Elapsed.TotalMilliseconds;
            if (leave) return (first, 1); // the response is disposed unread: the connection closes mid-stream
            using var chunk = JsonDocument.Parse(line["data: ".Length..]);
            if (chunk.RootElement.TryGetProperty("usage", out var usage)) count = usage.GetProperty("completion_tokens").GetInt32();
        }
        return (first, count);
    }
}
