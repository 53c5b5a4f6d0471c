using System.Diagnostics;
using System.Text.Json;
using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Pipeline;

public class ShardedCompressionTests
{
    private static void RunUnits(string model, string units, string format, int count, string? tokenizer = null)
    {
        for (int i = 0; i < count; i++)
            CompressionRun.Run(model, units, new CompressionRequest { Format = format, Shard = new ShardUnit(i, count), MeasureError = false, TokenizerPath = tokenizer });
    }

    [Theory]
    [InlineData("mxfp4", "folder")]
    [InlineData("lossless", "folder")]
    [InlineData("nxfp4:entropy=rans", "model.safetensors")]
    public void FourUnitsAndAMergeWriteWhatOneMachineWrites(string format, string output)
    {
        using var dir = new TempDir();
        var single = dir.File("single-" + output);
        CompressionRun.Run(SharedData.Stories260K, single, new CompressionRequest { Format = format, MeasureError = false });
        var units = dir.File("units");
        RunUnits(SharedData.Stories260K, units, format, 4);
        Assert.Equal(4, Directory.GetDirectories(units).Length);
        var merged = ShardedCompression.Merge(units, dir.File("merged-" + output));
        FileAssert.SameBytes(single, dir.File("merged-" + output));
        Assert.Equal(4, merged.Units.Count);
        Assert.NotEmpty(merged.Result.Errors);
    }

    [Fact]
    public void AShardedModelFolderOfRealWeightsMergesByteIdentically()
    {
        // GPT-2's attention weights, BF16, into 3 output shards: the shard boundaries fall where one machine puts them.
        using var dir = new TempDir();
        var request = new CompressionRequest { Format = "nvfp4", MeasureError = false, MaxShardBytes = 2_000_000 };
        CompressionRun.Run(SharedData.Gpt2Attn, dir.File("single"), request);
        for (int i = 0; i < 3; i++) CompressionRun.Run(SharedData.Gpt2Attn, dir.File("units"), request with { Shard = new ShardUnit(i, 3) });
        ShardedCompression.Merge(dir.File("units"), dir.File("merged"), measureError: false);
        Assert.True(Directory.GetFiles(dir.File("single"), "model-*.safetensors").Length > 1);
        FileAssert.SameBytes(dir.File("single"), dir.File("merged"));
    }

    [Fact]
    public void UnitsAreBalancedByWorkNotByCount()
    {
        using var source = CheckpointLoader.Open(SharedData.Gpt2Attn);
        var selected = source.Tensors.Where(TensorSelection.Default.Selects).ToList();
        foreach (var spec in new[] { "mxfp4", "caldera:rank=8" })
        {
            var codec = CodecRegistry.Create(spec);
            var assignment = ShardedCompression.Assign(selected, codec, 4);
            Assert.Equal(selected.Count, assignment.Count);
            var load = Enumerable.Range(0, 4).Select(u => selected.Where(t => assignment[t.Name] == u).Sum(t => ShardedCompression.EstimatedWork(codec, t))).ToList();
            Assert.True(load.Max() <= 1.2 * load.Average(), $"{spec}: loads {string.Join(", ", load)}");
            Assert.Equal(assignment, ShardedCompression.Assign([.. selected.AsEnumerable().Reverse()], codec, 4)); // order of the input does not matter
        }
    }

