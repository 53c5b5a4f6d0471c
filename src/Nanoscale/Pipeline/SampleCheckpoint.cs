using System.Globalization;
using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>Shape and storage of a generated sample model.</summary>
public sealed record SampleOptions
{
    public int Dim { get; init; } = 256;
    public int HiddenDim { get; init; } = 768;
    public int Layers { get; init; } = 4;
    public int Heads { get; init; } = 8;
    public int KvHeads { get; init; } = 4;
    public int VocabSize { get; init; } = 1024;
    public int MaxSeqLen { get; init; } = 512;
    public DType DType { get; init; } = DType.BF16;
    public ulong Seed { get; init; } = 20261124;

    /// <summary>Start a new shard once a shard holds this many bytes; 0 writes one <c>model.safetensors</c>.</summary>
    public long ShardBytes { get; init; }

    /// <summary>Fraction of input channels that carry outliers (scaled by <see cref="OutlierScale"/>).</summary>
    public double OutlierChannelFraction { get; init; } = 0.01;

    public double OutlierScale { get; init; } = 4;

    /// <summary>The Hugging Face <c>model_type</c>: <c>llama</c> (also SmolLM2, Llama-3.x), <c>qwen2</c> (q/k/v
    /// biases) or <c>qwen3</c> (q/k norms).</summary>
    public string ModelType { get; init; } = "llama";

    /// <summary>Width of an attention head; 0: <see cref="Dim"/> / <see cref="Heads"/>.</summary>
    public int HeadDim { get; init; }

    public bool TiedEmbeddings { get; init; }

    public float RopeTheta { get; init; } = 10000f;

    public RopeScaling? RopeScaling { get; init; }

    public float NormEps { get; init; } = 1e-5f;

    /// <summary>A folder whose tokenizer files (<see cref="ModelFolder.TokenizerFileNames"/>) are copied beside the model.</summary>
    public string? TokenizerFrom { get; init; }

    internal int EffectiveHeadDim => HeadDim > 0 ? HeadDim : Dim / Heads;

    internal bool AttentionBias => ModelType == "qwen2";

    internal bool QkNorm => ModelType == "qwen3";

    /// <summary>The architecture these options describe, as its <c>config.json</c> reads back.</summary>
    public ModelConfig Config => new()
    {
        Architecture = ModelType, Dim = Dim, HiddenDim = HiddenDim, Layers = Layers, Heads = Heads, KvHeads = KvHeads,
        HeadDim = EffectiveHeadDim == Dim / Heads ? 0 : EffectiveHeadDim, VocabSize = VocabSize, MaxSeqLen = MaxSeqLen, NormEps = NormEps,
        RopeTheta = RopeTheta, RopeScaling = RopeScaling, TiedEmbeddings = TiedEmbeddings, AttentionBias = AttentionBias, QkNorm = QkNorm,
    };

    /// <summary>HuggingFaceTB/SmolLM2-135M's shape (30 layers; its own 49152-token vocabulary).</summary>
    public static SampleOptions SmolLM2_135M { get; } = new()
    {
        Dim = 576, HiddenDim = 1536, Layers = 30, Heads = 9, KvHeads = 3, VocabSize = 49152, MaxSeqLen = 8192,
        TiedEmbeddings = true, RopeTheta = 100000f,
    };

    /// <summary>Qwen/Qwen2.5-0.5B's shape (24 layers, q/k/v biases, tied embeddings).</summary>
    public static SampleOptions Qwen25_05B { get; } = new()
    {
        ModelType = "qwen2", Dim = 896, HiddenDim = 4864, Layers = 24, Heads = 14, KvHeads = 2, VocabSize = 151936,
        MaxSeqLen = 32768, TiedEmbeddings = true, RopeTheta = 1000000f, NormEps = 1e-6f,
    };

    /// <summary>Qwen/Qwen3-0.6B's shape (28 layers, head_dim 128 with hidden 1024, q/k norms, tied embeddings).</summary>
    public static SampleOptions Qwen3_06B { get; } = new()
    {
        ModelType = "qwen3", Dim = 1024, HiddenDim = 3072, Layers = 28, Heads = 16, KvHeads = 8, HeadDim = 128, VocabSize = 151936,
        MaxSeqLen = 40960, TiedEmbeddings = true, RopeTheta = 1000000f, NormEps = 1e-6f,
    };

    /// <summary>meta-llama/Llama-3.2-1B's shape (16 layers, Llama-3 RoPE scaling, tied embeddings).</summary>
    public static SampleOptions Llama32_1B { get; } = new()
    {
        Dim = 2048, HiddenDim = 8192, Layers = 16, Heads = 32, KvHeads = 8, HeadDim = 64, VocabSize = 128256, MaxSeqLen = 131072,
        TiedEmbeddings = true, RopeTheta = 500000f, RopeScaling = new RopeScaling(32f, 1f, 4f, 8192), NormEps = 1e-5f,
    };

