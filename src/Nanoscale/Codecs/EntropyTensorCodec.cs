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
        byte[] coded;
        if (_precision is null)
        {
            coded = LosslessCodec.Encode(source.Bytes, tensor.DType, lossless);
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
    private sealed class Decoder : ITensorDecoder
    {
        private readonly Lazy<byte[]> _decoded;

        public Decoder(StoredTensor stored)
        {
            Stored = stored;
            _decoded = new Lazy<byte[]>(Decode, LazyThreadSafetyMode.ExecutionAndPublication);
        }

        public StoredTensor Stored { get; }

        private byte[] Decode()
        {
            var part = Stored.Part("ans");
            using var view = Stored.Map("ans");
            try
            {
                var info = LosslessCodec.ReadInfo(view.Bytes, Stored.Name);
                long expected = Stored.ElementCount * Stored.DType.ElementSize();
                if (info.DecodedLength != expected)
                    throw new CheckpointFormatException(part.FilePath, part.Name, part.FileOffset,
                        $"coded stream holds {info.DecodedLength} bytes but {Stored.DType} × [{string.Join(", ", Stored.Shape)}] needs {expected}");
                var bytes = new byte[expected];
                LosslessCodec.Decode(view.Bytes, bytes, Stored.Name);
                return bytes;
            }
            catch (LosslessFormatException e)
            {
                throw new CheckpointFormatException(part.FilePath, part.Name, part.FileOffset + e.Offset, e.Message, e);
            }
        }

        public void ReadRows(long firstRow, int count, Span<float> destination)
        {
            int size = Stored.DType.ElementSize();
            long columns = Stored.Columns;
            var values = destination[..checked((int)(count * columns))];
            TensorData.ToFloat(_decoded.Value.AsSpan(checked((int)(firstRow * columns * size)), values.Length * size), Stored.DType, values);
        }

        public void ReadOriginal(Stream destination) => destination.Write(_decoded.Value);

        public void Dispose() { }
    }
}
