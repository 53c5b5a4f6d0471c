using System.Diagnostics;
using System.Security.Cryptography;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Pipeline;

/// <summary>
/// Never touch the input (SPEC §15): every way an output path can reach a file the run reads — the model's own file
/// in its folder, one shard, a symbolic link, a hard link, the calibration text — is refused before any work, and the
/// input's bytes are the same afterwards; outputs that are not files (devices, folders, links) are refused too.
/// </summary>
public class InputSafetyTests
{
    private static readonly SampleOptions Tiny = new() { Dim = 64, HiddenDim = 128, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 64, MaxSeqLen = 32 };

    private static Dictionary<string, string> Hashes(string folder) =>
        Directory.GetFiles(folder).ToDictionary(f => f, f => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))));

    private static InvalidOptionException Refused(string model, string output, CompressionRequest? request = null) =>
        Assert.Throws<InvalidOptionException>(() => CompressionRun.Run(model, output, request ?? new CompressionRequest { Format = "mxfp4" }));

    [Fact]
    public void TheModelFileOfAFolderIsNeverAnOutput()
    {
        using var dir = new TempDir();
        var model = SampleCheckpoint.Write(dir.File("model"), Tiny);
        var before = Hashes(model);
        var e = Refused(model, Path.Combine(model, "model.safetensors"));
        Assert.Equal("output", e.Option);
        Assert.Contains("a file of the model", e.Message);
        // --force opens the folder, never the model's own files.
        Refused(model, Path.Combine(model, "model.safetensors"), new CompressionRequest { Format = "mxfp4", Force = true });
        Refused(model, Path.Combine(model, "config.json"), new CompressionRequest { Format = "mxfp4", Force = true });
        Assert.Equal(before, Hashes(model));
    }

    [Fact]
    public void OneShardOfAShardedCheckpointIsNeverAnOutput()
    {
        using var dir = new TempDir();
        var model = SampleCheckpoint.Write(dir.File("sharded"), Tiny with { ShardBytes = 64 << 10 });
        var shards = Directory.GetFiles(model, "*.safetensors");
        Assert.True(shards.Length > 1, "the sample is sharded");
        var before = Hashes(model);
        Refused(Path.Combine(model, CheckpointLoader.IndexFileName), shards[1], new CompressionRequest { Format = "mxfp4", Force = true });
        Refused(model, shards[0], new CompressionRequest { Format = "mxfp4", Force = true });
        Assert.Equal(before, Hashes(model));
    }

    [Fact]
    public void AnOutputInsideTheModelFolderNeedsForce()
    {
        using var dir = new TempDir();
        var model = SampleCheckpoint.Write(dir.File("model"), Tiny);
        var output = Path.Combine(model, "model.mxfp4.safetensors");
        Assert.Contains("inside the model folder", Refused(model, output).Message);
        Assert.False(File.Exists(output));
        CompressionRun.Run(model, output, new CompressionRequest { Format = "mxfp4", Force = true, MeasureError = false });
        Assert.True(File.Exists(output));
    }

    [Fact]
    public void SymbolicAndHardLinksToTheInputAreSeenThrough()
    {
        using var dir = new TempDir();
        var real = dir.File("real.bin");
        File.Copy(SharedData.Stories260K, real);
        var before = Hashes(dir.Path);

        var link = dir.File("link.bin");
        File.CreateSymbolicLink(link, real);
        Refused(link, real);                               // the input reached through a link, the output by its name
        Refused(real, dir.File("sub/../real.bin"));        // the same file by another spelling

        var hard = dir.File("hard.bin");
        var ln = Process.Start(new ProcessStartInfo("ln", [real, hard]) { UseShellExecute = false })!;
        ln.WaitForExit();
        Assert.Equal(0, ln.ExitCode);
        Assert.Contains("which this run reads", Refused(real, hard).Message);

        var outputLink = dir.File("out-link.safetensors");
        File.CreateSymbolicLink(outputLink, real);
        Assert.Contains("symbolic link", Refused(real, outputLink).Message);

        Assert.Equal(before.Keys.Order(), Hashes(dir.Path).Keys.Where(before.ContainsKey).Order());
        Assert.All(before, kv => Assert.Equal(kv.Value, Hashes(dir.Path)[kv.Key]));
    }

    [Fact]
    public void OutputsThatAreNotFilesAreRefusedBeforeAnyWork()
    {
        using var dir = new TempDir();
        Assert.Contains("a device, FIFO or socket", Refused(SharedData.Stories260K, "/dev/null").Message);
        Assert.True(File.Exists("/dev/null"));
        // A name ending in .safetensors is a file: a folder there is refused. Any other name is a model folder, which
        // must be new or empty (dir.Path holds the folder below), and an existing file is not one.
        Directory.CreateDirectory(dir.File("folder.safetensors"));
        Assert.Contains("is a folder", Refused(SharedData.Stories260K, dir.File("folder.safetensors")).Message);
        Assert.Contains("not empty", Refused(SharedData.Stories260K, dir.Path).Message);
        File.WriteAllText(dir.File("plain"), "x");
        Assert.Contains("is a file; a model folder is written there", Refused(SharedData.Stories260K, dir.File("plain")).Message);
        Assert.Equal("x", File.ReadAllText(dir.File("plain")));
        var blocker = dir.File("a-file");
        File.WriteAllText(blocker, "x");
        Assert.Contains("is a file, not a folder", Refused(SharedData.Stories260K, Path.Combine(blocker, "out.safetensors")).Message);
    }

    [Fact]
    public void TheCalibrationTextAndTheCompressedInputAreNeverOutputs()
    {
        using var dir = new TempDir();
        var text = dir.File("calib.txt");
        File.Copy(SharedData.WikiText2, text);
        var before = Hashes(dir.Path);
        Refused(SharedData.Stories260K, text, new CompressionRequest { Format = "caldera:rank=2,iters=1", CalibrationPath = text, TokenizerPath = SharedData.Tok512 });
        Assert.Equal(before, Hashes(dir.Path));

        var compressed = dir.File("c.safetensors");
        CompressionRun.Run(SharedData.Stories260K, compressed, new CompressionRequest { Format = "mxfp4", MeasureError = false });
        var hash = Hashes(dir.Path)[compressed];
        Assert.Equal("output", Assert.Throws<InvalidOptionException>(() => Decompressor.Decompress(compressed, compressed)).Option);
        Assert.Equal(hash, Hashes(dir.Path)[compressed]);
    }

    [Fact]
    public void TheCliSaysWhichFlagInOneLine()
    {
        using var dir = new TempDir();
        var model = SampleCheckpoint.Write(dir.File("model"), Tiny);
        var result = CliProcess.Run("compress", model, "-f", "mxfp4", "-o", Path.Combine(model, "model.safetensors"));
        Assert.Equal(1, result.ExitCode);
        var error = Assert.Single(result.Stderr.Split('\n'), l => l.StartsWith("error:", StringComparison.Ordinal));
        Assert.StartsWith("error: --output: ", error);
        Assert.DoesNotContain("   at ", result.Stderr);
    }
}