    // After the presets it names: static initialisers run in textual order.
    /// <summary>The presets by the name the <c>sample</c> verb takes.</summary>
    public static IReadOnlyDictionary<string, SampleOptions> Presets { get; } = new Dictionary<string, SampleOptions>(StringComparer.OrdinalIgnoreCase)
    {
        ["tiny"] = new(),
        ["smollm2-135m"] = SmolLM2_135M,
        ["qwen2.5-0.5b"] = Qwen25_05B,
        ["qwen3-0.6b"] = Qwen3_06B,
        ["llama3.2-1b"] = Llama32_1B,
    };
}

/// <summary>
/// Writes a deterministic Llama-shaped checkpoint (Hugging Face layout: <c>config.json</c> + safetensors) whose
/// weights resemble real LLM weights: Laplace-distributed (heavy-tailed, kurtosis 6) with a few outlier input
/// channels, RMSNorm weights near 1. The same options always give the same bytes.
/// </summary>
public static class SampleCheckpoint
{
    public static long ParameterCount(SampleOptions o) => Plan(o).Sum(t => TensorShape.ElementCount(t.Shape));

    /// <summary>Writes the sample model into <paramref name="folder"/> (created if needed) and returns the folder.</summary>
    public static string Write(string folder, SampleOptions options, CancellationToken cancellationToken = default)
    {
        if ((options.HeadDim == 0 && options.Dim % options.Heads != 0) || options.Heads % options.KvHeads != 0)
            throw new ArgumentException("heads must divide dim (or give HeadDim) and kv heads must divide heads");
        if (options.ModelType is not ("llama" or "qwen2" or "qwen3"))
            throw new ArgumentException($"sample models are llama, qwen2 or qwen3, not {options.ModelType}");
        if (options.DType is not (DType.BF16 or DType.F16 or DType.F32))
            throw new ArgumentException($"sample weights are written as BF16, F16 or F32, not {options.DType}");
        Directory.CreateDirectory(folder);
        var tensors = Plan(options);

        var shards = new List<List<(string Name, long[] Shape, Kind Kind, int Index)>> { new() };
        long shardSize = 0;
        foreach (var t in tensors)
        {
            long bytes = TensorShape.ElementCount(t.Shape) * options.DType.ElementSize();
            if (options.ShardBytes > 0 && shardSize > 0 && shardSize + bytes > options.ShardBytes)
            {
                shards.Add([]);
                shardSize = 0;
            }
            shards[^1].Add(t);
            shardSize += bytes;
        }

        var weightMap = new List<(string Tensor, string File)>();
        for (int s = 0; s < shards.Count; s++)
        {
            string file = shards.Count == 1 ? "model.safetensors" : $"model-{s + 1:00000}-of-{shards.Count:00000}.safetensors";
            var writer = new SafetensorsWriter(Path.Combine(folder, file)).AddMetadata("format", "pt")
                .AddMetadata("generator", $"nanoscale sample (seed {options.Seed})");
            foreach (var t in shards[s])
            {
                writer.Add(t.Name, options.DType, t.Shape, stream => WriteTensor(stream, t.Shape, t.Kind, t.Index, options));
                weightMap.Add((t.Name, file));
            }
            writer.Commit(cancellationToken);
        }
        if (shards.Count > 1) WriteIndex(folder, weightMap, tensors.Sum(t => TensorShape.ElementCount(t.Shape)) * options.DType.ElementSize());
        WriteConfig(folder, options);
        if (options.TokenizerFrom is { } from)
            foreach (string name in ModelFolder.TokenizerFileNames)
                if (File.Exists(Path.Combine(from, name)))
                    File.Copy(Path.Combine(from, name), Path.Combine(folder, name), overwrite: true);
        return folder;
    }

    private enum Kind { Embedding, Norm, Linear, Bias }

