using System.Diagnostics;
using System.Text.RegularExpressions;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Serve;

/// <summary><c>nanoscale serve</c> as a process: listens on loopback, answers, and stops on SIGTERM with exit code 0.</summary>
public class ServeCliTests
{
    [Fact]
    public async Task ServeAnswersAndExitsCleanlyOnSigterm()
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "nanoscale.dll"), "serve", SharedData.Stories260K, "--port", "0" })
            start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        _ = process.StandardOutput.ReadToEndAsync();
        string? url = null, serving = null;
        var clock = Stopwatch.StartNew();
        while (url is null && clock.Elapsed < TimeSpan.FromSeconds(60))
        {
            var line = await process.StandardError.ReadLineAsync();
            if (line is null) break;
            var match = Regex.Match(line, @"on (http://127\.0\.0\.1:\d+)");
            if (match.Success) (url, serving) = (match.Groups[1].Value, line);
        }
        Assert.NotNull(url);
        // Without --kv-budget the KV caches are capped at half the memory available (the server queues rather than dies).
        Assert.Matches(@"KV budget \d+ MiB \(half the memory available\)", serving);
        using (var http = new HttpClient { BaseAddress = new Uri(url) })
        {
            Assert.Contains("\"status\":\"ok\"", await http.GetStringAsync("/health"));
            var answer = await http.PostAsync("/v1/completions", new StringContent("""{"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}"""));
            Assert.Contains("text_completion", await answer.Content.ReadAsStringAsync());
        }
        using (var kill = Process.Start(new ProcessStartInfo("kill", ["-TERM", process.Id.ToString()]) { UseShellExecute = false })!)
            kill.WaitForExit();
        Assert.True(process.WaitForExit(TimeSpan.FromSeconds(30)), "serve stopped after SIGTERM");
        Assert.Equal(0, process.ExitCode);
    }

    /// <summary>The default KV budget is half the memory available less the model's files, at least 64 MiB.</summary>
    [Fact]
    public void TheDefaultKvBudgetIsHalfTheAvailableMemory()
    {
        long budget = Nanoscale.Cli.Commands.ServeCommand.DefaultKvBudget(SharedData.Stories260K);
        long total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        Assert.InRange(budget, 64L << 20, total / 2);
        Assert.True(Nanoscale.Cli.Commands.ServeCommand.DefaultKvBudget("/no/such/model") >= budget, "a model's files come off the available memory");
    }
}
