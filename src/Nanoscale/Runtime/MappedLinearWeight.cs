using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>
/// A plain weight computed on in its stored dtype, straight from the mapped checkpoint: nothing is copied at load
/// time, so a model's weights take their file size in memory (the page cache's pages, shared and reclaimable), not
/// 4 bytes per weight. F32 rows are multiplied in place; BF16 and F16 rows are widened in registers for a few tokens,
/// and for many tokens a tile at a time inside each product (<see cref="RowDecodedLinearWeight"/>, the same loop a
/// compressed weight runs; BF16 rows broadcast as stored by the panel kernel, <see cref="PanelGemm.MultiplyBf16"/>).
/// </summary>
internal sealed class MappedLinearWeight : RowDecodedLinearWeight, IDisposable
{
    private readonly TensorView _view;

    private MappedLinearWeight(TensorView view, int rows, int columns) : base(rows, columns) => _view = view;

    /// <summary>Takes ownership of <paramref name="view"/>: an F32 view becomes a dense weight over the mapping,
    /// a BF16 or F16 one a row-widening weight.</summary>
    public static ILinearWeight Over(TensorView view, int rows, int columns)
    {
        if (view.Tensor.DType == DType.F32) return new MappedF32(view, rows, columns);
        return new MappedLinearWeight(view, rows, columns);
    }

    public override void ReadRows(int firstRow, int count, Span<float> destination)
    {
        if (firstRow < 0 || count < 0 || firstRow + count > Rows)
            throw new ArgumentOutOfRangeException(nameof(firstRow), $"rows {firstRow}..{firstRow + count} outside 0..{Rows}");
        _view.ReadFloats((long)firstRow * Columns, destination[..(count * Columns)]);
    }

    /// <summary>BF16 or F16 rows times one token's activations, widened in registers (<see cref="TensorData.TryDotRows"/>).</summary>
    protected override bool TryDotRows(int firstRow, int count, ReadOnlySpan<float> x, Span<float> y)
    {
        var dtype = _view.Tensor.DType;
        if (dtype is not (DType.BF16 or DType.F16)) return false;
        long width = 2L * Columns;
        return TensorData.TryDotRows(_view.Slice(firstRow * width, checked((int)(count * width))), dtype, count, Columns, x, y);
    }

    /// <summary>BF16 rows where they lie in the mapping (little-endian machines), for the panel kernel.</summary>
    protected override unsafe ushort* Bf16Rows => _view.Bf16Address;

    protected override bool StoredRows(int firstRow, int count, out nint address, out nint length)
    {
        (address, length) = _view.RowBytes(firstRow, count, Columns);
        return true;
    }

    /// <summary>Four a call (<see cref="TensorData.ManyVectorsPerCall"/>).</summary>
    protected override int MaxDotVectors => TensorData.ManyVectorsPerCall;

    /// <summary>Several tokens (a step of several sequences): BF16 rows widened once per four tokens
    /// (<see cref="TensorData.TryDotRowsMany"/>). Prompt windows keep decoding tiles (no <c>HasDotRowsMany</c>).</summary>
    protected override bool TryDotRowsMany(int firstRow, int count, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        var dtype = _view.Tensor.DType;
        if (dtype is not (DType.BF16 or DType.F16)) return false;
        long width = 2L * Columns;
        return TensorData.TryDotRowsMany(_view.Slice(firstRow * width, checked((int)(count * width))), dtype, count, Columns, vectors, x, y, yStride);
    }

    public void Dispose() => _view.Dispose();

    /// <summary>F32 in the mapping: the dense kernel reads the rows where they lie.</summary>
    private sealed unsafe class MappedF32(TensorView view, int rows, int columns) : ILinearWeight, IDisposable
    {
        public int Rows => rows;

        public int Columns => columns;

        public void ReadRows(int firstRow, int count, Span<float> destination)
        {
            if (firstRow < 0 || count < 0 || firstRow + count > Rows)
                throw new ArgumentOutOfRangeException(nameof(firstRow), $"rows {firstRow}..{firstRow + count} outside 0..{Rows}");
            view.ReadFloats((long)firstRow * Columns, destination[..(count * Columns)]);
        }

        public void MatMul(ReadOnlySpan<float> input, Span<float> output, RuntimeOptions options) => MatMulRows(input, 0, rows, output, options);

        public void MatMulRows(ReadOnlySpan<float> input, int firstRow, int count, Span<float> output, RuntimeOptions options)
        {
            LinearKernels.ValidateRows(this, input, firstRow, count, output);
            if (count > 0) LinearKernels.MatMulDense((float*)view.Address + (long)firstRow * columns, count, columns, input, output, options);
        }

        public void Dispose() => view.Dispose();
    }
}