    [Fact]
    public void MergeRefusesAMissingUnitNamingIt()
    {
        using var dir = new TempDir();
        var units = dir.File("units");
        RunUnits(SharedData.Stories260K, units, "mxfp4", 4);
        Directory.Delete(Path.Combine(units, "part-2-of-4"), true);
        var error = Assert.Throws<InputException>(() => ShardedCompression.Merge(units, dir.File("out")));
        Assert.Contains("part-2-of-4 missing", error.Message);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    [Fact]
    public void MergeRefusesADuplicatedUnit()
    {
        using var dir = new TempDir();
        var units = dir.File("units");
        RunUnits(SharedData.Stories260K, units, "mxfp4", 4);
        CopyFolder(Path.Combine(units, "part-1-of-4"), Path.Combine(units, "again"));
        var error = Assert.Throws<InputException>(() => ShardedCompression.Merge(units, dir.File("out")));
        Assert.Contains("unit 1 of 4 is there twice", error.Message);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    [Fact]
    public void MergeRefusesADamagedUnitBeforeWritingAnything()
    {
        using var dir = new TempDir();
        var units = dir.File("units");
        RunUnits(SharedData.Stories260K, units, "mxfp4", 4);
        var file = Path.Combine(units, "part-3-of-4", "model.safetensors");
        var bytes = File.ReadAllBytes(file);
        bytes[^100] ^= 0x10;
        File.WriteAllBytes(file, bytes);
        var error = Assert.Throws<InputException>(() => ShardedCompression.Merge(units, dir.File("out")));
        Assert.Contains("part-3-of-4: the unit is damaged", error.Message);
        Assert.Contains("checksum mismatch", error.Message);
        Assert.False(Directory.Exists(dir.File("out")));
    }

    [Fact]
    public void MergeRefusesUnitsOfDifferentRunsOrAChangedModel()
    {
        using var dir = new TempDir();
        var model = dir.File("stories.bin");
        File.Copy(SharedData.Stories260K, model);
        File.Copy(SharedData.Tok512, dir.File("tok512.bin"));
        var units = dir.File("units");
        for (int i = 0; i < 3; i++) CompressionRun.Run(model, units, new CompressionRequest { Format = "mxfp4", Shard = new ShardUnit(i, 4), MeasureError = false });
        CompressionRun.Run(model, units, new CompressionRequest { Format = "nxfp4", Shard = new ShardUnit(3, 4), MeasureError = false });
        var mixed = Assert.Throws<InputException>(() => ShardedCompression.Merge(units, dir.File("out")));
        Assert.Contains("different format", mixed.Message);

        Directory.Delete(Path.Combine(units, "part-3-of-4"), true);
        CompressionRun.Run(model, units, new CompressionRequest { Format = "mxfp4", Shard = new ShardUnit(3, 4), MeasureError = false });
        File.SetLastWriteTimeUtc(model, DateTime.UtcNow.AddMinutes(1));
        var changed = Assert.Throws<InputException>(() => ShardedCompression.Merge(units, dir.File("out")));
        Assert.Contains("changed since the units ran", changed.Message);
    }

    [Fact]
    public void ARerunOfAFinishedUnitLeavesItAsItIs()
    {
        using var dir = new TempDir();
        var units = dir.File("units");
        RunUnits(SharedData.Stories260K, units, "mxfp4", 2);
        var file = Path.Combine(units, "part-1-of-2", "model.safetensors");
        var written = File.GetLastWriteTimeUtc(file);
        var again = CompressionRun.Run(SharedData.Stories260K, units, new CompressionRequest { Format = "mxfp4", Shard = new ShardUnit(1, 2) });
        Assert.True(again.AlreadyDone);
        Assert.Equal(written, File.GetLastWriteTimeUtc(file));
        Assert.NotEmpty(again.Report.Tensors);
    }

    [Fact]
    public void ABudgetIsNotSplitIntoUnits()
    {
        using var dir = new TempDir();
        var error = Assert.Throws<InvalidOptionException>(() => CompressionRun.Run(SharedData.Stories260K, dir.File("u"),
            new CompressionRequest { Budget = Budget.Parse("4bpw"), Shard = new ShardUnit(0, 2) }));
        Assert.Equal("CompressionRequest.Shard", error.Option);
    }

    [Theory]
    [InlineData("2/8", 2, 8)]
    [InlineData(" 0 / 1 ", 0, 1)]
    public void ParsesAUnit(string text, int index, int count) => Assert.Equal(new ShardUnit(index, count), ShardUnit.Parse(text, _ => null));

    [Fact]
    public void AutoTakesTheIndexFromTheScheduler()
    {
        Assert.Equal(new ShardUnit(3, 4), ShardUnit.Parse("auto/4", v => v == "SLURM_ARRAY_TASK_ID" ? "3" : null));
        Assert.Equal(new ShardUnit(1, 4), ShardUnit.Parse("auto/4", v => v == "JOB_COMPLETION_INDEX" ? "1" : null));
        Assert.Contains("none of SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX is set", Assert.Throws<InvalidOptionException>(() => ShardUnit.Parse("auto/4", _ => null)).Message);
        Assert.Contains("--array=0-3", Assert.Throws<InvalidOptionException>(() => ShardUnit.Parse("auto/4", _ => "4")).Message);
    }

    [Theory]
    [InlineData("4/4")]
    [InlineData("-1/4")]
    [InlineData("1/0")]
    [InlineData("1")]
    [InlineData("a/b")]
    public void RefusesWhatIsNotAUnit(string text) => Assert.Throws<InvalidOptionException>(() => ShardUnit.Parse(text, _ => null));

    private static void CopyFolder(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
    }
}

/// <summary>The recipes of docs/scale-out.md run as written, with the schedulers' environment simulated by a loop.</summary>
public class ScaleOutRecipeTests
{
    private static readonly string Recipes = Path.Combine(RepoRoot(), "docs", "scale-out");

    private static string RepoRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Nanoscale.slnx"))) return d.FullName;
        throw new InvalidOperationException("repository root not found");
    }

    private static string Nanoscale => $"dotnet {Path.Combine(AppContext.BaseDirectory, "nanoscale.dll")}";

    private static void Run(string file, string arguments, IDictionary<string, string> environment)
    {
        var start = new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var (k, v) in environment) start.Environment[k] = v;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(5)), $"{file} {arguments} did not finish");
        Assert.True(process.ExitCode == 0, $"{file} {arguments} exited {process.ExitCode}: {stderr.Result}{stdout.Result}");
    }

    [Fact]
    public void TheSlurmArrayScriptsRunAsWritten()
    {
        using var dir = new TempDir();
        var env = new Dictionary<string, string>
        {
            ["NANOSCALE"] = Nanoscale, ["MODEL"] = SharedData.Stories260K, ["UNITS_DIR"] = dir.File("units"), ["UNITS"] = "3",
            ["FORMAT"] = "mxfp4", ["FINAL"] = dir.File("final"), ["SLURM_CPUS_PER_TASK"] = "1",
        };
        for (int i = 0; i < 3; i++)
            Run("bash", Path.Combine(Recipes, "slurm-compress.sbatch"), new Dictionary<string, string>(env) { ["SLURM_ARRAY_TASK_ID"] = $"{i}" });
        Run("bash", Path.Combine(Recipes, "slurm-merge.sbatch"), env);
        CompressionRun.Run(SharedData.Stories260K, dir.File("single"), new CompressionRequest { Format = "mxfp4", MeasureError = false });
        foreach (var f in Directory.GetFiles(dir.File("single")))
            Assert.Equal(File.ReadAllBytes(f), File.ReadAllBytes(Path.Combine(dir.File("final"), Path.GetFileName(f))));
    }

    [Fact]
    public void TheKubernetesIndexedJobsCommandsRunAsWritten()
    {
        using var dir = new TempDir();
        // The container commands, with /models standing for the shared volume.
        string[] Command(string file)
        {
            var line = File.ReadLines(Path.Combine(Recipes, file)).Single(l => l.TrimStart().StartsWith("command:", StringComparison.Ordinal));
            var args = JsonSerializer.Deserialize<string[]>(line[(line.IndexOf(':') + 1)..])!;
            Assert.Equal("nanoscale", args[0]);
            return [.. args.Skip(1).Select(a => a == "/models/in" ? SharedData.Stories260K : a.StartsWith("/models/", StringComparison.Ordinal) ? Path.Combine(dir.Path, a["/models/".Length..]) : a)];
        }
        var units = Command("k8s-units-job.yaml");
        int completions = int.Parse(File.ReadLines(Path.Combine(Recipes, "k8s-units-job.yaml")).Single(l => l.Trim().StartsWith("completions:")).Split(':')[1]);
        for (int i = 0; i < completions; i++)
            Run("dotnet", string.Join(' ', new[] { Path.Combine(AppContext.BaseDirectory, "nanoscale.dll") }.Concat(units).Select(Quote)),
                new Dictionary<string, string> { ["JOB_COMPLETION_INDEX"] = $"{i}" });
        Run("dotnet", string.Join(' ', new[] { Path.Combine(AppContext.BaseDirectory, "nanoscale.dll") }.Concat(Command("k8s-merge-job.yaml")).Select(Quote)),
            new Dictionary<string, string>());
        CompressionRun.Run(SharedData.Stories260K, dir.File("single"), new CompressionRequest { Format = "nxfp4", MeasureError = false });
        foreach (var f in Directory.GetFiles(dir.File("single")))
            Assert.Equal(File.ReadAllBytes(f), File.ReadAllBytes(Path.Combine(dir.File("out"), Path.GetFileName(f))));
    }

    private static string Quote(string s) => "\"" + s.Replace("\"", "\\\"") + "\"";
}

