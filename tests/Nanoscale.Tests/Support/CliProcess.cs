using System.Diagnostics;
using System.Text.Json;

namespace Nanoscale.Tests.Support;

/// <summary>Runs the real <c>nanoscale</c> executable (copied beside the tests) and captures its streams.</summary>
internal static class CliProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public JsonElement Json()
        {
            using var document = JsonDocument.Parse(Stdout); // throws unless stdout is exactly one JSON value
            return document.RootElement.Clone();
        }
    }

    public static Result Run(params string[] args) => RunWithInput(null, args);

    /// <summary>As <see cref="Run"/>, with <paramref name="input"/> on standard input (then closed).</summary>
    public static Result RunWithInput(string? input, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = input is not null,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "nanoscale.dll"));
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        if (input is not null)
        {
            process.StandardInput.Write(input);
            process.StandardInput.Close();
        }
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"nanoscale {string.Join(' ', args)} did not finish in 5 minutes");
        }
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }
}
