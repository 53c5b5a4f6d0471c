using Nanoscale.IO;
using Nanoscale.Tests.Support;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.IO;

public class ShardedTests
{
    private static void WriteShards(string folder, string? config = null)
    {
        new SafetensorsWriter(Path.Combine(folder, "model-00001-of-00002.safetensors"))
            .Add("model.embed_tokens.weight", DType.BF16, [8, 4], Enumerable.Repeat((byte)1, 64).ToArray())
            .Add("model.norm.weight", DType.F32, [4], new byte[16]).Commit();
        new SafetensorsWriter(Path.Combine(folder, "model-00002-of-00002.safetensors"))
            .Add("lm_head.weight", DType.F16, [8, 4], Enumerable.Repeat((byte)2, 64).ToArray()).Commit();
        File.WriteAllText(Path.Combine(folder, CheckpointLoader.IndexFileName), """
            {"metadata":{"total_size":144},"weight_map":{
              "model.embed_tokens.weight":"model-00001-of-00002.safetensors",
              "model.norm.weight":"model-00001-of-00002.safetensors",
              "lm_head.weight":"model-00002-of-00002.safetensors"}}
            """);
        if (config is not null) File.WriteAllText(Path.Combine(folder, "config.json"), config);
    }

    private const string LlamaConfig = """
        {"model_type":"llama","hidden_size":4,"intermediate_size":8,"num_hidden_layers":0,"num_attention_heads":2,
         "num_key_value_heads":1,"vocab_size":8,"max_position_embeddings":16,"rms_norm_eps":1e-6,"rope_theta":500000.0}
        """;

    [Fact]
    public void ReadsShardedIndexAndModelFolder()
    {
        using var dir = new TempDir();
        WriteShards(dir.Path, LlamaConfig.Replace("\"num_hidden_layers\":0", "\"num_hidden_layers\":1"));
        using var model = CheckpointLoader.Open(dir.Path);
        Assert.Equal(CheckpointKind.HuggingFaceDirectory, model.Kind);
        Assert.Equal(3, model.Tensors.Count);
        Assert.Equal(1, model.Config!.Layers);
        Assert.Equal(1, model.Config.KvHeads);
        Assert.Equal(500000f, model.Config.RopeTheta);
        Assert.Equal(RopeStyle.Halves, model.Config.RopeStyle);
        using var view = model.Map(model.Find("lm_head.weight")!);
        Assert.All(view.Bytes.ToArray(), b => Assert.Equal(2, b));

        using var index = CheckpointLoader.Open(Path.Combine(dir.Path, CheckpointLoader.IndexFileName));
        Assert.Equal(CheckpointKind.ShardedSafetensors, index.Kind);
        Assert.Contains(index.Metadata, m => m.Key == "total_size" && m.Value == "144");
    }

    [Fact]
    public void SingleFileModelFolderCarriesConfig()
    {
        using var dir = new TempDir();
        new SafetensorsWriter(Path.Combine(dir.Path, "model.safetensors")).Add("x", DType.F32, [1], new byte[4]).Commit();
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), LlamaConfig.Replace("\"llama\"", "\"qwen2\"").Replace(":0,", ":2,"));
        using var model = CheckpointLoader.Open(dir.Path);
        Assert.True(model.Config!.AttentionBias);
        Assert.Equal(2, model.Config.Layers);
    }

    [Theory]
    [InlineData("missing shard", "model-00002-of-00002.safetensors\"", "nope.safetensors\"", "does not exist")]
    [InlineData("path traversal", "model-00002-of-00002.safetensors\"", "../evil.safetensors\"", "plain file name")]
    [InlineData("tensor not in its shard", "\"lm_head.weight\"", "\"lm_head.bias\"", "has no such tensor")]
    [InlineData("bad JSON", "{\"metadata\"", "{metadata", "not valid JSON")]
    [InlineData("no weight_map", "weight_map", "weights", "weight_map")]
    public void BadIndexIsRefused(string kind, string from, string to, string expected)
    {
        using var dir = new TempDir();
        WriteShards(dir.Path);
        var index = Path.Combine(dir.Path, CheckpointLoader.IndexFileName);
        File.WriteAllText(index, File.ReadAllText(index).Replace(from, to));
        var error = Assert.Throws<CheckpointFormatException>(() => CheckpointLoader.Open(index).Dispose());
        Assert.True(error.Message.Contains(expected, StringComparison.Ordinal), $"{kind}: {error.Message}");
    }

    [Fact]
    public void BadConfigIsRefused()
    {
        using var dir = new TempDir();
        WriteShards(dir.Path, LlamaConfig.Replace("\"hidden_size\":4,", ""));
        var error = Assert.Throws<CheckpointFormatException>(() => CheckpointLoader.Open(dir.Path).Dispose());
        Assert.Contains("hidden_size", error.Message);
    }

    [Fact]
    public void MissingPathIsNamed()
    {
        var error = Assert.Throws<FileNotFoundException>(() => CheckpointLoader.Open("/nonexistent/model.safetensors"));
        Assert.Contains("/nonexistent/model.safetensors", error.Message);
    }
}
