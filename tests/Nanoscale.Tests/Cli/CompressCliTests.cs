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
}
