using System.Buffers;

namespace Nanoscale.Runtime;

/// <summary>
/// Base for compressed weights: a codec implements <see cref="ReadRows"/> (decode whole rows, e.g. block by block),
/// and the product decodes one tile of rows at a time into a per-worker buffer and multiplies it with every token
/// of the window before moving on, so each row is decoded once per product and the matrix is never expanded. For one
/// token (the generation step) a storage that can multiply its codes directly does so (<see cref="TryDotRows"/>).
/// </summary>
internal abstract class RowDecodedLinearWeight : ILinearWeight
{
    protected RowDecodedLinearWeight(int rows, int columns)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(columns);
        Rows = rows;
        Columns = columns;
    }

    public int Rows { get; }

    public int Columns { get; }

    public abstract void ReadRows(int firstRow, int count, Span<float> destination);

    /// <summary>y[i] = row (firstRow + i) · x for one token, computed on the stored codes without decoding the rows;
    /// false when the storage has no such kernel (then the product decodes rows).</summary>
    protected virtual bool TryDotRows(int firstRow, int count, ReadOnlySpan<float> x, Span<float> y) => false;

    public unsafe void MatMul(ReadOnlySpan<float> input, Span<float> output, RuntimeOptions options)
    {
        LinearKernels.Validate(this, input, output);
        int tokens = input.Length / Columns;
        if (tokens == 0) return;
        int rows = Rows, columns = Columns;
        int rowsPerTile = LinearKernels.RowsPerTile(columns);
        int tiles = (rows + rowsPerTile - 1) / rowsPerTile;
        bool fused = tokens == 1 && options.FusedKernels;
        fixed (float* inPtr = input)
        fixed (float* outPtr = output)
        {
            nint inAddress = (nint)inPtr, outAddress = (nint)outPtr;
            options.For(tiles, (long)rows * columns * tokens, tile =>
            {
                int r0 = tile * rowsPerTile, count = Math.Min(rows, r0 + rowsPerTile) - r0;
                if (fused && TryDotRows(r0, count, new ReadOnlySpan<float>((float*)inAddress, columns), new Span<float>((float*)outAddress + r0, count)))
                    return;
                float[] buffer = ArrayPool<float>.Shared.Rent(count * columns);
                try
                {
                    ReadRows(r0, count, buffer.AsSpan(0, count * columns));
                    var x = new ReadOnlySpan<float>((float*)inAddress, tokens * columns);
                    var y = new Span<float>((float*)outAddress, tokens * rows);
                    LinearKernels.DotRows(buffer.AsSpan(0, count * columns), columns, x, 0, tokens, y, rows, r0);
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(buffer);
                }
            });
        }
    }
}
