using System.Buffers.Binary;
using System.Text;
using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// A GGUF file (llama.cpp's format, versions 2 and 3): magic <c>GGUF</c>, version, tensor and metadata counts,
/// typed key–value metadata, tensor infos, then aligned tensor data. F32, F16 and BF16 tensors are exposed as they
/// are; a tensor of one of ggml's block types (<see cref="QuantizedTypes"/>) is exposed as its raw blocks,
/// <c>NAME.blocks</c> U8 [rows, blocks per row, bytes per block], and listed in <see cref="Quantized"/> so that the
/// logical view (<c>Codecs.LogicalCheckpoint</c>) decodes it with the matching ggml format; other types are refused by
/// name. Llama-architecture files get Hugging Face Llama tensor names and a <see cref="ModelConfig"/> (llama.cpp's q/k
/// rows are permuted for interleaved rotary pairs).
/// </summary>
internal sealed class GgufFile : ICheckpoint
{
    private const uint Magic = 0x46554747; // "GGUF" little-endian
    private const int MaxDims = 4;         // GGML_MAX_DIMS
    /// <summary>llama.cpp's tensor of Llama-3 rotary divisors, read into <see cref="ModelConfig.RopeFrequencyFactors"/>.</summary>
    internal const string RopeFactorsName = "rope_freqs.weight";

    private const long MaxStringBytes = 1 << 24, MaxArrayItems = 1 << 26, MaxCount = 1 << 24;

    private readonly MappedFile _file;
    private readonly Dictionary<string, TensorInfo> _byName;

    /// <summary>The ggml block types whose tensors are read (decoded by the ggml formats of the same names).</summary>
    public static IReadOnlyList<GgmlType> QuantizedTypes { get; } =
        [GgmlType.Q8_0, GgmlType.Q4_0, GgmlType.Q4_1, GgmlType.Q5_0, GgmlType.Q5_1, GgmlType.Mxfp4, GgmlType.Q4_K, GgmlType.Q5_K, GgmlType.Q6_K];

    /// <summary>A tensor stored in a ggml block type: its logical name, type and shape (its blocks are <c>NAME.blocks</c>).</summary>
    public sealed record QuantizedTensor(string Name, GgmlType Type, long[] Shape);

    private GgufFile(string path, MappedFile file, int version, List<TensorInfo> tensors,
        List<KeyValuePair<string, string>> metadata, ModelConfig? config, List<QuantizedTensor> quantized)
    {
        Quantized = quantized;
        Path = path;
        _file = file;
        Version = version;
        Tensors = tensors;
        Metadata = metadata;
        Config = config;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
    }

    public string Path { get; }

    public IReadOnlyList<string> Files => [System.IO.Path.GetFullPath(Path)];

    /// <summary>The format has no integrity record: the tensors are counted, not checked.</summary>
    public IntegrityReport Verify(CancellationToken cancellationToken = default) => new(Path, 1, Tensors.Count, 0, 0, []);
    public CheckpointKind Kind => CheckpointKind.Gguf;
    public int Version { get; }
    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>GGUF metadata as strings (arrays summarised as <c>[type × count]</c>), in file order.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Metadata { get; }

    public ModelConfig? Config { get; }

    /// <summary>The tokenizer a GGUF file carries (<c>tokenizer.ggml.*</c>), or null when it has none.</summary>
    public EmbeddedVocabulary? Vocabulary { get; private init; }

    /// <summary>A GGUF file's vocabulary: llama.cpp's tokenizer model name, the tokens (as stored: SentencePiece pieces
    /// with U+2581 for spaces, or byte-level BPE strings), their scores and types when given, a BPE vocabulary's
    /// merges and pre-tokenizer name, BOS and EOS and whether BOS is added.</summary>
    public sealed class EmbeddedVocabulary
    {
        public string? Model { get; set; }
        public string? Pre { get; set; }
        public List<object> Tokens { get; } = [];
        public List<object> Scores { get; } = [];
        public List<object> TokenTypes { get; } = [];
        public List<object> Merges { get; } = [];
        public int? Bos { get; set; }
        public int? Eos { get; set; }
        public bool? AddBos { get; set; }
    }

    /// <summary>The tensors stored in ggml block types, in file order.</summary>
    public IReadOnlyList<QuantizedTensor> Quantized { get; }

    public TensorInfo? Find(string name) => _byName.GetValueOrDefault(name);