public class HostileManifestTests
{
    [Theory]
    [InlineData("\"tensors\": null", "tensors is missing or null")]
    [InlineData("\"count\": 2000000000", "is not a unit")]
    [InlineData("\"index\": -1", "is not a unit")]
    [InlineData("\"model_files\": [null]", "model_files is missing or null")]
    [InlineData("\"version\": 99", "version 99")]
    public void AHostileUnitManifestIsALocatedErrorNotACrash(string replacement, string expected)
    {
        using var dir = new TempDir();
        var units = dir.File("units");
        for (int i = 0; i < 2; i++)
            CompressionRun.Run(SharedData.Stories260K, units, new CompressionRequest { Format = "mxfp4", Shard = new ShardUnit(i, 2), MeasureError = false });
        var path = Path.Combine(units, "part-1-of-2", ShardedCompression.ManifestName);
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        var (key, value) = (replacement.Split(':')[0].Trim('"', ' '), replacement[(replacement.IndexOf(':') + 1)..].Trim());
        json[key] = System.Text.Json.Nodes.JsonNode.Parse(value);
        File.WriteAllText(path, json.ToJsonString());
        var error = Assert.Throws<CheckpointFormatException>(() => ShardedCompression.Merge(units, dir.File("out")));
        Assert.Contains(expected, error.Message);
        Assert.Contains(path, error.Message);
    }
}
