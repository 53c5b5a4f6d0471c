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

    /// <summary>A plan written once (<c>plan --json</c>) compresses as the budget does, and splits into units that merge
    /// into the same bytes (issue 18: a budget with --shard).</summary>
    [Fact]
    public void APlanFileCompressesAsTheBudgetDoesAndSplitsIntoUnits()
    {
        using var dir = new TempDir();
        string[] candidates = ["--candidates", "nxfp3,nxfp4,mxfp6"];
        var plan = CliProcess.Run(["plan", SharedData.Stories260K, "--budget", "4.2bpw", .. candidates, "--json"]);
        Assert.Equal(0, plan.ExitCode);
        var planFile = dir.File("plan.json");
        File.WriteAllText(planFile, plan.Stdout);
        var formats = plan.Json().GetProperty("plans")[0].GetProperty("tensors").EnumerateArray().Select(t => t.GetProperty("format").GetString()).Distinct().ToList();
        Assert.True(formats.Count > 1, "the plan mixes formats");

        Assert.Equal(0, CliProcess.Run(["compress", SharedData.Stories260K, "--budget", "4.2bpw", .. candidates, "-o", dir.File("budget"), "--no-error"]).ExitCode);
        Assert.Equal(0, CliProcess.Run("compress", SharedData.Stories260K, "--plan", planFile, "-o", dir.File("planned"), "--no-error").ExitCode);
        FileAssert.SameBytes(dir.File("budget"), dir.File("planned"));

        for (int i = 0; i < 3; i++)
            Assert.Equal(0, CliProcess.Run("compress", SharedData.Stories260K, "--plan", planFile, "--shard", $"{i}/3", "-o", dir.File("units"), "--no-error").ExitCode);
        var merge = CliProcess.Run("merge", dir.File("units"), "-o", dir.File("merged"));
        Assert.True(merge.ExitCode == 0, merge.Stderr);
        FileAssert.SameBytes(dir.File("planned"), dir.File("merged"));

        // A budget itself is still not split, and says how to split it.
        var split = CliProcess.Run(["compress", SharedData.Stories260K, "--budget", "4.2bpw", "--shard", "0/2", "-o", dir.File("u2")]);
        Assert.Equal(1, split.ExitCode);
        Assert.Contains("give it to every unit as --plan", split.Stderr);
    }

    [Fact]
    public void ABadPlanFileIsALocatedError()
    {
        using var dir = new TempDir();
        var two = CliProcess.Run("plan", SharedData.Stories260K, "--budget", "3.6bpw,4.2bpw", "--candidates", "nxfp3,nxfp4,nxfp5", "--json");
        File.WriteAllText(dir.File("two.json"), two.Stdout);
        var several = CliProcess.Run("compress", SharedData.Stories260K, "--plan", dir.File("two.json"), "-o", dir.File("a"));
        Assert.Equal(1, several.ExitCode);
        Assert.Contains("holds 2 plans (3.6bpw, 4.2bpw)", several.Stderr);

        File.WriteAllText(dir.File("other.json"), """{"plans":[{"budget":"4bpw","tensors":[{"name":"model.layers.0.mlp.nope.weight","format":"nxfp4"}]}]}""");
        var other = CliProcess.Run("compress", SharedData.Stories260K, "--plan", dir.File("other.json"), "-o", dir.File("b"));
        Assert.Equal(1, other.ExitCode);
        Assert.Contains("names the tensor model.layers.0.mlp.nope.weight", other.Stderr);

        File.WriteAllText(dir.File("spec.json"), """{"plans":[{"budget":"4bpw","tensors":[{"name":"model.layers.0.mlp.up_proj.weight","format":"nxfp99"}]}]}""");
        var spec = CliProcess.Run("compress", SharedData.Stories260K, "--plan", dir.File("spec.json"), "-o", dir.File("c"));
        Assert.Equal(1, spec.ExitCode);
        Assert.Contains("nxfp99", spec.Stderr);

        var both = CliProcess.Run("compress", SharedData.Stories260K, "--plan", dir.File("spec.json"), "-f", "nxfp4", "-o", dir.File("d"));
        Assert.Equal(1, both.ExitCode);
        Assert.Contains("one of them", both.Stderr);
        Assert.Empty(Directory.GetDirectories(dir.Path));
    }
}
