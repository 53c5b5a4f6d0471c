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

    /// <summary><c>--api-key-file</c>: its keys (one a line, comments and blank lines skipped) are accepted beside
    /// <c>--api-key</c>'s, any other key is a 401; a missing file or one without keys fails at once, naming it.</summary>
    [Fact]
    public async Task ApiKeysComeFromAFileToo()
    {
        using var dir = new TempDir();
        var file = dir.File("keys.txt");
        File.WriteAllText(file, "# team keys\nalpha\n\n  beta  \n");
        Assert.Equal(["alpha", "beta"], Nanoscale.Cli.Commands.ServeCommand.ReadApiKeys(file));
        using var service = new Nanoscale.Pipeline.CompletionService(Nanoscale.Pipeline.LoadedModel.Open(SharedData.Stories260K), "stories260K");
        await using var app = Nanoscale.Cli.Serve.OpenAiServer.Build(service,
            new Nanoscale.Cli.Serve.ServeOptions("127.0.0.1", 0, "gamma", MoreApiKeys: Nanoscale.Cli.Commands.ServeCommand.ReadApiKeys(file)));
        await app.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(app.Urls.Single()) };
        foreach (var (key, status) in new[] { ("alpha", 200), ("beta", 200), ("gamma", 200), ("delta", 401), ("alph", 401), ("", 401) })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
            if (key.Length > 0) request.Headers.Add("Authorization", "Bearer " + key);
            Assert.Equal(status, (int)(await http.SendAsync(request)).StatusCode);
        }
        await app.StopAsync();

        File.WriteAllText(file, "# nothing\n\n");
        foreach (var bad in new[] { file, dir.File("missing.txt") })
        {
            var result = CliProcess.Run("serve", SharedData.Stories260K, "--port", "0", "--api-key-file", bad);
            Assert.Equal(1, result.ExitCode);
            Assert.Contains(bad, result.Stderr);
        }
    }
}
