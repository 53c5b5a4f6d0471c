namespace Nanoscale.Runtime;

/// <summary>
/// The weight of a linear layer, stored <c>[rows = out, columns = in]</c> (SPEC §1), as the runtime sees it.
/// This is the seam between the runtime and the codecs: a dense float matrix implements it directly
/// (<see cref="DenseLinearWeight"/>), a compressed tensor by decoding a few rows at a time inside the product
/// (<see cref="RowDecodedLinearWeight"/>), so the whole matrix is never expanded.
/// </summary>
public interface ILinearWeight
{
    /// <summary>Output features (the rows of the stored matrix).</summary>
    int Rows { get; }

    /// <summary>Input features (the reduction axis).</summary>
    int Columns { get; }

    /// <summary>Decodes rows <paramref name="firstRow"/>.. into <paramref name="destination"/> (row-major, <c>count × Columns</c>).
    /// Embedding lookups use this.</summary>
    void ReadRows(int firstRow, int count, Span<float> destination);

    /// <summary>
    /// <c>output[t, r] = Σ_c W[r, c] · input[t, c]</c> for every token t: <paramref name="input"/> is
    /// <c>tokens × Columns</c>, <paramref name="output"/> is <c>tokens × Rows</c>, both row-major.
    /// Implementations go through the weights once for all tokens (a window is a matrix–matrix product).
    /// </summary>
    void MatMul(ReadOnlySpan<float> input, Span<float> output, RuntimeOptions options);

    /// <summary>
    /// Rows <paramref name="firstRow"/>.. (<paramref name="count"/> of them) of <see cref="MatMul"/>:
    /// <paramref name="output"/> is <c>tokens × count</c>, row-major. A caller bounds the output's memory with it (the
    /// logits of a large vocabulary, a slice at a time). The default runs the whole product into a temporary and keeps
    /// the slice; the runtime's weights go over the slice's rows only.
    /// </summary>
    void MatMulRows(ReadOnlySpan<float> input, int firstRow, int count, Span<float> output, RuntimeOptions options)
    {
        LinearKernels.ValidateRows(this, input, firstRow, count, output);
        int tokens = input.Length / Columns;
        var whole = new float[(long)tokens * Rows];
        MatMul(input, whole, options);
        for (int t = 0; t < tokens; t++) whole.AsSpan(t * Rows + firstRow, count).CopyTo(output.Slice(t * count, count));
    }
}
