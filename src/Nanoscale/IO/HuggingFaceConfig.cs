using System.Text.Json;

namespace Nanoscale.IO;

/// <summary>Reads the Llama-family fields of a Hugging Face <c>config.json</c> (Llama, Mistral, Qwen2).</summary>
internal static class HuggingFaceConfig
{
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["llama", "mistral", "qwen2"];

    /// <summary>
    /// The architecture when <c>model_type</c> is a supported Llama-family type; null for other model types
    /// (their tensors can still be inspected and compressed, just not run).
    /// </summary>
    /// <exception cref="CheckpointFormatException">Malformed JSON or missing/invalid required fields.</exception>
    public static ModelConfig? Read(string path)
    {
        var info = new FileInfo(path);
        if (info.Length > 16 * 1024 * 1024)
            throw new CheckpointFormatException(path, null, 0, $"config is {info.Length} bytes; refusing more than 16 MiB of JSON");
        JsonDocument document;
        try { document = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, null, e.BytePositionInLine, $"not valid JSON ({e.Message})", e);
        }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(path, null, 0, "config must be a JSON object");
            var modelType = root.TryGetProperty("model_type", out var mt) && mt.ValueKind == JsonValueKind.String ? mt.GetString()! : "";
            if (!SupportedModelTypes.Contains(modelType)) return null;

            int Int(string field, int? fallback = null)
            {
                if (root.TryGetProperty(field, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var n) && n > 0)
                    return n;
                if (fallback is not null && (!root.TryGetProperty(field, out v) || v.ValueKind == JsonValueKind.Null)) return fallback.Value;
                throw new CheckpointFormatException(path, field, null, "missing or not a positive integer");
            }
            float Float(string field, float fallback) =>
                root.TryGetProperty(field, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetSingle() : fallback;

            int dim = Int("hidden_size"), heads = Int("num_attention_heads");
            int kvHeads = Int("num_key_value_heads", heads);
            if (dim % heads != 0)
                throw new CheckpointFormatException(path, "num_attention_heads", null, $"{heads} heads do not divide hidden_size {dim}");
            if (heads % kvHeads != 0)
                throw new CheckpointFormatException(path, "num_key_value_heads", null, $"{kvHeads} kv heads do not divide {heads} heads");
            return new ModelConfig
            {
                Architecture = modelType,
                Dim = dim,
                HiddenDim = Int("intermediate_size"),
                Layers = Int("num_hidden_layers"),
                Heads = heads,
                KvHeads = kvHeads,
                VocabSize = Int("vocab_size"),
                MaxSeqLen = Int("max_position_embeddings", 2048),
                NormEps = Float("rms_norm_eps", 1e-6f),
                RopeTheta = Float("rope_theta", 10000f),
                RopeStyle = RopeStyle.Halves,
                TiedEmbeddings = root.TryGetProperty("tie_word_embeddings", out var tie) && tie.ValueKind == JsonValueKind.True,
                AttentionBias = modelType == "qwen2" ||
                    (root.TryGetProperty("attention_bias", out var bias) && bias.ValueKind == JsonValueKind.True),
            };
        }
    }
}
