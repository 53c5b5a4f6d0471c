using System.Buffers.Binary;
using Nanoscale.IO;
using Nanoscale.Tests.Support;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.IO;

public class GgufTests
{
    /// <summary>Writes stories260K as a llama GGUF (F32), as llama.cpp names it.</summary>
    internal static string WriteStoriesGguf(string path)
    {
        using var model = Llama2cCheckpoint.Open(SharedData.Stories260K);
        var c = model.Config;
        var writer = new GgufWriter(path)
            .AddMetadata("general.architecture", "llama")
            .AddMetadata("llama.embedding_length", (uint)c.Dim)
            .AddMetadata("llama.feed_forward_length", (uint)c.HiddenDim)
            .AddMetadata("llama.block_count", (uint)c.Layers)
            .AddMetadata("llama.attention.head_count", (uint)c.Heads)
            .AddMetadata("llama.attention.head_count_kv", (uint)c.KvHeads)
            .AddMetadata("llama.context_length", (uint)c.MaxSeqLen)
            .AddMetadata("llama.attention.layer_norm_rms_epsilon", 1e-5f)
            .AddMetadata("tokenizer.ggml.tokens", Enumerable.Range(0, c.VocabSize).Select(i => $"t{i}").ToArray());
        var reverse = new Dictionary<string, string>
        {
            ["model.embed_tokens.weight"] = "token_embd.weight",
            ["model.norm.weight"] = "output_norm.weight",
        };
        foreach (var t in model.Tensors)
        {
            var name = reverse.GetValueOrDefault(t.Name) ?? GgufNameOf(t.Name);
            writer.AddTensor(name, DType.F32, t.Shape, s => SafetensorsWriter.CopyTensor(model, t, s));
        }
        writer.Commit();
        return path;
    }

    private static string GgufNameOf(string hf)
    {
        var p = hf.Split('.'); // model.layers.{i}.{group}.{proj}.weight
        var kind = $"{p[3]}.{p[4]}" switch
        {
            "self_attn.q_proj" => "attn_q", "self_attn.k_proj" => "attn_k", "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output", "mlp.gate_proj" => "ffn_gate", "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down", _ => p[3] == "input_layernorm" ? "attn_norm" : "ffn_norm",
        };
        return $"blk.{p[2]}.{kind}.weight";
    }

    [Fact]
    public void LlamaGgufReadsBackWithHuggingFaceNamesAndConfig()
    {
        using var dir = new TempDir();
        var path = WriteStoriesGguf(dir.File("stories.gguf"));
        using var gguf = CheckpointLoader.Open(path);
        using var original = Llama2cCheckpoint.Open(SharedData.Stories260K);
        Assert.Equal(CheckpointKind.Gguf, gguf.Kind);
        var c = gguf.Config!;
        Assert.Equal((64, 172, 5, 8, 4, 512, 512), (c.Dim, c.HiddenDim, c.Layers, c.Heads, c.KvHeads, c.VocabSize, c.MaxSeqLen));
        Assert.True(c.TiedEmbeddings);
        Assert.Equal(original.Tensors.Select(t => t.Name).Order(), gguf.Tensors.Select(t => t.Name).Order());
        foreach (var t in original.Tensors)
        {
            var g = gguf.Find(t.Name)!;
            Assert.Equal(t.Shape, g.Shape);
            Assert.Equal(0, g.FileOffset % GgufWriter.Alignment);
            using var a = original.Map(t);
            using var b = gguf.Map(g);
            Assert.True(a.Bytes.SequenceEqual(b.Bytes), t.Name);
        }
    }

    public static TheoryData<string, int, byte[], string> Corruptions() => new()
    {
        { "bad magic", 0, "GGUX"u8.ToArray(), "not a GGUF file" },
        { "unsupported version", 4, [9, 0, 0, 0], "version 9" },
        { "absurd tensor count", 8, [0, 0, 0, 0, 0, 0, 0, 1], "absurd" },
        { "absurd metadata count", 16, [0, 0, 0, 0, 0, 0, 1, 0], "absurd" },
        { "key length past the end", 24, [0, 0, 0, 0, 0, 0, 0, 1], "runs past the end" },
    };

