using System.Numerics.Tensors;

namespace Nanoscale.Runtime;

/// <summary>The product kernels shared by every <see cref="ILinearWeight"/>, with the scalar reference beside them.</summary>
internal static class LinearKernels
{
    /// <summary>Bytes of weights per work item: a tile of rows that stays in L2 while every token streams past it.</summary>
    private const int TileBytes = 64 * 1024;

    /// <summary>Tokens per work item, so a short matrix still splits into enough items for all workers.</summary>
    private const int TokenTile = 64;

    public static void Validate(ILinearWeight weight, ReadOnlySpan<float> input, Span<float> output)
    {
        if (input.Length % weight.Columns != 0)
            throw new ArgumentException($"input of {input.Length} floats is not a whole number of rows of {weight.Columns}", nameof(input));
        int tokens = input.Length / weight.Columns;
        if (output.Length != (long)tokens * weight.Rows)
            throw new ArgumentException($"output holds {output.Length} floats; {tokens} tokens × {weight.Rows} rows need {(long)tokens * weight.Rows}", nameof(output));
    }

    public static int RowsPerTile(int columns) => Math.Max(1, TileBytes / (4 * Math.Max(1, columns)));

    /// <summary>
    /// Dense product: work items are (row tile × token tile); each computes dot products of its weight rows with its
    /// tokens. The weights are read once per token tile, i.e. once per window for windows up to <see cref="TokenTile"/>.
    /// </summary>
    public static unsafe void MatMulDense(float[] weights, int rows, int columns, ReadOnlySpan<float> input, Span<float> output, RuntimeOptions options)
    {
        int tokens = input.Length / columns;
        if (tokens == 0) return;
        int rowsPerTile = RowsPerTile(columns);
        int rowTiles = (rows + rowsPerTile - 1) / rowsPerTile;
        int tokenTiles = (tokens + TokenTile - 1) / TokenTile;
        fixed (float* inPtr = input)
        fixed (float* outPtr = output)
        {
            nint inAddress = (nint)inPtr, outAddress = (nint)outPtr;
            options.For(rowTiles * tokenTiles, (long)rows * columns * tokens, item =>
            {
                int r0 = item % rowTiles * rowsPerTile, r1 = Math.Min(rows, r0 + rowsPerTile);
                int t0 = item / rowTiles * TokenTile, t1 = Math.Min(tokens, t0 + TokenTile);
                var x = new ReadOnlySpan<float>((float*)inAddress, tokens * columns);
                var y = new Span<float>((float*)outAddress, tokens * rows);
                DotRows(weights.AsSpan(r0 * columns, (r1 - r0) * columns), columns, x, t0, t1, y, rows, r0);
            });
        }
    }

    /// <summary>y[t, firstRow + i] = tile[i] · x[t] for t in [t0, t1).</summary>
    public static void DotRows(ReadOnlySpan<float> tile, int columns, ReadOnlySpan<float> x, int t0, int t1, Span<float> y, int rows, int firstRow)
    {
        int tileRows = tile.Length / columns;
        for (int t = t0; t < t1; t++)
        {
            ReadOnlySpan<float> xt = x.Slice(t * columns, columns);
            Span<float> yt = y.Slice(t * rows + firstRow, tileRows);
            for (int i = 0; i < tileRows; i++)
                yt[i] = TensorPrimitives.Dot(tile.Slice(i * columns, columns), xt);
        }
    }

    /// <summary>Scalar reference of <see cref="ILinearWeight.MatMul"/> (float accumulation in order), for tests.</summary>
    public static void MatMulReference(ReadOnlySpan<float> weights, int rows, int columns, ReadOnlySpan<float> input, Span<float> output)
    {
        int tokens = input.Length / columns;
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rows; r++)
            {
                float sum = 0;
                for (int c = 0; c < columns; c++) sum += weights[r * columns + c] * input[t * columns + c];
                output[t * rows + r] = sum;
            }
    }
}