    /// <summary>Every tensor of the model, named and shaped as the real architecture stores it.</summary>
    private static List<(string Name, long[] Shape, Kind Kind, int Index)> Plan(SampleOptions o)
    {
        int headDim = o.EffectiveHeadDim, qDim = o.Heads * headDim, kvDim = o.KvHeads * headDim;
        var list = new List<(string, long[], Kind, int)>();
        void Add(string name, Kind kind, params long[] shape) => list.Add((name, shape, kind, list.Count));
        Add("model.embed_tokens.weight", Kind.Embedding, o.VocabSize, o.Dim);
        for (int i = 0; i < o.Layers; i++)
        {
            var p = $"model.layers.{i}.";
            Add(p + "input_layernorm.weight", Kind.Norm, o.Dim);
            Add(p + "self_attn.q_proj.weight", Kind.Linear, qDim, o.Dim);
            if (o.AttentionBias) Add(p + "self_attn.q_proj.bias", Kind.Bias, qDim);
            Add(p + "self_attn.k_proj.weight", Kind.Linear, kvDim, o.Dim);
            if (o.AttentionBias) Add(p + "self_attn.k_proj.bias", Kind.Bias, kvDim);
            Add(p + "self_attn.v_proj.weight", Kind.Linear, kvDim, o.Dim);
            if (o.AttentionBias) Add(p + "self_attn.v_proj.bias", Kind.Bias, kvDim);
            Add(p + "self_attn.o_proj.weight", Kind.Linear, o.Dim, qDim);
            if (o.QkNorm)
            {
                Add(p + "self_attn.q_norm.weight", Kind.Norm, headDim);
                Add(p + "self_attn.k_norm.weight", Kind.Norm, headDim);
            }
            Add(p + "post_attention_layernorm.weight", Kind.Norm, o.Dim);
            Add(p + "mlp.gate_proj.weight", Kind.Linear, o.HiddenDim, o.Dim);
            Add(p + "mlp.up_proj.weight", Kind.Linear, o.HiddenDim, o.Dim);
            Add(p + "mlp.down_proj.weight", Kind.Linear, o.Dim, o.HiddenDim);
        }
        Add("model.norm.weight", Kind.Norm, o.Dim);
        if (!o.TiedEmbeddings) Add("lm_head.weight", Kind.Embedding, o.VocabSize, o.Dim);
        return list;
    }

    /// <summary>Generates rows in parallel batches (each row seeded from its own index) and streams them out.</summary>
    private static void WriteTensor(Stream stream, long[] shape, Kind kind, int tensorIndex, SampleOptions o)
    {
        long rows = shape.Length == 1 ? 1 : shape[0];
        int cols = (int)shape[^1];
        int size = o.DType.ElementSize();
        int batchRows = (int)Math.Clamp((1 << 22) / Math.Max(1, cols), 1, rows);
        var values = new float[batchRows * cols];
        var bytes = new byte[values.Length * size];
        double std = kind switch { Kind.Embedding or Kind.Bias => 0.02, Kind.Norm => 0.05, _ => 0.5 / Math.Sqrt(cols) };
        var outliers = OutlierChannels(cols, tensorIndex, o);
        for (long first = 0; first < rows; first += batchRows)
        {
            int count = (int)Math.Min(batchRows, rows - first);
            Parallelism.AllCores.For(count, r =>
            {
                var rng = new SplitMix64(o.Seed ^ ((ulong)tensorIndex << 40) ^ (ulong)(first + r) * 0x9E3779B97F4A7C15UL);
                var row = values.AsSpan(r * cols, cols);
                for (int c = 0; c < cols; c++)
                {
                    double v = rng.NextLaplace(std / Math.Sqrt(2));
                    row[c] = kind == Kind.Norm ? (float)(1 + v) : (float)(outliers[c] ? v * o.OutlierScale : v);
                }
            });
            TensorData.FromFloat(values.AsSpan(0, count * cols), o.DType, bytes.AsSpan(0, count * cols * size));
            stream.Write(bytes, 0, count * cols * size);
        }
    }

    private static bool[] OutlierChannels(int cols, int tensorIndex, SampleOptions o)
    {
        var flags = new bool[cols];
        var rng = new SplitMix64(o.Seed * 31 + (ulong)tensorIndex);
        int count = (int)Math.Round(cols * o.OutlierChannelFraction);
        for (int i = 0; i < count; i++) flags[(int)(rng.Next() % (ulong)cols)] = true;
        return flags;
    }

    private static void WriteIndex(string folder, List<(string Tensor, string File)> weightMap, long totalSize)
    {
        using var stream = new StringWriter(CultureInfo.InvariantCulture);
        stream.Write($"{{\"metadata\":{{\"total_size\":{totalSize}}},\"weight_map\":{{");
        stream.Write(string.Join(",", weightMap.Select(w => $"\"{w.Tensor}\":\"{w.File}\"")));
        stream.Write("}}");
        AtomicFile.WriteAllText(Path.Combine(folder, CheckpointLoader.IndexFileName), stream.ToString());
    }

    private static void WriteConfig(string folder, SampleOptions o) =>
        AtomicFile.WriteAllText(Path.Combine(folder, "config.json"), HuggingFaceConfig.Write(o.Config, o.DType));
}

/// <summary>SplitMix64: a tiny, fast, well-mixed generator whose output never changes across .NET versions.</summary>
internal struct SplitMix64(ulong seed)
{
    private ulong _state = seed;

    public ulong Next()
    {
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in (0, 1): 53 random bits, never exactly 0.</summary>
    public double NextDouble() => ((Next() >> 11) + 0.5) * (1.0 / (1UL << 53));

    /// <summary>Laplace(0, b): heavy-tailed like trained weights; variance 2b².</summary>
    public double NextLaplace(double b)
    {
        double u = NextDouble() - 0.5;
        return -b * Math.Sign(u) * Math.Log(1 - 2 * Math.Abs(u));
    }
}
