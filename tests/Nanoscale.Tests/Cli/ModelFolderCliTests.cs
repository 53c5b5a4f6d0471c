using System.Text.Json;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Cli;

/// <summary>
/// Model folders in and out, end to end through the real executable: every verb opens what compress and decompress
/// write with no extra flags, on generated models in the exact shapes and configs of real ones paired with real
/// tokenizers (fewer layers).
/// </summary>
public class ModelFolderCliTests
{
    private static string Tokenizers(string name) => SharedData.Path("tokenizers", name);

    // SmolLM2's own tokenizer is not in ../shared/data; Llama-2's (32000 ids) fits its 49152-entry vocabulary.
    [Theory]
    [InlineData("smollm2-135m", "llama2", "Once upon a time")]
    [InlineData("qwen2.5-0.5b", "qwen2_5", "Once upon a time")]
    [InlineData("qwen3-0.6b", "qwen2_5", "Once upon a time")]
    [InlineData("llama3.2-1b", "llama3", "Once upon a time")]
    public void RealShapedModelsGoThroughEveryVerbWithNoExtraFlags(string preset, string tokenizer, string prompt)
    {
        using var dir = new TempDir();
        string model = dir.File("model"), compressed = dir.File("model-nxfp4"), restored = dir.File("model-restored");
        Ok("sample", model, "--preset", preset, "--layers", "1", "--tokenizer", Tokenizers(tokenizer));

        var inspect = Ok("inspect", model, "--json").Json();
        Assert.Equal(preset == "qwen2.5-0.5b" ? "qwen2" : preset == "qwen3-0.6b" ? "qwen3" : "llama",
            inspect.GetProperty("config").GetProperty("architecture").GetString());

        var compress = Ok("compress", model, "-f", "nxfp4", "-o", compressed, "--no-error", "--json").Json();
        Assert.Contains("config.json", compress.GetProperty("files").EnumerateArray().Select(f => f.GetString()));
        Assert.True(File.Exists(Path.Combine(compressed, "tokenizer.json")));
        using (var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(compressed, "config.json"))))
        {
            var q = config.RootElement.GetProperty("quantization_config");
            Assert.Equal("nanoscale", q.GetProperty("quant_method").GetString());
            Assert.Equal("nxfp4", q.GetProperty("tensors").GetProperty("model.layers.0.mlp.down_proj.weight").GetString());
        }

        string[] eval = ["--text", SharedData.TinyStoriesText, "--max-tokens", "48", "--json"];
        var original = Ok(["eval", model, .. eval]).Json();
        var onCompressed = Ok(["eval", compressed, .. eval]).Json();
        Assert.Equal(47, onCompressed.GetProperty("predicted_tokens").GetInt64());
        Assert.Equal(4.25, onCompressed.GetProperty("bits_per_weight").GetDouble(), 2);
        Assert.NotEqual(original.GetProperty("mean_nll").GetDouble(), onCompressed.GetProperty("mean_nll").GetDouble());

        var generated = Ok("generate", compressed, "--prompt", prompt, "-n", "3", "--json").Json();
        Assert.Equal(3, generated.GetProperty("tokens").GetArrayLength() - generated.GetProperty("prompt_tokens").GetInt32());
        Assert.StartsWith(prompt, generated.GetProperty("text").GetString());

        Ok("decompress", compressed, "-o", restored);
        using (var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(restored, "config.json"))))
            Assert.False(config.RootElement.TryGetProperty("quantization_config", out _));
        // NxFP4 values (3 significant bits times a scale of at most 3) are exact in bf16: the restored plain model
        // runs exactly as the compressed one.
        var onRestored = Ok(["eval", restored, .. eval]).Json();
        Assert.Equal(onCompressed.GetProperty("mean_nll").GetDouble(), onRestored.GetProperty("mean_nll").GetDouble(), 12);
        Assert.Equal(16, onRestored.GetProperty("bits_per_weight").GetDouble());
    }

    [Fact]
    public void Llama2cModelsKeepTheirConfigAndTokenizerThroughCompressAndDecompress()
    {
        using var dir = new TempDir();
        string compressed = dir.File("lossless"), restored = dir.File("restored");
        Ok("compress", SharedData.Stories260K, "-f", "lossless", "-o", compressed, "--no-error");
        Assert.Equal(["config.json", "model.safetensors", "tokenizer.bin"], Directory.GetFiles(compressed).Select(Path.GetFileName).Order());
        Ok("decompress", compressed, "-o", restored);
        Assert.Equal(File.ReadAllBytes(SharedData.Tok512), File.ReadAllBytes(Path.Combine(restored, "tokenizer.bin")));
        using (var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(restored, "config.json"))))
            Assert.Equal("interleaved", config.RootElement.GetProperty("nanoscale_rope_style").GetString());

        // The issue's failing path: compress → decompress → eval, with no flags, and the SPEC perplexity.
        var eval = Ok("eval", restored, "--text", SharedData.TinyStoriesText, "--json").Json();
        Assert.Equal(3.5482017, eval.GetProperty("perplexity").GetDouble(), 5);
        Assert.Equal(3.5482017, Ok("eval", compressed, "--text", SharedData.TinyStoriesText, "--json").Json().GetProperty("perplexity").GetDouble(), 5);
    }

    [Fact]
    public void ALargeOutputIsShardedWithAnIndexAndEveryEncodedTensorInOneShard()
    {
        using var dir = new TempDir();
        string single = dir.File("single.safetensors"), sharded = dir.File("sharded");
        Ok("compress", SharedData.Stories260K, "-f", "mxfp4", "-o", single, "--no-error");
        Ok("compress", SharedData.Stories260K, "-f", "mxfp4", "-o", sharded, "--no-error", "--max-shard-size", "100KB");

        var shards = Directory.GetFiles(sharded, "model-*.safetensors").Select(Path.GetFileName).Order().ToList();
        Assert.True(shards.Count >= 3, $"{shards.Count} shards");
        Assert.All(shards, s => Assert.Matches($@"^model-\d{{5}}-of-{shards.Count:00000}\.safetensors$", s!));
        using var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(sharded, CheckpointLoader.IndexFileName)));
        var map = index.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
        foreach (var group in map.Keys.Where(k => k.EndsWith(".blocks", StringComparison.Ordinal)))
            Assert.Equal(map[group], map[group[..^".blocks".Length] + ".scales"]);
        // The limit counts tensor bytes (as transformers' max_shard_size does), not the header; a tensor larger than
        // the limit (the 128 KiB embedding) gets a shard of its own.
        Assert.All(shards.Where(s => map.Values.Count(v => v == s) > 1), s =>
        {
            var bytes = File.ReadAllBytes(Path.Combine(sharded, s!));
            Assert.True(bytes.Length - 8 - (long)BitConverter.ToUInt64(bytes, 0) <= 100_000, $"{s} holds more than 100 kB of tensors");
        });

        string[] eval = ["--text", SharedData.TinyStoriesText, "--json"];
        Assert.Equal(Ok(["eval", single, "--tokenizer", SharedData.Tok512, .. eval]).Json().GetProperty("mean_nll").GetDouble(),
            Ok(["eval", sharded, .. eval]).Json().GetProperty("mean_nll").GetDouble(), 12);
        Assert.Contains("match their checksums", Ok("verify", sharded).Stdout);
        Assert.Equal("mxfp4", Ok("inspect", sharded, "--json").Json().GetProperty("metadata").GetProperty("nanoscale.format").GetString());
    }

    [Fact]
    public void AFolderOutputIsNewOrEmptyAndAFailedRunLeavesNoFolder()
    {
        using var dir = new TempDir();
        var taken = Directory.CreateDirectory(dir.File("taken")).FullName;
        File.WriteAllText(Path.Combine(taken, "notes.txt"), "mine");
        var refused = CliProcess.Run("compress", SharedData.Stories260K, "-f", "mxfp4", "-o", taken);
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("is a folder that is not empty", refused.Stderr);
        Assert.Equal(["notes.txt"], Directory.GetFileSystemEntries(taken).Select(Path.GetFileName));

        var empty = Directory.CreateDirectory(dir.File("empty")).FullName; // an empty folder is filled
        Ok("compress", SharedData.Stories260K, "-f", "mxfp4", "-o", empty, "--no-error");
        Assert.True(File.Exists(Path.Combine(empty, "model.safetensors")));

        // A weight that is NaN fails the run while encoding: no folder appears, no staging folder stays.
        var nan = dir.File("nan.safetensors");
        var data = new byte[64 * 32 * 4];
        BitConverter.GetBytes(float.NaN).CopyTo(data, 100 * 4);
        File.WriteAllBytes(nan, SafetensorsBytes.Build(
            """{"model.layers.0.mlp.up_proj.weight":{"dtype":"F32","shape":[64,32],"data_offsets":[0,8192]}}""", data));
        var output = Path.Combine(Directory.CreateDirectory(dir.File("out")).FullName, "nan-model");
        Assert.Throws<NonFiniteValueException>(() =>
            CompressionRun.Run(nan, output, new CompressionRequest { Format = "mxfp4", MeasureError = false }));
        Assert.False(Directory.Exists(output));
        Assert.Empty(Directory.GetFileSystemEntries(Path.GetDirectoryName(output)!));
    }

    [Fact]
    public void WeightsQuantizedByAnotherLibraryAreRefusedByName()
    {
        using var dir = new TempDir();
        var model = SampleCheckpoint.Write(dir.File("gptq"), new SampleOptions { Layers = 1, Dim = 64, HiddenDim = 128, Heads = 4, KvHeads = 2, VocabSize = 512 });
        var config = Path.Combine(model, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).TrimEnd().TrimEnd('}') + """, "quantization_config": {"quant_method": "gptq", "bits": 4}}""");
        var result = CliProcess.Run("generate", model, "--tokenizer", SharedData.Tok512, "-n", "2");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("quant_method 'gptq'", result.Stderr);
    }

    private static CliProcess.Result Ok(params string[] args)
    {
        var result = CliProcess.Run(args);
        Assert.True(result.ExitCode == 0, $"nanoscale {string.Join(' ', args)} exited {result.ExitCode}: {result.Stderr}");
        return result;
    }
}
