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
}

/// <summary>
/// Writes a deterministic Llama-shaped checkpoint (Hugging Face layout: <c>config.json</c> + safetensors) whose
/// weights resemble real LLM weights: Laplace-distributed (heavy-tailed, kurtosis 6) with a few outlier input
/// channels, RMSNorm weights near 1. The same options always give the same bytes.
/// </summary>
public static class SampleCheckpoint
{
    public static long ParameterCount(SampleOptions o)
    {
        long kvDim = (long)o.KvHeads * (o.Dim / o.Heads);
        long perLayer = 2L * o.Dim + 2L * o.Dim * o.Dim + 2 * kvDim * o.Dim + 3L * o.HiddenDim * o.Dim;
        return 2L * o.VocabSize * o.Dim + o.Layers * perLayer + o.Dim;
    }

    /// <summary>Writes the sample model into <paramref name="folder"/> (created if needed) and returns the folder.</summary>
    public static string Write(string folder, SampleOptions options, CancellationToken cancellationToken = default)
    {
        if (options.Dim % options.Heads != 0 || options.Heads % options.KvHeads != 0)
            throw new ArgumentException("heads must divide dim and kv heads must divide heads");
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
        return folder;
    }

    private enum Kind { Embedding, Norm, Linear }

    private static List<(string Name, long[] Shape, Kind Kind, int Index)> Plan(SampleOptions o)
    {
        int kvDim = o.KvHeads * (o.Dim / o.Heads);
        var list = new List<(string, long[], Kind, int)>();
        void Add(string name, Kind kind, params long[] shape) => list.Add((name, shape, kind, list.Count));
        Add("model.embed_tokens.weight", Kind.Embedding, o.VocabSize, o.Dim);
        for (int i = 0; i < o.Layers; i++)
        {
            var p = $"model.layers.{i}.";
            Add(p + "input_layernorm.weight", Kind.Norm, o.Dim);
            Add(p + "self_attn.q_proj.weight", Kind.Linear, o.Dim, o.Dim);
            Add(p + "self_attn.k_proj.weight", Kind.Linear, kvDim, o.Dim);
            Add(p + "self_attn.v_proj.weight", Kind.Linear, kvDim, o.Dim);
            Add(p + "self_attn.o_proj.weight", Kind.Linear, o.Dim, o.Dim);
            Add(p + "post_attention_layernorm.weight", Kind.Norm, o.Dim);
            Add(p + "mlp.gate_proj.weight", Kind.Linear, o.HiddenDim, o.Dim);
            Add(p + "mlp.up_proj.weight", Kind.Linear, o.HiddenDim, o.Dim);
            Add(p + "mlp.down_proj.weight", Kind.Linear, o.Dim, o.HiddenDim);
        }
        Add("model.norm.weight", Kind.Norm, o.Dim);
        Add("lm_head.weight", Kind.Embedding, o.VocabSize, o.Dim);
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
        double std = kind switch { Kind.Embedding => 0.02, Kind.Norm => 0.05, _ => 0.5 / Math.Sqrt(cols) };
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
        AtomicFile.WriteAllText(Path.Combine(folder, "config.json"), string.Create(CultureInfo.InvariantCulture, $$"""
            {
              "architectures": ["LlamaForCausalLM"],
              "model_type": "llama",
              "hidden_size": {{o.Dim}},
              "intermediate_size": {{o.HiddenDim}},
              "num_hidden_layers": {{o.Layers}},
              "num_attention_heads": {{o.Heads}},
              "num_key_value_heads": {{o.KvHeads}},
              "vocab_size": {{o.VocabSize}},
              "max_position_embeddings": {{o.MaxSeqLen}},
              "rms_norm_eps": 1e-05,
              "rope_theta": 10000.0,
              "tie_word_embeddings": false,
              "torch_dtype": "{{(o.DType == DType.BF16 ? "bfloat16" : o.DType == DType.F16 ? "float16" : "float32")}}"
            }
            """));
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
