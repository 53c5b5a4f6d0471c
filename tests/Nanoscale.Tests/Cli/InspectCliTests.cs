using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Cli;

public class InspectCliTests
{
    [Fact]
    public void InspectJsonReportsStories260KConfig()
    {
        var result = CliProcess.Run("inspect", SharedData.Stories260K, "--json");
        Assert.Equal(0, result.ExitCode);
        var json = result.Json();
        var config = json.GetProperty("config");
        Assert.Equal(64, config.GetProperty("dim").GetInt32());
        Assert.Equal(5, config.GetProperty("layers").GetInt32());
        Assert.Equal(8, config.GetProperty("heads").GetInt32());
        Assert.Equal(4, config.GetProperty("kv_heads").GetInt32());
        Assert.Equal(512, config.GetProperty("vocab_size").GetInt32());
        Assert.Equal(512, config.GetProperty("max_seq_len").GetInt32());
        Assert.Equal("Llama2c", json.GetProperty("kind").GetString());
        var embed = json.GetProperty("tensors")[0];
        Assert.Equal("model.embed_tokens.weight", embed.GetProperty("name").GetString());
        Assert.Equal(new[] { 512, 64 }, embed.GetProperty("shape").EnumerateArray().Select(d => d.GetInt32()));
        Assert.True(embed.GetProperty("exponent_entropy_bits").GetDouble() > 1);
        Assert.Equal(260_032, json.GetProperty("totals").GetProperty("parameters").GetInt64());
    }

    [Fact]
    public void InspectTableShowsRealGpt2Tensors()
    {
        var result = CliProcess.Run("inspect", SharedData.Gpt2Attn);
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("h.11.attn.v_proj.weight", result.Stdout);
        Assert.Contains("mxfp4", result.Stdout);
    }

    [Fact]
    public void BadFileGivesOneLineErrorAndJsonError()
    {
        using var dir = new TempDir();
        var path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, SafetensorsBytes.Build(SafetensorsBytes.ValidHeader, SafetensorsBytes.ValidData[..10]));
        var result = CliProcess.Run("inspect", path, "--json");
        Assert.Equal(1, result.ExitCode);
        Assert.Single(result.Stderr.Trim().Split('\n'));
        Assert.Contains("run past the data region", result.Stderr);
        Assert.Contains("run past the data region", result.Json().GetProperty("error").GetString());
    }

    [Fact]
    public void MissingFileFails()
    {
        var result = CliProcess.Run("inspect", "/nonexistent.safetensors");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("no such file", result.Stderr);
    }

    [Fact]
    public void DemoRunsWithNoArguments()
    {
        var result = CliProcess.Run("demo", "--json");
        Assert.Equal(0, result.ExitCode);
        var json = result.Json();
        Assert.False(Directory.Exists(json.GetProperty("sample").GetString())); // temporary sample removed
        Assert.Equal("llama", json.GetProperty("inspect").GetProperty("config").GetProperty("architecture").GetString());
        Assert.Equal(4.25, json.GetProperty("compress").GetProperty("bits_per_weight").GetDouble(), 9);
        var sweep = json.GetProperty("sweep").EnumerateArray().ToDictionary(r => r.GetProperty("format").GetString()!, r => r);
        Assert.True(sweep["mxfp8"].GetProperty("sqnr_db").GetDouble() > sweep["mxfp4"].GetProperty("sqnr_db").GetDouble());
        Assert.True(File.Exists(json.GetProperty("chart").GetString()));
        File.Delete(json.GetProperty("chart").GetString()!);
    }
}

public class InspectCompressedCliTests
{
    [Fact]
    public void CompressedCheckpointShowsLogicalTensorsWithTheirCodec()
    {
        using var dir = new TempDir();
        var compressed = dir.File("s.safetensors");
        Assert.Equal(0, CliProcess.Run("compress", SharedData.Stories260K, "-f", "mxfp4", "-o", compressed, "--no-error").ExitCode);
        var json = CliProcess.Run("inspect", compressed, "--json").Json();
        var tensors = json.GetProperty("tensors").EnumerateArray().ToDictionary(t => t.GetProperty("name").GetString()!, t => t);
        Assert.Equal(47, tensors.Count);                         // the logical tensors, not their parts
        Assert.DoesNotContain("model.layers.0.self_attn.q_proj.weight.blocks", tensors.Keys);
        var q = tensors["model.layers.0.self_attn.q_proj.weight"];
        Assert.Equal("mxfp4", q.GetProperty("codec").GetString());
        Assert.Equal("F32", q.GetProperty("dtype").GetString());  // the original dtype
        Assert.Equal(4.25, q.GetProperty("bits_per_weight").GetDouble(), 9);
        Assert.Equal(64, json.GetProperty("config").GetProperty("dim").GetInt32());
        Assert.Equal(260_032, json.GetProperty("totals").GetProperty("parameters").GetInt64());
        Assert.Empty(json.GetProperty("estimates").EnumerateArray());
    }
}
