using System.Globalization;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Lossless;
using Nanoscale.Tensors;

namespace Nanoscale.Codecs;

/// <summary>
/// The rANS-coded codecs in the container (SPEC §9–§10): <c>lossless</c> stores each tensor bit for bit, any dtype;
/// <c>vp:…</c> first rounds BF16/F16/F32 mantissas to m(e) bits (variable precision, exponent floor), then codes the
/// result the same way. Either is one part, <c>NAME.ans</c> (U8), the self-describing stream of docs/lossless.md.
/// </summary>
internal sealed class EntropyTensorCodec : ITensorCodec, ICodec
{
    private readonly VariablePrecisionOptions? _precision;

    private EntropyTensorCodec(string spec, VariablePrecisionOptions? precision)
    {
        Spec = spec;
        _precision = precision;
    }

    public static EntropyTensorCodec Lossless { get; } = new("lossless", null);

    /// <summary>The rows of the format table: <c>lossless</c> and <c>vp</c>.</summary>
    internal static IEnumerable<FormatTraits> Traits() =>
    [
        new("lossless", [], "bit-exact: byte planes coded with rANS (any dtype; ~10.6 bpw on bf16 weights)", 10.6, [], (_, _) => Lossless),
        new("vp", [], "variable precision: mantissa rounded to m(e) bits, exponent floor, then rANS-coded (SPEC §10)", 0,
        [
            new FormatOption("mant", "3", [], "mantissa bits kept near the typical magnitude"),
            new FormatOption("floor", "0", [], "biased exponents below this flush to zero"),
            new FormatOption("taper", "0", [], "mantissa bits dropped per binade beyond the window (0 = uniform)"),
            new FormatOption("width", "2", [], "binades each side of the centre that keep all bits"),
            new FormatOption("center", "", [], "biased exponent of the centre (default: each tensor's most frequent)"),
        ], (spec, canonical) => new EntropyTensorCodec(canonical, PrecisionOptions(spec))),
    ];

