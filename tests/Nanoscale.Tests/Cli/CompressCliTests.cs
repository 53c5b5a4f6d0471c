using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Cli;

public class CompressCliTests
{
    [Fact]
    public void CompressAndDecompressFromTheCommandLine()
    {
        using var dir = new TempDir();
        var compressed = dir.File("s.safetensors");
        var result = CliProcess.Run("compress", SharedData.Stories260K, "--format", "f16", "-o", compressed, "--json");
        Assert.Equal(0, result.ExitCode);
        var json = result.Json();
        Assert.Equal(16, json.GetProperty("encoded_bits_per_weight").GetDouble(), 9);
        Assert.True(json.GetProperty("error").GetProperty("sqnr_db").GetDouble() > 60);

        var restored = dir.File("r.safetensors");
        var back = CliProcess.Run("decompress", compressed, "-o", restored, "--dtype", "bf16", "--json");
        Assert.Equal(0, back.ExitCode);
        Assert.Equal(47, back.Json().GetProperty("tensors").GetInt32());
        var inspect = CliProcess.Run("inspect", restored, "--json").Json();
        Assert.All(inspect.GetProperty("tensors").EnumerateArray(), t => Assert.Equal("BF16", t.GetProperty("dtype").GetString()));
    }

    [Fact]
    public void UnknownFormatFailsWithTheValidList()
    {
        using var dir = new TempDir();
        var result = CliProcess.Run("compress", SharedData.Stories260K, "--format", "nope", "-o", dir.File("x.safetensors"));
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("valid names:", result.Stderr);
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    /// <summary>Calibration text shorter than asked (issue 16): the run goes on with what there is, says so, and writes
    /// finite weights.</summary>
    [Fact]
    public void ShortCalibrationTextIsNamedInAWarning()
    {
        using var dir = new TempDir();
        var text = dir.File("short.txt");
        File.WriteAllText(text, "Once upon a time");
        var output = dir.File("c.safetensors");
        var result = CliProcess.Run("compress", SharedData.Stories260K, "-f", "caldera:rank=2,iters=1", "--calib", text, "-o", output, "--no-error");
        Assert.Equal(0, result.ExitCode);
        Assert.Matches(@"warning: --calib: .*short\.txt gave \d+ tokens of the 4096 asked", result.Stderr);
        var back = CliProcess.Run("decompress", output, "-o", dir.File("d.safetensors"), "--json");
        Assert.Equal(0, back.ExitCode);
        using var file = Nanoscale.IO.CheckpointLoader.Open(dir.File("d.safetensors"));
        foreach (var tensor in file.Tensors)
        {
            using var view = file.Map(tensor);
            Assert.All(view.ToFloatArray(), v => Assert.True(float.IsFinite(v), $"{tensor.Name} has a non-finite weight"));
        }
    }
}

public class NonFiniteCliTests
{
    private static string WriteWithInf(TempDir dir)
    {
        var values = new float[4 * 64];
        for (int i = 0; i < values.Length; i++) values[i] = (i % 7 - 3) * 0.01f;
        values[130] = float.NegativeInfinity;
        var bytes = new byte[values.Length * 4];
        Nanoscale.Tensors.TensorData.FromFloat(values, Nanoscale.Tensors.DType.F32, bytes);
        var path = dir.File("inf.safetensors");
        new Nanoscale.IO.SafetensorsWriter(path).Add("layers.0.proj.weight", Nanoscale.Tensors.DType.F32, [4, 64], bytes).Commit();
        return path;
    }

    [Fact]
    public void Mxfp4RefusesAnInfiniteWeightNamingTensorAndElement()
    {
        using var dir = new TempDir();
        var source = WriteWithInf(dir);
        var output = dir.File("out.safetensors");
        var result = CliProcess.Run("compress", source, "-f", "mxfp4", "-o", output);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("layers.0.proj.weight: element 130 is -∞", result.Stderr.Replace("-Infinity", "-∞"));
        // The error contract: one line that names the file and the flag that lets such weights through, no stack trace.
        var error = Assert.Single(result.Stderr.Split('\n'), line => line.StartsWith("error:", StringComparison.Ordinal));
        Assert.Contains(source, error);
        Assert.Contains("use --allow-nonfinite to store such blocks as NaN", error);
        Assert.DoesNotContain("EncodeOptions", result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
        Assert.False(File.Exists(output));
        Assert.Single(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void AllowNonFiniteStoresTheBlockAsNaN()
    {
        using var dir = new TempDir();
        var source = WriteWithInf(dir);
        var output = dir.File("out.safetensors");
        Assert.Equal(0, CliProcess.Run("compress", source, "-f", "mxfp4", "-o", output, "--allow-nonfinite", "--no-error").ExitCode);
        using var compressed = Nanoscale.Codecs.LogicalCheckpoint.Open(output);
        using var decoder = compressed.OpenDecoder(compressed.Tensors.Single());
        var values = new float[4 * 64];
        decoder.ReadRows(0, 4, values);
        Assert.All(values[128..160], v => Assert.True(float.IsNaN(v)));  // the block holding element 130
        Assert.All(values[..128], v => Assert.True(float.IsFinite(v)));
        Assert.All(values[160..], v => Assert.True(float.IsFinite(v)));
    }
}
