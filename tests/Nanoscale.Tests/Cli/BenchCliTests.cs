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

    [Fact]
    public void BenchGenerateReportsTokensPerSecondAndBandwidthPerFormat()
    {
        var result = CliProcess.Run("bench", SharedData.Stories260K, "--generate", "--formats", "original,mxfp4",
            "--threads", "1", "--tokens", "4", "--prompt-tokens", "8", "--json");
        Assert.True(result.ExitCode == 0, result.Stderr);
        var json = result.Json();
        var rows = json.GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(["original", "mxfp4"], rows.Select(r => r.GetProperty("format").GetString()));
        Assert.All(rows, r =>
        {
            Assert.True(r.GetProperty("generated_tokens_per_second").GetDouble() > 0);
            Assert.True(r.GetProperty("prompt_tokens_per_second").GetDouble() > 0);
            Assert.True(r.GetProperty("effective_gbps").GetDouble() > 0);
        });
        // stories260K's tied head is read every step: all its 2-D tensors count, stored as f32 (original) or MXFP4.
        Assert.Equal(4L * (260_032 - (5 * 2 * 64 + 64)), rows[0].GetProperty("bytes_per_token").GetInt64()); // all but the norms
        Assert.True(rows[1].GetProperty("bytes_per_token").GetInt64() < rows[0].GetProperty("bytes_per_token").GetInt64());
        Assert.True(json.GetProperty("memcpy_gbps").GetProperty("1").GetDouble() > 0);
    }

    [Fact]
    public void BenchGenerateRunsWithANarrowerKvCacheAndSaysWhichOne()
    {
        var result = CliProcess.Run("bench", SharedData.Stories260K, "--generate", "--formats", "original",
            "--threads", "1", "--tokens", "4", "--prompt-tokens", "8", "--kv-cache", "q8", "--json");
        Assert.True(result.ExitCode == 0, result.Stderr);
        var json = result.Json();
        Assert.Equal("q8", json.GetProperty("kv_cache").GetString());
        Assert.True(json.GetProperty("results")[0].GetProperty("generated_tokens_per_second").GetDouble() > 0);

        var misplaced = CliProcess.Run("bench", SharedData.Gpt2Attn, "--kv-cache", "f16");
        Assert.Equal(1, misplaced.ExitCode);
        Assert.Contains("--generate", misplaced.Stderr);
        var unknown = CliProcess.Run("bench", SharedData.Stories260K, "--generate", "--kv-cache", "q5");
        Assert.Equal(1, unknown.ExitCode);
        Assert.Contains("--kv-cache must be f32, f16, bf16, q8 or q4", unknown.Stderr);
    }

    /// <summary><c>--streams N</c> also times N sequences stepping together (the token factory's batched step) and
    /// reports their aggregate rate per format; out-of-range counts and use without <c>--generate</c> are refused.</summary>
    [Fact]
    public void BenchGenerateTimesSeveralStreamsTogether()
    {
        var result = CliProcess.Run("bench", SharedData.Stories260K, "--generate", "--formats", "original,mxfp4",
            "--threads", "1", "--tokens", "4", "--prompt-tokens", "8", "--streams", "4", "--json");
        Assert.True(result.ExitCode == 0, result.Stderr);
        var json = result.Json();
        Assert.Equal(4, json.GetProperty("streams").GetInt32());
        Assert.All(json.GetProperty("results").EnumerateArray(), r => Assert.True(r.GetProperty("streams_tokens_per_second").GetDouble() > 0));
        var table = CliProcess.Run("bench", SharedData.Stories260K, "--generate", "--formats", "original",
            "--threads", "1", "--tokens", "4", "--prompt-tokens", "8", "--streams", "3");
        Assert.True(table.ExitCode == 0, table.Stderr);
        Assert.Contains("3 streams tok/s", table.Stdout);

        var zero = CliProcess.Run("bench", SharedData.Stories260K, "--generate", "--streams", "0");
        Assert.Equal(1, zero.ExitCode);
        Assert.Contains("--streams must be from 1 to 256", zero.Stderr);
        var misplaced = CliProcess.Run("bench", SharedData.Gpt2Attn, "--streams", "4");
        Assert.Equal(1, misplaced.ExitCode);
        Assert.Contains("--streams", misplaced.Stderr);
        Assert.Contains("--generate", misplaced.Stderr);
    }

    [Fact]
    public void BenchGenerateRefusesMoreTokensThanTheModelHolds()
    {
        var result = CliProcess.Run("bench", SharedData.Stories260K, "--generate", "--formats", "original", "--threads", "1", "--tokens", "600");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("exceed the model's 512 positions", result.Stderr);
    }
}