    /// <summary>The variable-precision options a (validated) <c>vp</c> spec names: every value a non-negative integer;
    /// ranges that depend on the dtype are checked when a tensor is rounded.</summary>
    private static VariablePrecisionOptions PrecisionOptions(FormatSpec spec)
    {
        int? Value(string key)
        {
            if (spec[key] is not { } text) return null;
            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int value)
                ? value
                : throw new FormatSpecException(spec.ToString(), $"'{key}' needs a non-negative integer value, found '{text}'");
        }
        var defaults = new VariablePrecisionOptions();
        return defaults with
        {
            MantissaBits = Value("mant") ?? defaults.MantissaBits,
            ExponentFloor = Value("floor") ?? defaults.ExponentFloor,
            TaperBitsPerBinade = Value("taper") ?? defaults.TaperBitsPerBinade,
            TaperWidth = Value("width") ?? defaults.TaperWidth,
            TaperCenter = Value("center"),
        };
    }

    /// <summary>The options of a <c>vp</c> codec (null for <c>lossless</c>).</summary>
    internal VariablePrecisionOptions? Precision => _precision;

    public string Spec { get; }

    public bool IsLossless => _precision is null;

    public EncodedTensor Encode(TensorView source, EncodeOptions options, CancellationToken cancellationToken = default)
    {
        var tensor = source.Tensor;
        if (tensor.ByteLength > Array.MaxLength)
            throw new InputException($"{tensor.Name}: tensors over 2 GiB are not supported by {Spec} yet");
        cancellationToken.ThrowIfCancellationRequested();
        var lossless = LosslessOptions.Default with { Parallelism = options.Parallelism };
        ReadOnlyMemory<byte> coded;
        if (_precision is null)
        {
            coded = LosslessCodec.EncodeUntrimmed(source.Bytes, tensor.DType, lossless);
        }
        else
        {
            if (tensor.DType is not (DType.BF16 or DType.F16 or DType.F32))
                throw new InputException($"{tensor.Name}: {Spec} applies to BF16, F16 and F32 tensors, not {tensor.DType}");
            coded = Nanoscale.Lossless.VariablePrecision.Encode(source.Bytes, tensor.DType,
                _precision with { Lossless = _precision.Lossless with { Parallelism = options.Parallelism } }, out _);
        }
        return new EncodedTensor([new EncodedPart("ans", DType.U8, [coded.Length], coded)]);
    }

    public ITensorDecoder OpenDecoder(StoredTensor stored) => new Decoder(stored);

    /// <summary>Decodes the whole tensor once, on first use (thread-safe), then serves rows and bytes from it.</summary>
    /// <summary>
    /// Streams a coded tensor: rows are decoded chunk by chunk (the stream's independent chunks, 256 KiB by default)
    /// into a buffer of the reading thread, never the whole tensor, so a model of coded tensors runs in about its
    /// compressed size (the mapped file) plus one chunk per thread. A thread keeps its last chunk, so the tiles of
    /// rows a product reads in order decode each chunk once. Every chunk's checksum is checked as it is decoded.
    /// </summary>
    private sealed class Decoder : ITensorDecoder
    {
        private readonly Lazy<TensorView> _view; // mapped (and its checksum verified) at the first read, as other decoders do
        private readonly Lazy<LosslessCodec.ChunkIndex> _index;

        public Decoder(StoredTensor stored)
        {
            Stored = stored;
            _view = new Lazy<TensorView>(() => stored.Map("ans"), LazyThreadSafetyMode.ExecutionAndPublication);
            _index = new Lazy<LosslessCodec.ChunkIndex>(ReadIndex, LazyThreadSafetyMode.ExecutionAndPublication);
        }

        public StoredTensor Stored { get; }

        private LosslessCodec.ChunkIndex ReadIndex()
        {
            var index = Located(() => LosslessCodec.ReadIndex(_view.Value.Bytes, Stored.Name));
            long expected = Stored.ElementCount * Stored.DType.ElementSize();
            if (index.Info.DecodedLength != expected || index.Info.DType.ElementSize() != Stored.DType.ElementSize())
            {
                var part = Stored.Part("ans");
                throw new CheckpointFormatException(part.FilePath, part.Name, part.FileOffset,
                    $"coded stream holds {index.Info.DecodedLength} bytes of {index.Info.DType} but {Stored.DType} × [{string.Join(", ", Stored.Shape)}] needs {expected}");
            }
            return index;
        }

        /// <summary>A damaged stream as an error located in the file (part, byte offset).</summary>
        private T Located<T>(Func<T> read)
        {
            try { return read(); }
            catch (LosslessFormatException e)
            {
                var part = Stored.Part("ans");
                throw new CheckpointFormatException(part.FilePath, part.Name, part.FileOffset + e.Offset, e.Message, e);
            }
        }

        private sealed class ChunkCache
        {
            public Decoder? Owner;
            public int Chunk = -1;
            public byte[] Bytes = [];
        }

        [ThreadStatic] private static ChunkCache? t_cache;

        /// <summary>The decoded bytes of <paramref name="chunk"/>, in this thread's buffer (valid until its next call).</summary>
        private ReadOnlySpan<byte> Chunk(int chunk)
        {
            var index = _index.Value;
            int length = index.DecodedBytes(chunk);
            var cache = t_cache ??= new ChunkCache();
            if (ReferenceEquals(cache.Owner, this) && cache.Chunk == chunk) return cache.Bytes.AsSpan(0, length);
            if (cache.Bytes.Length < length) cache.Bytes = new byte[index.DecodedBytes(0)];
            cache.Owner = null;
            Located(() =>
            {
                LosslessCodec.DecodeChunk(_view.Value.Bytes, index, chunk, cache.Bytes.AsSpan(0, length));
                return 0;
            });
            (cache.Owner, cache.Chunk) = (this, chunk);
            return cache.Bytes.AsSpan(0, length);
        }

        public void ReadRows(long firstRow, int count, Span<float> destination)
        {
            int size = Stored.DType.ElementSize();
            long columns = Stored.Columns, first = firstRow * columns, end = first + count * columns;
            var values = destination[..checked((int)(count * columns))];
            int chunkElements = _index.Value.Info.ChunkElements;
            for (long e = first; e < end;)
            {
                int chunk = (int)(e / chunkElements);
                var bytes = Chunk(chunk);
                int from = (int)(e - (long)chunk * chunkElements);
                int n = (int)Math.Min(end - e, bytes.Length / size - from);
                TensorData.ToFloat(bytes.Slice(from * size, n * size), Stored.DType, values.Slice((int)(e - first), n));
                e += n;
            }
        }

        public void ReadOriginal(Stream destination)
        {
            var index = _index.Value;
            for (int chunk = 0; chunk < index.Info.ChunkCount; chunk++) destination.Write(Chunk(chunk));
        }

        public void Dispose()
        {
            if (_view.IsValueCreated) _view.Value.Dispose();
        }
    }
}
