using Nanoscale.IO;
using Nanoscale.Tensors;
using Nanoscale.Formats;

namespace Nanoscale.Codecs;

/// <summary>
/// Plain casts to <c>f32</c>, <c>bf16</c> or <c>f16</c> (round to nearest even): the baselines every format is
/// compared against. Stored as one part, <c>NAME.data</c>, in the target dtype.
/// </summary>
internal sealed class CastCodec : ITensorCodec, Nanoscale.Formats.ICodec
{
    private CastCodec(string spec, DType target)
    {
        Spec = spec;
        Target = target;
    }

    public static readonly CastCodec F32 = new("f32", DType.F32);
    public static readonly CastCodec BF16 = new("bf16", DType.BF16);
    public static readonly CastCodec F16 = new("f16", DType.F16);

    /// <summary>The rows of the format table: <c>f32</c>, <c>bf16</c>, <c>f16</c>.</summary>
    internal static IEnumerable<FormatTraits> Traits() =>
    [
        Row(F32, "float32 (baseline)", 32),
        Row(BF16, "bfloat16, round to nearest even (baseline)", 16),
        Row(F16, "IEEE half, round to nearest even (baseline)", 16),
    ];

    private static FormatTraits Row(CastCodec codec, string summary, double bits) => new(codec.Spec, [], summary, bits, [], (_, _) => codec);

    public string Spec { get; }

    public DType Target { get; }

    public bool IsLossless => false;

    public EncodedTensor Encode(TensorView source, EncodeOptions options, CancellationToken cancellationToken = default)
    {
        var tensor = source.Tensor;
        var data = new byte[checked(tensor.ElementCount * Target.ElementSize())];
        const int chunk = 1 << 20;
        var values = new float[(int)Math.Min(chunk, tensor.ElementCount)];
        for (long first = 0; first < tensor.ElementCount; first += chunk)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var span = values.AsSpan(0, (int)Math.Min(chunk, tensor.ElementCount - first));
            source.ReadFloats(first, span);
            if (!options.AllowNonFinite)
                for (int i = 0; i < span.Length; i++)
                    if (!float.IsFinite(span[i]))
                        throw new NonFiniteValueException(first + i, span[i]).In(tensor.Name, option: EncodeOptions.AllowNonFiniteName,
                            remedy: $"use {EncodeOptions.AllowNonFiniteName} to store such values as they are");
            TensorData.FromFloat(span, Target, data.AsSpan((int)(first * Target.ElementSize()), span.Length * Target.ElementSize()));
        }
        return new EncodedTensor([new EncodedPart("data", Target, tensor.Shape, data)]);
    }

    public ITensorDecoder OpenDecoder(StoredTensor stored) => new Decoder(stored);

    private sealed class Decoder(StoredTensor stored) : ITensorDecoder
    {
        private readonly TensorView _view = stored.Map("data");

        public StoredTensor Stored => stored;

        public void ReadRows(long firstRow, int count, Span<float> destination) =>
            _view.ReadFloats(firstRow * stored.Columns, destination[..checked((int)(count * stored.Columns))]);

        /// <summary>A bf16 or f16 cast multiplies its stored rows directly (<see cref="TensorData.TryDotRows"/>).</summary>
        public bool TryDotRows(long firstRow, int count, ReadOnlySpan<float> x, Span<float> y)
        {
            var dtype = _view.Tensor.DType;
            if (dtype is not (DType.BF16 or DType.F16)) return false;
            long width = stored.Columns * dtype.ElementSize();
            return TensorData.TryDotRows(_view.Slice(firstRow * width, checked((int)(count * width))), dtype, count, checked((int)stored.Columns), x, y);
        }

        /// <summary>Four a call (<see cref="TensorData.ManyVectorsPerCall"/>).</summary>
        public int MaxDotVectors => TensorData.ManyVectorsPerCall;

        public unsafe nint Bf16Address => (nint)_view.Bf16Address;

        public bool TryStoredRows(long firstRow, int count, out nint address, out nint length)
        {
            (address, length) = _view.RowBytes(firstRow, count, stored.Columns);
            return true;
        }

        /// <summary>Several vectors: bf16 rows widened once per four of them (<see cref="TensorData.TryDotRowsMany"/>).</summary>
        public bool TryDotRowsMany(long firstRow, int count, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
        {
            var dtype = _view.Tensor.DType;
            if (dtype is not (DType.BF16 or DType.F16)) return false;
            long width = stored.Columns * dtype.ElementSize();
            return TensorData.TryDotRowsMany(_view.Slice(firstRow * width, checked((int)(count * width))), dtype, count, checked((int)stored.Columns),
                vectors, x, y, yStride);
        }

        public void ReadOriginal(Stream destination) => Codec.WriteAsOriginal(this, destination);

        public void Dispose() => _view.Dispose();
    }
}

/// <summary>Helpers shared by codecs.</summary>
internal static class Codec
{
    /// <summary>Decodes row tiles and writes them in the tensor's original dtype (float dtypes only).</summary>
    public static void WriteAsOriginal(ITensorDecoder decoder, Stream destination, DType? as_ = null)
    {
        var stored = decoder.Stored;
        var dtype = as_ ?? stored.DType;
        int columns = checked((int)stored.Columns);
        int rowsPerTile = Math.Max(1, (1 << 20) / Math.Max(1, columns));
        var values = new float[rowsPerTile * columns];
        var bytes = new byte[values.Length * dtype.ElementSize()];
        for (long row = 0; row < stored.Rows; row += rowsPerTile)
        {
            int count = (int)Math.Min(rowsPerTile, stored.Rows - row);
            var span = values.AsSpan(0, count * columns);
            decoder.ReadRows(row, count, span);
            var raw = bytes.AsSpan(0, span.Length * dtype.ElementSize());
            TensorData.FromFloat(span, dtype, raw);
            destination.Write(raw);
        }
    }
}
