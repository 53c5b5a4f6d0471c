using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Cli;

public class BenchCliTests
{
    [Fact]
    public void BenchMeasuresEachFormatOnRealWeights()
    {
        var result = CliProcess.Run("bench", SharedData.Gpt2Attn, "--formats", "mxfp4,nvfp4", "--threads", "1", "--repeats", "1", "--json");
        Assert.Equal(0, result.ExitCode);
        var rows = result.Json().GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(["mxfp4", "nvfp4"], rows.Select(r => r.GetProperty("format").GetString()));
        Assert.Equal(4.25, rows[0].GetProperty("bits_per_weight").GetDouble(), 9);
        Assert.Equal(4.5 + 32.0 * 48 / (48 * 768 * 768), rows[1].GetProperty("bits_per_weight").GetDouble(), 9);
        Assert.All(rows, r => Assert.True(r.GetProperty("encode_g_bps").GetDouble() > 0 && r.GetProperty("decode_g_bps").GetDouble() > 0));
    }

    [Fact]
    public void BadThreadCountIsRefused()
    {
        var result = CliProcess.Run("bench", SharedData.Gpt2Attn, "--threads", "zero");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--threads", result.Stderr);
    }
}
