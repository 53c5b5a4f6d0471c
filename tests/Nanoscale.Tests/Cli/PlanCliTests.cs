using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Cli;

public class PlanCliTests
{
    [Fact]
    public void PlanPrintsAnAllocationPerBudgetAsJson()
    {
        var result = CliProcess.Run("plan", SharedData.Stories260K, "--budget", "3.6bpw,4.2bpw", "--candidates", "nxfp3,nxfp4,nxfp5", "--json");
        Assert.Equal(0, result.ExitCode);
        var json = result.Json();
        var plans = json.GetProperty("plans").EnumerateArray().ToList();
        Assert.Equal(2, plans.Count);
        Assert.True(plans[0].GetProperty("bits_per_weight").GetDouble() <= 3.6);
        Assert.True(plans[1].GetProperty("bits_per_weight").GetDouble() <= 4.2);
        Assert.True(plans[1].GetProperty("predicted_cost").GetDouble() < plans[0].GetProperty("predicted_cost").GetDouble());
        Assert.Equal(35, plans[0].GetProperty("tensors").GetArrayLength());
        Assert.Contains("H = I", json.GetProperty("cost").GetString());
    }

    [Fact]
    public void ABudgetOutOfReachNamesTheAchievableRange()
    {
        var result = CliProcess.Run("plan", SharedData.Stories260K, "--budget", "2bpw", "--candidates", "nxfp3,nxfp4");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--budget: 2bpw is below the smallest achievable size", result.Stderr);
        Assert.Contains("achievable with these candidates: 3.342–4.37 bpw", result.Stderr);
        var unknown = CliProcess.Run("plan", SharedData.Stories260K, "--budget", "4bpw", "--candidates", "nxfp4,nope");
        Assert.Equal(1, unknown.ExitCode);
        Assert.Contains("nope", unknown.Stderr);
    }

    [Fact]
    public void CompressFitsABudgetFromTheCommandLine()
    {
        using var dir = new TempDir();
        var output = dir.File("fit.safetensors");
        var result = CliProcess.Run("compress", SharedData.Stories260K, "--budget", "250KB", "--candidates", "nxfp3,nxfp4,nxfp5", "-o", output, "--json");
        Assert.Equal(0, result.ExitCode);
        var json = result.Json();
        Assert.Equal("mixed", json.GetProperty("format").GetString());
        long stored = json.GetProperty("tensors").EnumerateArray().Sum(t => t.GetProperty("stored_bytes").GetInt64());
        Assert.True(stored <= 250_000, $"{stored} bytes");
        var none = CliProcess.Run("compress", SharedData.Stories260K, "-o", dir.File("none.safetensors"));
        Assert.Equal(1, none.ExitCode);
        Assert.Contains("--format", none.Stderr);
    }
}
