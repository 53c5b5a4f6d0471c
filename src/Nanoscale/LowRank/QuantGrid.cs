using Nanoscale.Formats;
using Nanoscale.Pipeline.Codecs;

namespace Nanoscale.LowRank;

/// <summary>
/// A set of representable values that a matrix is rounded onto, row by row and column by column, so that LDLQ can feed
/// each column's rounding error forward (SPEC §11). Three kinds, named by a spec string:
/// <list type="bullet">
/// <item><c>f32</c>, <c>bf16</c>, <c>f16</c>: a cast (<see cref="FloatGrid"/>);</item>
/// <item><c>int2</c> … <c>int8</c>: a uniform symmetric grid with one float32 scale per row (<see cref="UniformIntGrid"/>);</item>
/// <item>any block format of the format table (<c>mxint2</c>, <c>mxfp4</c>, <c>nvfp4</c>, …): the block's scale is
/// chosen by the format's own rule when LDLQ reaches the block's first column (<see cref="BlockGrid"/>).</item>
/// </list>
/// </summary>
public abstract class QuantGrid
{
    /// <summary>The grid's spec string as stored in the metadata.</summary>
    public abstract string Spec { get; }

    /// <summary>Starts quantizing a rows × cols matrix; <paramref name="initial"/> (row-major) is the matrix before any
    /// error feedback, for per-tensor data such as NVFP4's tensor scale.</summary>
    public abstract GridQuantizer Begin(int rows, int cols, ReadOnlySpan<float> initial);

    /// <summary>Opens the stored parts <c>NAME.{prefix}.*</c> of a rows × cols matrix for decoding.</summary>
    public abstract IGridReader Open(StoredTensor stored, string prefix, int rows, int cols);

    /// <summary>The grids a spec can name, for error messages.</summary>
    public const string ValidNames = "f32, bf16, f16, int2 … int8, or a block format (mxint2 … mxint8, mxfp4, mxfp6, mxfp8, nvfp4, …)";

    /// <summary>Parses a grid spec. Options of a block format go after a colon as usual; inside a caldera spec, where
    /// commas separate caldera's own options, several grid options are joined by <c>;</c> (<c>q=mxfp4:scale=mse;round=away</c>).</summary>
    /// <exception cref="FormatSpecException">Unknown grid, or a format that is not a block format.</exception>
    public static QuantGrid Parse(string spec)
    {
        string text = spec.Trim().Replace(';', ',');
        string lower = text.ToLowerInvariant();
        switch (lower)
        {
            case "f32": return FloatGrid.F32;
            case "bf16": return FloatGrid.BF16;
            case "f16": return FloatGrid.F16;
        }
        if (lower.StartsWith("int", StringComparison.Ordinal) && int.TryParse(lower.AsSpan(3), out int bits))
            return bits is >= 2 and <= 8
                ? new UniformIntGrid(bits)
                : throw new FormatSpecException(spec, $"int grids have 2 to 8 bits (found {bits}); valid grids: {ValidNames}");
        ICodec codec;
        try { codec = CodecRegistry.Formats.Create(text); }
        catch (FormatSpecException e) { throw new FormatSpecException(spec, $"not a grid ({e.Message}); valid grids: {ValidNames}"); }
        return codec is IBlockCodec block
            ? new BlockGrid(block)
            : throw new FormatSpecException(spec, $"'{codec.Spec}' is not a block format, so it cannot be a grid; valid grids: {ValidNames}");
    }
}

/// <summary>
/// The rounding state for one matrix. LDLQ calls <see cref="BeginGroup"/> at the first column of each group of
/// <see cref="GroupSize"/> columns (with the row's current, error-fed values of that group), then <see cref="Round"/>
/// once per column. Rows are independent: different rows may be processed on different threads at once.
/// </summary>
public abstract class GridQuantizer(int rows, int cols)
{
    public int Rows { get; } = rows;

    public int Columns { get; } = cols;

    /// <summary>Columns that share one scale (a block; a whole row; 1 for casts).</summary>
    public abstract int GroupSize { get; }

    /// <summary>Chooses the scale of the group that starts at <paramref name="firstColumn"/> in <paramref name="row"/>.</summary>
    public abstract void BeginGroup(int row, int firstColumn, ReadOnlySpan<float> values);

    /// <summary>Rounds one element to the grid (with the group's scale), records its code and returns its value.</summary>
    public abstract float Round(int row, int column, double value);

    /// <summary>The stored arrays, named <c>{prefix}.{part}</c>.</summary>
    public abstract IReadOnlyList<EncodedPart> Parts(string prefix);
}

/// <summary>Decodes a stored grid matrix by row ranges; safe to call from several threads at once.</summary>
public interface IGridReader : IDisposable
{
    void ReadRows(long firstRow, int count, Span<float> destination);
}