    [Theory]
    [MemberData(nameof(Corruptions))]
    public void CorruptHeaderIsRefused(string kind, int offset, byte[] patch, string expected)
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(WriteStoriesGguf(dir.File("ok.gguf")));
        patch.CopyTo(bytes, offset);
        var path = dir.File("bad.gguf");
        File.WriteAllBytes(path, bytes);
        var error = Assert.Throws<CheckpointFormatException>(() => GgufFile.Open(path).Dispose());
        Assert.True(error.Message.Contains(expected, StringComparison.Ordinal), $"{kind}: {error.Message}");
    }

    [Fact]
    public void TruncatedDataAndQuantizedTypesAreRefused()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(WriteStoriesGguf(dir.File("ok.gguf")));
        var path = dir.File("short.gguf");
        File.WriteAllBytes(path, bytes[..(bytes.Length - 1000)]);
        Assert.Contains("runs past the end of the file", Assert.Throws<CheckpointFormatException>(() => GgufFile.Open(path).Dispose()).Message);

        // Retype a tensor: the type field follows name, n_dims and ne[] (2 dimensions here).
        string Retyped(string tensor, uint type)
        {
            var copy = (byte[])bytes.Clone();
            int nameAt = System.Text.Encoding.Latin1.GetString(copy).IndexOf(tensor, StringComparison.Ordinal);
            BinaryPrimitives.WriteUInt32LittleEndian(copy.AsSpan(nameAt + tensor.Length + 4 + 2 * 8), type);
            var file = dir.File($"retyped-{type}.gguf");
            File.WriteAllBytes(file, copy);
            return Assert.Throws<CheckpointFormatException>(() => GgufFile.Open(file).Dispose()).Message;
        }
        Assert.Contains("ggml type q2_K is not supported", Retyped("token_embd.weight", 10));   // a K-quant we do not read
        Assert.Contains("ggml type 77 is not supported", Retyped("token_embd.weight", 77));     // no such type
        Assert.Contains("rows of 172 elements are not whole q4_0 blocks", Retyped("blk.0.ffn_down.weight", 2));
    }

    [Fact]
    public void AVocabularyThatDisagreesWithTheEmbeddingIsRefused()
    {
        using var dir = new TempDir();
        var bytes = File.ReadAllBytes(WriteStoriesGguf(dir.File("ok.gguf")));
        // tokenizer.ggml.tokens: key, type 9 (array), item type 8 (string), count (u64) — 512 becomes 511.
        int keyAt = System.Text.Encoding.Latin1.GetString(bytes).IndexOf("tokenizer.ggml.tokens", StringComparison.Ordinal);
        int countAt = keyAt + "tokenizer.ggml.tokens".Length + 4 + 4;
        Assert.Equal(512UL, BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(countAt)));
        // Drop the last token ("t511": 8-byte length + 4 bytes) and say 511.
        int lastAt = System.Text.Encoding.Latin1.GetString(bytes).IndexOf("t511", StringComparison.Ordinal) - 8;
        var shorter = bytes[..lastAt].Concat(bytes[(lastAt + 12)..]).ToArray();
        BinaryPrimitives.WriteUInt64LittleEndian(shorter.AsSpan(countAt), 511);
        var path = dir.File("vocab.gguf");
        File.WriteAllBytes(path, shorter);
        var error = Assert.Throws<CheckpointFormatException>(() => GgufFile.Open(path).Dispose());
        Assert.Contains("the vocabulary has 511 tokens but token_embd.weight has 512 rows", error.Message);
    }

    [Theory]
    [InlineData("blk.3.attn_q.weight", "model.layers.3.self_attn.q_proj.weight")]
    [InlineData("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight")]
    [InlineData("output.weight", "lm_head.weight")]
    [InlineData("rope_freqs.weight", "rope_freqs.weight")]
    public void LlamaCppNamesMapToHuggingFaceNames(string gguf, string hf) => Assert.Equal(hf, GgufFile.LlamaName(gguf));
}
