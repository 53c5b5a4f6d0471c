using System.Diagnostics;

namespace Nanoscale.Tests.Support;

/// <summary>Runs a script of the repository's <c>tools/</c> folder with python3 and returns its standard output.</summary>
internal static class PythonTool
{
    public static string Run(string script, params string[] args)
    {
        var start = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        start.ArgumentList.Add(Path.Combine(Architecture.ArchitectureRules.RepositoryRoot(), "tools", script));
        foreach (var a in args) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"tools/{script} failed: {stderr.Result}");
        return stdout;
    }
}
