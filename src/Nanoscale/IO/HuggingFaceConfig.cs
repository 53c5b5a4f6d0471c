using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// Reads a Hugging Face <c>config.json</c> of the Llama family: Llama 2/3/3.1/3.2 (with <c>rope_scaling</c> of type
/// <c>llama3</c>), SmolLM/SmolLM2 (<c>llama</c>), Mistral, Qwen2/2.5 (q/k/v biases) and Qwen3 (q/k norms, its own
/// <c>head_dim</c>). What the runtime does not implement is refused by name (<see cref="ModelConfig.Unsupported"/>), never
/// run wrongly: another <c>model_type</c>, mixture-of-experts, another rotary scaling, another activation.
/// </summary>
internal static class HuggingFaceConfig
{
    public static readonly IReadOnlyList<string> SupportedModelTypes = ["llama", "mistral", "qwen2", "qwen3"];

    /// <summary>
    /// The architecture when <c>model_type</c> is a Llama-family type (possibly with <see cref="ModelConfig.Unsupported"/>
    /// set); null for other model types (their tensors can still be inspected and compressed, just not run).
    /// </summary>
    /// <exception cref="CheckpointFormatException">Malformed JSON or missing/invalid required fields.</exception>
    public static ModelConfig? Read(string path)
    {
        var info = new FileInfo(path);
        if (info.Length > 16 * 1024 * 1024)
            throw new CheckpointFormatException(path, null, 0, $"config is {info.Length} bytes; refusing more than 16 MiB of JSON");
        var document = JsonErrors.Parse(path, File.ReadAllBytes(path));
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
            bool Flag(string field) => root.TryGetProperty(field, out var v) && v.ValueKind == JsonValueKind.True;

            int dim = Int("hidden_size"), heads = Int("num_attention_heads");
            int kvHeads = Int("num_key_value_heads", heads);
            int headDim = Int("head_dim", dim / heads);
            if (!root.TryGetProperty("head_dim", out var hd) || hd.ValueKind == JsonValueKind.Null)
                if (dim % heads != 0)
                    throw new CheckpointFormatException(path, "num_attention_heads", null, $"{heads} heads do not divide hidden_size {dim}");
            if (heads % kvHeads != 0)
                throw new CheckpointFormatException(path, "num_key_value_heads", null, $"{kvHeads} kv heads do not divide {heads} heads");

            // Sliding-window attention equals full attention for windows no longer than the window: run it that way.
            int maxSeqLen = Int("max_position_embeddings", 2048);
            bool windowed = modelType == "mistral" || (modelType is "qwen2" or "qwen3" && Flag("use_sliding_window"));
            if (windowed && root.TryGetProperty("sliding_window", out var window) && window.ValueKind == JsonValueKind.Number
                && window.TryGetInt32(out int w) && w > 0)
                maxSeqLen = Math.Min(maxSeqLen, w);

            var (scaling, scalingProblem) = RopeScaling(path, root);
            return new ModelConfig
            {
                Architecture = modelType,
                Dim = dim,
                HiddenDim = Int("intermediate_size"),
                Layers = Int("num_hidden_layers"),
                Heads = heads,
                KvHeads = kvHeads,
                HeadDim = headDim == dim / heads ? 0 : headDim, // 0: the default, as a config without head_dim
                VocabSize = Int("vocab_size"),
                MaxSeqLen = maxSeqLen,
                NormEps = Float("rms_norm_eps", 1e-6f),
                RopeTheta = Float("rope_theta", 10000f),
                RopeStyle = root.TryGetProperty(RopeStyleKey, out var style) && style.ValueKind == JsonValueKind.String
                    && style.GetString() == "interleaved" ? RopeStyle.Interleaved : RopeStyle.Halves,
                RopeScaling = scaling,
                RopeFrequencyFactors = RopeFactors(path, root, headDim),
                TiedEmbeddings = Flag("tie_word_embeddings"),
                AttentionBias = modelType == "qwen2" || Flag("attention_bias"),
                QkNorm = modelType == "qwen3",
                Unsupported = scalingProblem ?? Unsupported(root),
            };
        }
    }

    /// <summary><see cref="RopeFactorsKey"/>: one positive factor per rotary pair, or null when absent.</summary>
    private static float[]? RopeFactors(string path, JsonElement root, int headDim)
    {
        if (!root.TryGetProperty(RopeFactorsKey, out var list) || list.ValueKind == JsonValueKind.Null) return null;
        if (list.ValueKind != JsonValueKind.Array || list.GetArrayLength() != headDim / 2)
            throw new CheckpointFormatException(path, RopeFactorsKey, null, $"must be a list of {headDim / 2} numbers (one per rotary pair)");
        var factors = list.EnumerateArray().Select(f => f.ValueKind == JsonValueKind.Number ? f.GetSingle() : float.NaN).ToArray();
        if (factors.Any(f => !(f > 0) || !float.IsFinite(f)))
            throw new CheckpointFormatException(path, RopeFactorsKey, null, "holds a factor that is not a positive finite number");
        return factors;
    }

    /// <summary>A feature of the config that the runtime does not implement, named; null when there is none.</summary>
    private static string? Unsupported(JsonElement root)
    {
        if (root.TryGetProperty(QuantizationKey, out var q) && q.ValueKind == JsonValueKind.Object)
        {
            string method = q.TryGetProperty("quant_method", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString()! : "(none)";
            string format = q.TryGetProperty("format", out var f) && f.ValueKind == JsonValueKind.String ? f.GetString()! : "";
            // Two layouts of other libraries are read (Codecs/HfLayouts): transformers' MXFP4 blocks and scales, and
            // compressed-tensors' NVFP4 (weights; activations run in float here).
            bool readable = method is QuantMethod or "mxfp4" || (method == "compressed-tensors" && format == "nvfp4-pack-quantized");
            if (method == "compressed-tensors" && !readable)
                return $"weights quantized by compressed-tensors in its '{format}' format are not supported (its nvfp4-pack-quantized format is); use the unquantized model";
            if (!readable)
                return $"weights quantized by another library ({QuantizationKey}.quant_method '{method}') are not supported; use the unquantized model";
        }
        foreach (string key in new[] { "num_experts", "num_local_experts", "n_routed_experts" })
            if (root.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int n) && n > 0)
                return $"mixture-of-experts layers ({key} = {n}) are not supported";
        if (root.TryGetProperty("hidden_act", out var act) && act.ValueKind == JsonValueKind.String && act.GetString() is not ("silu" or "swish"))
            return $"hidden_act '{act.GetString()}' is not supported (SwiGLU with silu is)";
        return null;
    }

    /// <summary><c>rope_scaling</c>: null, or Llama-3's (<c>rope_type</c>/<c>type</c> = <c>llama3</c>); any other kind is
    /// refused by name.</summary>
    private static (RopeScaling? Scaling, string? Problem) RopeScaling(string path, JsonElement root)
    {
        if (!root.TryGetProperty("rope_scaling", out var s) || s.ValueKind == JsonValueKind.Null) return (null, null);
        if (s.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, "rope_scaling", null, "must be an object or null");
        string type = (s.TryGetProperty("rope_type", out var t) || s.TryGetProperty("type", out t)) && t.ValueKind == JsonValueKind.String
            ? t.GetString()! : "";
        if (type == "default") return (null, null);
        if (type != "llama3") return (null, $"rope_scaling of type '{type}' is not supported (llama3 is)");
        float Number(string key)
        {
            if (s.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.GetDouble() is var d && d > 0 && double.IsFinite(d))
                return (float)d;
            throw new CheckpointFormatException(path, $"rope_scaling.{key}", null, "missing or not a positive number");
        }
        float low = Number("low_freq_factor"), high = Number("high_freq_factor");
        if (!(high > low))
            throw new CheckpointFormatException(path, "rope_scaling", null,
                $"high_freq_factor {high.ToString(CultureInfo.InvariantCulture)} must exceed low_freq_factor {low.ToString(CultureInfo.InvariantCulture)}");
        return (new RopeScaling(Number("factor"), low, high, (int)Number("original_max_position_embeddings")), null);
    }

    /// <summary>The key of <c>config.json</c> that says how the weights are quantized (transformers' convention).</summary>
    public const string QuantizationKey = "quantization_config";

    /// <summary>The <c>quant_method</c> of a folder Nanoscale compressed.</summary>
    public const string QuantMethod = "nanoscale";

    /// <summary>Nanoscale's own key for llama2.c's and GGUF's rotary layout, which transformers' configs cannot say.</summary>
    public const string RopeStyleKey = "nanoscale_rope_style";

    /// <summary>Nanoscale's own key for a GGUF file's per-pair rotary divisors (<c>rope_freqs.weight</c>), which
    /// transformers' configs cannot say either.</summary>
    public const string RopeFactorsKey = "nanoscale_rope_factors";

    /// <summary>
    /// A <c>config.json</c> for <paramref name="config"/> as transformers writes one for its <c>model_type</c>
    /// (llama2.c and GGUF models become <c>llama</c>, with <see cref="RopeStyleKey"/> saying their rotary pairs are
    /// interleaved); <paramref name="dtype"/> fills <c>torch_dtype</c>.
    /// </summary>
    public static string Write(ModelConfig config, DType dtype)
    {
        string modelType = SupportedModelTypes.Contains(config.Architecture) ? config.Architecture : "llama";
        var json = new JsonObject
        {
            ["architectures"] = new JsonArray(modelType switch { "qwen2" => "Qwen2ForCausalLM", "qwen3" => "Qwen3ForCausalLM", "mistral" => "MistralForCausalLM", _ => "LlamaForCausalLM" }),
            ["model_type"] = modelType,
            ["hidden_size"] = config.Dim,
            ["intermediate_size"] = config.HiddenDim,
            ["num_hidden_layers"] = config.Layers,
            ["num_attention_heads"] = config.Heads,
            ["num_key_value_heads"] = config.KvHeads,
            ["head_dim"] = config.HeadDim,
            ["hidden_act"] = "silu",
            ["vocab_size"] = config.VocabSize,
            ["max_position_embeddings"] = config.MaxSeqLen,
            ["rms_norm_eps"] = config.NormEps,
            ["rope_theta"] = config.RopeTheta,
            ["rope_scaling"] = config.RopeScaling is { } r ? new JsonObject
            {
                ["rope_type"] = "llama3",
                ["factor"] = r.Factor,
                ["low_freq_factor"] = r.LowFreqFactor,
                ["high_freq_factor"] = r.HighFreqFactor,
                ["original_max_position_embeddings"] = r.OriginalMaxPositions,
            } : null,
            ["attention_bias"] = config.AttentionBias,
            ["tie_word_embeddings"] = config.TiedEmbeddings,
            ["torch_dtype"] = dtype switch { DType.BF16 => "bfloat16", DType.F16 => "float16", _ => "float32" },
        };
        if (config.RopeStyle == RopeStyle.Interleaved) json[RopeStyleKey] = "interleaved";
        if (config.RopeFrequencyFactors is { } factors) json[RopeFactorsKey] = new JsonArray([.. factors.Select(f => (JsonNode?)JsonValue.Create(f))]);
        return json.ToJsonString(Indented) + "\n";
    }

    /// <summary>
    /// <paramref name="configJson"/> with its <see cref="QuantizationKey"/> replaced by <paramref name="quantization"/>
    /// (removed when null), every other key kept as it was.
    /// </summary>
    /// <exception cref="CheckpointFormatException">The text is not a JSON object.</exception>
    public static string WithQuantization(string configJson, string path, JsonObject? quantization)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(configJson) as JsonObject ?? throw new CheckpointFormatException(path, null, 0, "config must be a JSON object");
        }
        catch (JsonException e)
        {
            throw JsonErrors.Invalid(path, e);
        }
        root.Remove(QuantizationKey);
        if (quantization is not null) root[QuantizationKey] = quantization;
        return root.ToJsonString(Indented) + "\n";
    }

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };
}
