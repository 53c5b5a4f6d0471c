using System.Diagnostics;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Cli;

/// <summary>
/// A compression stopped from outside never leaves a complete-looking output, and never leaves its temporaries for
/// long: SIGTERM (timeout, docker stop, Slurm) cancels like Ctrl-C and cleans up; after kill -9 the next run in the
/// folder, or <c>nanoscale clean</c>, removes what the dead process left.
/// </summary>
public class SignalTests
{
    /// <summary>Starts a compression slow enough to be interrupted (CALDERA on GPT-2's attention weights) and returns
    /// once its spill file exists, i.e. it is writing.</summary>
    private static (Process Process, Task<string> Stderr) StartCompression(string output)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "nanoscale.dll"), "compress", SharedData.Gpt2Attn,
                     "-f", "caldera:rank=2,iters=2", "-o", output, "--no-error", "--threads", "1" })
            start.ArgumentList.Add(a);
        var process = Process.Start(start)!;
        process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        var folder = Path.GetDirectoryName(output)!;
        var clock = Stopwatch.StartNew();
        while (!Directory.EnumerateFiles(folder, "*.spill").Any())
        {
            if (process.HasExited || clock.Elapsed > TimeSpan.FromSeconds(60))
                throw new Xunit.Sdk.XunitException($"compression did not start writing (exited: {process.HasExited})");
            Thread.Sleep(50);
        }
        Thread.Sleep(300); // well inside the first tensors
        return (process, stderr);
    }

    private static void Signal(Process process, string signal)
    {
        using var kill = Process.Start(new ProcessStartInfo("kill", [$"-{signal}", process.Id.ToString()]) { UseShellExecute = false })!;
        kill.WaitForExit();
    }

    [Fact]
    public async Task SigtermCancelsAndLeavesNothing()
    {
        using var dir = new TempDir();
        var output = dir.File("out.safetensors");
        var (process, stderr) = StartCompression(output);
        using (process)
        {
            Signal(process, "TERM");
            Assert.True(process.WaitForExit(TimeSpan.FromSeconds(60)), "the process ended after SIGTERM");
            Assert.Equal(143, process.ExitCode);
        }
        Assert.Contains("error: cancelled", await stderr); // handled: the work was cancelled, not the process killed
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void AfterKillNineTheLeftoversAreCleaned()
    {
        using var dir = new TempDir();
        var output = dir.File("out.safetensors");
        var (process, _) = StartCompression(output);
        using (process)
        {
            process.Kill();
            process.WaitForExit();
        }
        Assert.False(File.Exists(output));
        var left = Directory.GetFiles(dir.Path);
        Assert.Contains(left, f => f.EndsWith(".spill", StringComparison.Ordinal)); // the dead process could not clean up

        var clean = CliProcess.Run("clean", dir.Path, "--json");
        Assert.Equal(0, clean.ExitCode);
        var removed = clean.Json().GetProperty("removed").EnumerateArray().Select(e => e.GetString()!).ToList();
        Assert.Equal(left.Order(), removed.Where(p => p.StartsWith(dir.Path, StringComparison.Ordinal)).Order());
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    [Fact]
    public void TheNextRunInTheFolderRemovesADeadRunsTemporaries()
    {
        using var dir = new TempDir();
        // A leftover named as a temporary of a process that no longer exists, and one of this (live) process.
        var dead = dir.File(".out.safetensors.ns999999-0123456789abcdef0123456789abcdef.partial");
        var live = dir.File($".other.safetensors.ns{Environment.ProcessId}-0123456789abcdef0123456789abcdef.partial");
        File.WriteAllText(dead, "half a file");
        File.WriteAllText(live, "still being written");
        var result = CliProcess.Run("compress", SharedData.Stories260K, "-f", "mxfp4", "-o", dir.File("out.safetensors"), "--no-error");
        Assert.Equal(0, result.ExitCode);
        Assert.False(File.Exists(dead));
        Assert.True(File.Exists(live));
    }
}
