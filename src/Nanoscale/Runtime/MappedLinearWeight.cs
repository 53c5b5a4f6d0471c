using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>
/// A plain weight computed on in its stored dtype, straight from the mapped checkpoint: nothing is copied at load
/// time, so a model's weights take their file size in memory (the page cache's pages, shared and reclaimable), not
/// 4 bytes per weight. F32 rows are multiplied in place; BF16 and F16 rows are widened a tile at a time inside each
/// product (<see cref="RowDecodedLinearWeight"/>), the same loop a compressed weight runs.
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

    /// <summary>BF16 rows times one token's activations, widened in registers (bf16 is the top half of an f32): the
    /// step reads 2 bytes per weight and writes nothing. AVX2 with FMA; otherwise false (rows are decoded).</summary>
    protected override unsafe bool TryDotRows(int firstRow, int count, ReadOnlySpan<float> x, Span<float> y)
    {
        if (_view.Tensor.DType != DType.BF16 || !Avx2.IsSupported || !Fma.IsSupported)
            return false;
        int columns = Columns, vectorEnd = columns & ~7;
        ushort* rows = (ushort*)_view.Address + (long)firstRow * columns;
        fixed (float* xs = x)
            for (int r = 0; r < count; r++)
            {
                ushort* w = rows + (long)r * columns;
                var sum = Vector256<float>.Zero;
                int c = 0;
                for (; c < vectorEnd; c += 8)
                {
                    var widened = Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32(w + c), 16);
                    sum = Fma.MultiplyAdd(widened.AsSingle(), Vector256.Load(xs + c), sum);
                }
                float total = Vector256.Sum(sum);
                for (; c < columns; c++) total += BitConverter.Int32BitsToSingle(w[c] << 16) * xs[c];
                y[r] = total;
            }
        return true;
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

        public void MatMul(ReadOnlySpan<float> input, Span<float> output, RuntimeOptions options)
        {
            LinearKernels.Validate(this, input, output);
            LinearKernels.MatMulDense((float*)view.Address, rows, columns, input, output, options);
        }

        public void Dispose() => view.Dispose();
    }
}
