using System.Buffers.Binary;
using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// A llama2.c checkpoint (legacy format): 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
/// vocab_size, seq_len), then fp32 weights stacked by kind across layers, then the legacy RoPE tables, then the
/// classifier when vocab_size is negative (otherwise the classifier shares the token embedding).
/// Tensors are exposed per layer under Hugging Face Llama names (see <see cref="ICheckpoint"/>), with
/// <see cref="RopeStyle.Interleaved"/> rotary pairs, since llama2.c's q and k rows are not permuted.
/// </summary>
internal sealed class Llama2cCheckpoint : ICheckpoint
{
    public const int HeaderBytes = 28;

    // Bounds that no real llama2.c model comes near; anything beyond is a corrupt or foreign file.
    private const int MaxDim = 1 << 16, MaxHidden = 1 << 18, MaxLayers = 1024, MaxVocab = 1 << 22, MaxSeqLen = 1 << 20;

    private readonly MappedFile _file;
    private readonly Dictionary<string, TensorInfo> _byName;

    private Llama2cCheckpoint(string path, MappedFile file, ModelConfig config, List<TensorInfo> tensors)
    {
        Path = path;
        _file = file;
        Config = config;
        Tensors = tensors;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public string Path { get; }

    public IReadOnlyList<string> Files => [System.IO.Path.GetFullPath(Path)];

    /// <summary>The format has no integrity record: the tensors are counted, not checked.</summary>
    public IntegrityReport Verify(CancellationToken cancellationToken = default) => new(Path, 1, Tensors.Count, 0, 0, []);

    public CheckpointKind Kind => CheckpointKind.Llama2c;

    public IReadOnlyList<TensorInfo> Tensors { get; }

    public IReadOnlyList<KeyValuePair<string, string>> Metadata { get; } = [];

    public ModelConfig Config { get; }

    ModelConfig? ICheckpoint.Config => Config;

    public TensorInfo? Find(string name) => _byName.GetValueOrDefault(name);

    public TensorView Map(TensorInfo tensor)
    {
        if (Find(tensor.Name) != tensor) throw new ArgumentException($"{tensor.Name} is not a tensor of {Path}");
        return _file.View(tensor);
    }

    public void Dispose() => _file.Dispose();

    /// <summary>True when the first bytes look like a llama2.c legacy header (used to detect the format).</summary>
    public static bool LooksLikeLlama2c(ReadOnlySpan<byte> firstBytes, long fileLength)
    {
        if (firstBytes.Length < HeaderBytes || fileLength < HeaderBytes) return false;
        return TryReadConfig(firstBytes, fileLength, out _, out _);
    }

    /// <summary>Opens and validates a llama2.c checkpoint.</summary>
    /// <exception cref="CheckpointFormatException">The header is absurd or the file size does not match it.</exception>
    public static Llama2cCheckpoint Open(string path)
    {
        var file = new MappedFile(path);
        try
        {
            if (file.Length < HeaderBytes)
                throw new CheckpointFormatException(path, "header", 0,
                    $"file is {file.Length} bytes; a llama2.c checkpoint starts with a {HeaderBytes}-byte header");
            Span<byte> header = stackalloc byte[HeaderBytes];
            using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1))
                stream.ReadExactly(header);
            if (header[..4].SequenceEqual("ak42"u8))
                throw new CheckpointFormatException(path, "magic", 0,
                    "this is a llama2.c version-1/2 export (magic \"ak42\"); only the legacy fp32 format is supported");
            if (!TryReadConfig(header, file.Length, out var config, out var problem))
                throw new CheckpointFormatException(path, problem!.Value.Field, problem.Value.Offset, problem.Value.Message);
            return new Llama2cCheckpoint(path, file, config!, Layout(path, config!));
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private readonly record struct Problem(string Field, long Offset, string Message);

    private static bool TryReadConfig(ReadOnlySpan<byte> header, long fileLength, out ModelConfig? config, out Problem? problem)
    {
        config = null;
        Span<int> f = stackalloc int[7];
        for (int i = 0; i < 7; i++) f[i] = BinaryPrimitives.ReadInt32LittleEndian(header[(4 * i)..]);
        int dim = f[0], hidden = f[1], layers = f[2], heads = f[3], kvHeads = f[4], vocab = f[5], seqLen = f[6];

        problem = null;
        if (dim <= 0 || dim > MaxDim) problem = new("dim", 0, $"dim {dim} is outside 1..{MaxDim}");
        else if (hidden <= 0 || hidden > MaxHidden) problem = new("hidden_dim", 4, $"hidden_dim {hidden} is outside 1..{MaxHidden}");
        else if (layers <= 0 || layers > MaxLayers) problem = new("n_layers", 8, $"n_layers {layers} is outside 1..{MaxLayers}");
        else if (heads <= 0 || dim % heads != 0 || (dim / heads) % 2 != 0)
            problem = new("n_heads", 12, $"n_heads {heads} must divide dim {dim} into an even head size");
        else if (kvHeads <= 0 || kvHeads > heads || heads % kvHeads != 0)
            problem = new("n_kv_heads", 16, $"n_kv_heads {kvHeads} must divide n_heads {heads}");
        else if (vocab == 0 || vocab == int.MinValue || Math.Abs(vocab) > MaxVocab)
            problem = new("vocab_size", 20, $"vocab_size {vocab} is outside ±1..{MaxVocab}");
        else if (seqLen <= 0 || seqLen > MaxSeqLen) problem = new("seq_len", 24, $"seq_len {seqLen} is outside 1..{MaxSeqLen}");
        if (problem is not null) return false;

        var candidate = new ModelConfig
        {
            Architecture = "llama2.c",
            Dim = dim,
            HiddenDim = hidden,
            Layers = layers,
            Heads = heads,
            KvHeads = kvHeads,
            VocabSize = Math.Abs(vocab),
            MaxSeqLen = seqLen,
            NormEps = 1e-5f,
            RopeTheta = 10000f,
            RopeStyle = RopeStyle.Interleaved,
            TiedEmbeddings = vocab > 0,
        };
        long expected = HeaderBytes + 4 * FloatCount(candidate);
        if (fileLength != expected)
        {
            problem = new("file size", Math.Min(fileLength, expected),
                $"header (dim {dim}, hidden {hidden}, layers {layers}, heads {heads}, kv heads {kvHeads}, vocab {vocab}, " +
                $"seq_len {seqLen}) describes {expected} bytes but the file has {fileLength}" +
                (fileLength < expected ? " (truncated?)" : ""));
            return false;
        }
        config = candidate;
        return true;
    }

    private static long FloatCount(ModelConfig c)
    {
        long dim = c.Dim, hidden = c.HiddenDim, layers = c.Layers, kvDim = c.KvDim, vocab = c.VocabSize;
        long perLayer = dim + dim * dim + 2 * kvDim * dim + dim * dim + dim + 3 * hidden * dim;
        long ropeTables = (long)c.MaxSeqLen * c.HeadDim; // freq_cis_real and freq_cis_imag, seq_len × head_size/2 each
        return vocab * dim + layers * perLayer + dim + ropeTables + (c.TiedEmbeddings ? 0 : vocab * dim);
    }

    /// <summary>Walks the file in llama2.c's order and cuts each stacked weight into per-layer tensors.</summary>
    private static List<TensorInfo> Layout(string path, ModelConfig c)
    {
        var tensors = new List<TensorInfo>();
        long offset = HeaderBytes;
        void Add(string name, params long[] shape)
        {
            long bytes = 4 * TensorShape.ElementCount(shape);
            tensors.Add(new TensorInfo(name, DType.F32, shape, path, offset, bytes));
            offset += bytes;
        }
        void PerLayer(string suffix, params long[] shape)
        {
            for (int i = 0; i < c.Layers; i++) Add($"model.layers.{i}.{suffix}", shape);
        }

        Add("model.embed_tokens.weight", c.VocabSize, c.Dim);
        PerLayer("input_layernorm.weight", c.Dim);
        PerLayer("self_attn.q_proj.weight", c.Dim, c.Dim);
        PerLayer("self_attn.k_proj.weight", c.KvDim, c.Dim);
        PerLayer("self_attn.v_proj.weight", c.KvDim, c.Dim);
        PerLayer("self_attn.o_proj.weight", c.Dim, c.Dim);
        PerLayer("post_attention_layernorm.weight", c.Dim);
        PerLayer("mlp.gate_proj.weight", c.HiddenDim, c.Dim); // w1
        PerLayer("mlp.down_proj.weight", c.Dim, c.HiddenDim); // w2
        PerLayer("mlp.up_proj.weight", c.HiddenDim, c.Dim);   // w3
        Add("model.norm.weight", c.Dim);
        offset += 4L * c.MaxSeqLen * c.HeadDim; // legacy RoPE tables, recomputed by the runtime
        if (!c.TiedEmbeddings) Add("lm_head.weight", c.VocabSize, c.Dim);
        return tensors;
    }
}
