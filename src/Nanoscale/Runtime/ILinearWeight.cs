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
}