    public TensorView Map(TensorInfo tensor)
    {
        if (Find(tensor.Name) != tensor) throw new ArgumentException($"{tensor.Name} is not a tensor of {Path}");
        return _file.View(tensor);
    }

    public void Dispose() => _file.Dispose();

    public static GgufFile Open(string path)
    {
        var file = new MappedFile(path);
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            var reader = new Reader(path, stream);
            if (reader.U32("magic") != Magic) throw reader.Error("magic", "not a GGUF file (magic is not \"GGUF\")");
            int version = (int)reader.U32("version");
            if (version is not (2 or 3)) throw reader.Error("version", $"GGUF version {version} is not supported (2 or 3)");
            long tensorCount = reader.Count("tensor_count");
            long kvCount = reader.Count("metadata_kv_count");

            var metadata = new List<KeyValuePair<string, string>>();
            var numbers = new Dictionary<string, double>(StringComparer.Ordinal);
            var arrayLengths = new Dictionary<string, long>(StringComparer.Ordinal);
            var vocabulary = new EmbeddedVocabulary();
            string architecture = "";
            long alignment = 32;
            for (long i = 0; i < kvCount; i++)
            {
                var key = reader.String("metadata key");
                // The embedded vocabulary's arrays are kept (their length is already bounded by the file's size).
                reader.Collect = key switch
                {
                    "tokenizer.ggml.tokens" => vocabulary.Tokens,
                    "tokenizer.ggml.scores" => vocabulary.Scores,
                    "tokenizer.ggml.token_type" => vocabulary.TokenTypes,
                    "tokenizer.ggml.merges" => vocabulary.Merges,
                    _ => null,
                };
                var (text, number, arrayLength) = reader.Value(key);
                reader.Collect = null;
                if (key == "tokenizer.ggml.model") vocabulary.Model = text;
                if (key == "tokenizer.ggml.pre") vocabulary.Pre = text;
                if (key == "tokenizer.ggml.add_bos_token" && number is { } addBos) vocabulary.AddBos = addBos != 0;
                if (key == "tokenizer.ggml.bos_token_id" && number is { } bosId) vocabulary.Bos = (int)bosId;
                if (key == "tokenizer.ggml.eos_token_id" && number is { } eosId) vocabulary.Eos = (int)eosId;
                metadata.Add(new(key, text));
                if (number is { } n) numbers[key] = n;
                if (arrayLength is { } len) arrayLengths[key] = len;
                if (key == "general.architecture") architecture = text;
                if (key == "general.alignment")
                {
                    alignment = (long)(number ?? 0);
                    if (alignment <= 0 || (alignment & (alignment - 1)) != 0)
                        throw reader.Error(key, $"alignment {text} is not a positive power of two");
                }
            }

            var infos = new List<(string Name, long[] Shape, GgmlType Type, long Offset, long InfoOffset)>();
            for (long i = 0; i < tensorCount; i++)
            {
                long infoOffset = reader.Position;
                var name = reader.String("tensor name");
                uint dims = reader.U32($"{name}.n_dims");
                if (dims == 0 || dims > MaxDims) throw reader.Error($"{name}.n_dims", $"{dims} dimensions (1..{MaxDims} allowed)");
                var ne = new long[dims];
                for (int d = 0; d < dims; d++)
                {
                    ulong v = reader.U64($"{name}.ne[{d}]");
                    if (v == 0 || v > long.MaxValue) throw reader.Error($"{name}.ne[{d}]", $"dimension {v} is out of range");
                    ne[d] = (long)v;
                }
                uint typeId = reader.U32($"{name}.type");
                var type = GgmlType.FromId(typeId) is { } known && (known.Plain is not null || QuantizedTypes.Contains(known)) ? known
                    : throw reader.Error($"{name}.type",
                        $"ggml type {GgmlType.NameOf(typeId)} is not supported (F32, F16, BF16 and {string.Join(", ", QuantizedTypes.Select(t => t.Name.ToUpperInvariant()))} are read)");
                if (type.IsQuantized && ne[0] % type.BlockSize != 0)
                    throw reader.Error($"{name}.ne[0]", $"rows of {ne[0]} elements are not whole {type.Name} blocks of {type.BlockSize}");
                long offset = (long)Math.Min(reader.U64($"{name}.offset"), long.MaxValue);
                if (offset % alignment != 0) throw reader.Error($"{name}.offset", $"offset {offset} is not aligned to {alignment}");
                Array.Reverse(ne); // ggml's ne[0] is the fastest-varying axis: the last axis of the row-major shape
                infos.Add((name, ne, type, offset, infoOffset));
            }

            long dataStart = (reader.Position + alignment - 1) / alignment * alignment;
            var tensors = new List<TensorInfo>();
            var quantized = new List<QuantizedTensor>();
            // llama.cpp's Llama-family architectures Nanoscale runs: llama, qwen2 (q/k/v biases) and qwen3 (q/k norms,
            // a head width of its own), all with the same tensor names.
            bool llama = architecture is "llama" or "qwen2" or "qwen3";
            foreach (var (name, shape, type, offset, infoOffset) in infos)
            {
                long count = TensorShape.ElementCount(shape);
                // Checked before any multiplication: every type takes at least half a byte per element.
                if (count < 0 || count / 2 > file.Length)
                    throw new CheckpointFormatException(path, name, infoOffset,
                        $"shape [{string.Join(", ", shape)}] holds more elements than the file has bytes");
                long bytes = count / type.BlockSize * type.BytesPerBlock;
                if (offset > file.Length || dataStart + offset + bytes > file.Length)
                    throw new CheckpointFormatException(path, name, dataStart + offset,
                        $"data [{offset}, {offset + bytes}) runs past the end of the file ({file.Length} bytes; truncated?)");
                string logical = llama ? LlamaName(name) : name;
                if (type.Plain is { } dtype)
                    tensors.Add(new TensorInfo(logical, dtype, shape, path, dataStart + offset, bytes));
                else
                {
                    long columns = shape[^1], rows = count / columns;
                    tensors.Add(new TensorInfo($"{logical}.blocks", DType.U8, [rows, columns / type.BlockSize, type.BytesPerBlock], path, dataStart + offset, bytes));
                    quantized.Add(new QuantizedTensor(logical, type, shape));
                }
            }
            CheckOverlaps(path, tensors);
            if (tensors.Select(t => t.Name).Distinct().Count() != tensors.Count)
                throw new CheckpointFormatException(path, "tensor names", null, "a tensor name appears twice");

            var config = llama ? LlamaConfig(path, architecture, numbers, arrayLengths, tensors, quantized) : null;
            // Llama-3's rotary scaling travels as a tensor of per-pair divisors; it is part of the architecture.
            if (config is not null && tensors.FirstOrDefault(t => t.Name == RopeFactorsName) is { } factors)
            {
                if (factors.DType != DType.F32 || factors.Shape is not [var pairs] || pairs != config.HeadDim / 2)
                    throw new CheckpointFormatException(path, RopeFactorsName, factors.FileOffset,
                        $"is {factors.DType} {TensorShape.Text(factors.Shape)}, not F32 [{config.HeadDim / 2}] (one factor per rotary pair)");
                using (var view = file.View(factors)) config = config with { RopeFrequencyFactors = view.ToFloatArray() };
                if (config.RopeFrequencyFactors.Any(f => !(f > 0) || !float.IsFinite(f)))
                    throw new CheckpointFormatException(path, RopeFactorsName, factors.FileOffset, "holds a factor that is not a positive finite number");
                tensors.Remove(factors);
            }
            return new GgufFile(path, file, version, tensors, metadata, config, quantized) { Vocabulary = vocabulary.Model is null ? null : vocabulary };
        }
        catch (EndOfStreamException e)
        {
            file.Dispose();
            throw new CheckpointFormatException(path, "header", new FileInfo(path).Length, "the header ends before the end of its declared fields (truncated?)", e);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static void CheckOverlaps(string path, List<TensorInfo> tensors)
    {
        var ordered = tensors.OrderBy(t => t.FileOffset).ToList();
        for (int i = 1; i < ordered.Count; i++)
            if (ordered[i].FileOffset < ordered[i - 1].FileOffset + ordered[i - 1].ByteLength)
                throw new CheckpointFormatException(path, ordered[i].Name, ordered[i].FileOffset, $"data overlaps {ordered[i - 1].Name}");
    }

    private static readonly (string Gguf, string Hf)[] LayerNames =
    [
        ("attn_norm", "input_layernorm"), ("attn_q", "self_attn.q_proj"), ("attn_k", "self_attn.k_proj"),
        ("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"), ("ffn_norm", "post_attention_layernorm"),
        ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj"),
        ("attn_q_norm", "self_attn.q_norm"), ("attn_k_norm", "self_attn.k_norm"),
    ];

    /// <summary>llama.cpp tensor names → Hugging Face Llama names (docs/checkpoints.md); unknown names stay as they are.</summary>
    internal static string LlamaName(string name)
    {
        switch (name)
        {
            case "token_embd.weight": return "model.embed_tokens.weight";
            case "output_norm.weight": return "model.norm.weight";
            case "output.weight": return "lm_head.weight";
        }
        var parts = name.Split('.');
        if (parts.Length == 4 && parts[0] == "blk" && int.TryParse(parts[1], out int layer))
            foreach (var (gguf, hf) in LayerNames)
                if (parts[2] == gguf) return $"model.layers.{layer}.{hf}.{parts[3]}";
        return name;
    }

    /// <summary>Hugging Face Llama names → llama.cpp tensor names (the inverse of <see cref="LlamaName"/>); null for a
    /// name llama.cpp's llama architecture has no tensor for.</summary>
    internal static string? GgufName(string name)
    {
        switch (name)
        {
            case "model.embed_tokens.weight": return "token_embd.weight";
            case "model.norm.weight": return "output_norm.weight";
            case "lm_head.weight": return "output.weight";
        }
        const string prefix = "model.layers.";
        if (!name.StartsWith(prefix, StringComparison.Ordinal)) return null;
        int dot = name.IndexOf('.', prefix.Length);
        if (dot < 0 || !int.TryParse(name.AsSpan(prefix.Length, dot - prefix.Length), out int layer)) return null;
        var rest = name[(dot + 1)..];
        foreach (var (gguf, hf) in LayerNames)
            if (rest.StartsWith(hf + ".", StringComparison.Ordinal) && rest.LastIndexOf('.') == hf.Length)
                return $"blk.{layer}.{gguf}.{rest[(hf.Length + 1)..]}";
        return null;
    }

    /// <summary>The model configuration of a llama, qwen2 or qwen3 file, from the metadata under the architecture's
    /// name and the tensors present (biases, q/k norms, an output head). llama.cpp's converter permutes the q/k rows of
    /// llama files for its interleaved rotation and leaves qwen2/qwen3 files in Hugging Face's order (NeoX rotation).</summary>
    private static ModelConfig LlamaConfig(string path, string architecture, Dictionary<string, double> n, Dictionary<string, long> arrays,
        List<TensorInfo> tensors, List<QuantizedTensor> quantized)
    {
        long? Rows(string name) => tensors.FirstOrDefault(t => t.Name == name)?.Shape[0] ?? quantized.FirstOrDefault(t => t.Name == name)?.Shape[0];
        bool Has(string name) => Rows(name) is not null;
        int Int(string key) => n.TryGetValue(architecture + key, out var v) && v > 0 && v <= int.MaxValue ? (int)v
            : throw new CheckpointFormatException(path, architecture + key, null, "missing or not a positive integer");
        double? Number(string key) => n.TryGetValue(architecture + key, out var v) ? v : null;
        int heads = Int(".attention.head_count");
        int dim = Int(".embedding_length");
        int headDim = Number(".attention.key_length") is { } key && key > 0 && key <= int.MaxValue && (int)key != dim / heads ? (int)key : 0;
        long embeddingRows = Rows("model.embed_tokens.weight") ?? 0;
        int vocab = arrays.TryGetValue("tokenizer.ggml.tokens", out var tokens) ? (int)tokens : (int)embeddingRows;
        if (embeddingRows > 0 && vocab != embeddingRows)
            throw new CheckpointFormatException(path, "tokenizer.ggml.tokens", null,
                $"the vocabulary has {vocab} tokens but token_embd.weight has {embeddingRows} rows");
        return new ModelConfig
        {
            Architecture = architecture + " (gguf)",
            Dim = dim,
            HiddenDim = Int(".feed_forward_length"),
            Layers = Int(".block_count"),
            Heads = heads,
            KvHeads = Number(".attention.head_count_kv") is { } kv ? (int)kv : heads,
            HeadDim = headDim,
            VocabSize = vocab,
            MaxSeqLen = Int(".context_length"),
            NormEps = Number(".attention.layer_norm_rms_epsilon") is { } eps ? (float)eps : 1e-5f,
            RopeTheta = Number(".rope.freq_base") is { } theta ? (float)theta : 10000f,
            RopeStyle = architecture == "llama" ? RopeStyle.Interleaved : RopeStyle.Halves,
            AttentionBias = Has("model.layers.0.self_attn.q_proj.bias"),
            QkNorm = Has("model.layers.0.self_attn.q_norm.weight"),
            TiedEmbeddings = !Has("lm_head.weight"),
        };
    }

    /// <summary>Little-endian reads with every length checked against the file before anything is allocated.</summary>
    private sealed class Reader(string path, FileStream stream)
    {
        private readonly byte[] _buffer = new byte[8];

        public long Position => stream.Position;

        /// <summary>Where the items of the array being read go (strings, or numbers as doubles); null keeps none.</summary>
        public List<object>? Collect { get; set; }

        public CheckpointFormatException Error(string field, string problem) => new(path, field, stream.Position, problem);

        private ReadOnlySpan<byte> Take(int count)
        {
            stream.ReadExactly(_buffer, 0, count);
            return _buffer.AsSpan(0, count);
        }

        public uint U32(string field) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
        public ulong U64(string field) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));

