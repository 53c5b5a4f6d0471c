namespace Nanoscale.Runtime;

/// <summary>An uncompressed float32 weight held in memory, row-major <c>[rows, columns]</c>.</summary>
internal sealed class DenseLinearWeight : ILinearWeight
{
    private readonly float[] _weights;

    public DenseLinearWeight(float[] weights, int rows, int columns)
    {
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(columns);
        if (weights.Length != (long)rows * columns)
            throw new ArgumentException($"{weights.Length} floats do not make a [{rows}, {columns}] matrix", nameof(weights));
        _weights = weights;
        Rows = rows;
        Columns = columns;
    }

    public int Rows { get; }

    public int Columns { get; }

    /// <summary>The row-major elements (not a copy).</summary>
    public ReadOnlySpan<float> Span => _weights;

    public void ReadRows(int firstRow, int count, Span<float> destination)
    {
        if (firstRow < 0 || count < 0 || firstRow + count > Rows)
            throw new ArgumentOutOfRangeException(nameof(firstRow), $"rows {firstRow}..{firstRow + count} outside 0..{Rows}");
        _weights.AsSpan(firstRow * Columns, count * Columns).CopyTo(destination);
    }

    public void MatMul(ReadOnlySpan<float> input, Span<float> output, RuntimeOptions options) => MatMulRows(input, 0, Rows, output, options);

    public unsafe void MatMulRows(ReadOnlySpan<float> input, int firstRow, int count, Span<float> output, RuntimeOptions options)
    {
        LinearKernels.ValidateRows(this, input, firstRow, count, output);
        if (count == 0) return;
        fixed (float* w = _weights) LinearKernels.MatMulDense(w + (long)firstRow * Columns, count, Columns, input, output, options);
    }
}
