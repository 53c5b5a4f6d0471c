using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Nanoscale.Benchmarks;

/// <summary>
/// A small load generator for <c>nanoscale serve</c> (issue 15's benchmark): starts the server on a free loopback port
/// as its own process, then for each concurrency level runs that many streaming completions at once (greedy, a fixed
/// number of tokens each) and reports the aggregate generated tokens/s and the p50/p99 time to the first streamed text.
/// Loopback only, bounded in count and time.
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- serve-load MODEL [--streams 1,4,16] [--tokens 32] [--max-batch 16] [--tokenizer T]</code>
/// </summary>
internal static class ServeLoadBenchmark
{
    public static int Run(string[] args)
    {
        string Option(string name, string fallback)
        {
            int i = Array.IndexOf(args, name);
            return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
        }
        var streams = Option("--streams", "1,4,16").Split(',').Select(int.Parse).ToArray();
        int tokens = int.Parse(Option("--tokens", "32"));
        var cli = Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "src", "Nanoscale.Cli", "bin", "Release", "net10.0", "nanoscale.dll");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in new[] { Path.GetFullPath(cli), "serve", args[0], "--port", "0", "--max-batch", Option("--max-batch", "16"), "--max-queue", "256" })
            start.ArgumentList.Add(a);
        if (Option("--tokenizer", "") is { Length: > 0 } tokenizer) { start.ArgumentList.Add("--tokenizer"); start.ArgumentList.Add(tokenizer); }
        using var server = Process.Start(start)!;
        _ = server.StandardOutput.ReadToEndAsync();
        string? url = null;
        while (url is null && server.StandardError.ReadLine() is { } line)
            if (Regex.Match(line, @"on (http://127\.0\.0\.1:\d+)") is { Success: true } m) url = m.Groups[1].Value;
        if (url is null) { Console.Error.WriteLine("the server did not start"); return 1; }
        using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromMinutes(10) };
        Console.WriteLine("| streams | generated tokens | seconds | aggregate tokens/s | TTFT p50 ms | TTFT p99 ms |");
        Console.WriteLine("|---:|---:|---:|---:|---:|---:|");
        try
        {
            Stream(http, 1, tokens).GetAwaiter().GetResult(); // warm-up
            foreach (int n in streams)
            {
                var clock = Stopwatch.StartNew();
                var results = Task.WhenAll(Enumerable.Range(0, n).Select(i => Stream(http, i, tokens))).GetAwaiter().GetResult();
                double seconds = clock.Elapsed.TotalSeconds;
                var ttft = results.Select(r => r.FirstText).Order().ToArray();
                long generated = results.Sum(r => (long)r.Tokens);
                Console.WriteLine($"| {n} | {generated} | {seconds:0.00} | {generated / seconds:0.0} | {Percentile(ttft, 0.5):0} | {Percentile(ttft, 0.99):0} |");
            }
        }
        finally
        {
            server.Kill(entireProcessTree: true);
        }
        return 0;
    }

    private static double Percentile(double[] sorted, double p) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(p * sorted.Length) - 1)];

    /// <summary>One streaming completion: milliseconds to its first text chunk, and its completion tokens.</summary>
    private static async Task<(double FirstText, int Tokens)> Stream(HttpClient http, int i, int tokens)
    {
        var body = JsonSerializer.Serialize(new { prompt = $"Story {i}: once upon a time", max_tokens = tokens, temperature = 0, stream = true });
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
            using var chunk = JsonDocument.Parse(line["data: ".Length..]);
            if (chunk.RootElement.TryGetProperty("usage", out var usage)) count = usage.GetProperty("completion_tokens").GetInt32();
        }
        return (first, count);
    }
}