        public long Count(string field)
        {
            ulong v = U64(field);
            if (v > MaxCount) throw Error(field, $"{v} is absurd (more than {MaxCount})");
            return (long)v;
        }

        public string String(string field)
        {
            ulong length = U64(field);
            if (length > MaxStringBytes || (long)length > stream.Length - stream.Position)
                throw Error(field, $"string length {length} runs past the end of the file or exceeds {MaxStringBytes} bytes");
            var bytes = new byte[length];
            stream.ReadExactly(bytes);
            return Encoding.UTF8.GetString(bytes);
        }

        /// <summary>Reads one typed value; returns its text, its number (for numeric types), and its length (arrays).</summary>
        public (string Text, double? Number, long? ArrayLength) Value(string key, uint? knownType = null)
        {
            uint type = knownType ?? U32($"{key}.type");
            switch (type)
            {
                case 0: { var v = Take(1)[0]; return (v.ToString(), v, null); }
                case 1: { var v = (sbyte)Take(1)[0]; return (v.ToString(), v, null); }
                case 2: { var v = BinaryPrimitives.ReadUInt16LittleEndian(Take(2)); return (v.ToString(), v, null); }
                case 3: { var v = BinaryPrimitives.ReadInt16LittleEndian(Take(2)); return (v.ToString(), v, null); }
                case 4: { var v = BinaryPrimitives.ReadUInt32LittleEndian(Take(4)); return (v.ToString(), v, null); }
                case 5: { var v = BinaryPrimitives.ReadInt32LittleEndian(Take(4)); return (v.ToString(), v, null); }
                case 6: { var v = BinaryPrimitives.ReadSingleLittleEndian(Take(4)); return (v.ToString(System.Globalization.CultureInfo.InvariantCulture), v, null); }
                case 7: { var v = Take(1)[0]; if (v > 1) throw Error(key, $"bool value {v}"); return (v == 1 ? "true" : "false", v, null); }
                case 8: return (String(key), null, null);
                case 9:
                {
                    uint itemType = U32($"{key}.item_type");
                    ulong count = U64($"{key}.count");
                    if (itemType == 9) throw Error(key, "nested arrays are not supported");
                    if (count > MaxArrayItems || (long)count > stream.Length - stream.Position)
                        throw Error(key, $"array of {count} items runs past the end of the file");
                    var collect = Collect;
                    Collect = null;
                    for (ulong i = 0; i < count; i++)
                    {
                        var (itemText, itemNumber, _) = Value(key, itemType);
                        collect?.Add(itemType == 8 ? itemText : (object)(itemNumber ?? 0));
                    }
                    Collect = collect;
                    return ($"[type {itemType} × {count}]", null, (long)count);
                }
                case 10: { var v = BinaryPrimitives.ReadUInt64LittleEndian(Take(8)); return (v.ToString(), v, null); }
                case 11: { var v = BinaryPrimitives.ReadInt64LittleEndian(Take(8)); return (v.ToString(), v, null); }
                case 12: { var v = BinaryPrimitives.ReadDoubleLittleEndian(Take(8)); return (v.ToString(System.Globalization.CultureInfo.InvariantCulture), v, null); }
                default: throw Error($"{key}.type", $"unknown GGUF value type {type}");
            }
        }
    }
}
