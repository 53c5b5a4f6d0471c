using Nanoscale.Tensors;

namespace Nanoscale.LowRank;

/// <summary>
/// A set of representable values that a matrix is rounded onto, row by row and column by column, so that LDLQ can feed
/// each column's rounding error forward (SPEC §11). Three kinds: a cast (<see cref="FloatGrid"/>), a uniform symmetric
/// grid with one scale per row (<see cref="UniformIntGrid"/>), or any block format (<see cref="BlockGrid"/>).
/// A grid also says how a rounded matrix is stored: which arrays (<see cref="GridArray"/>), by role, and how rows are
/// decoded from them; where those arrays live is the caller's business (<see cref="IGridStore"/>).
/// </summary>
internal abstract class QuantGrid
{
    /// <summary>The grid's spec string as stored in the metadata.</summary>
    public abstract string Spec { get; }

    /// <summary>Starts quantizing a rows × cols matrix; <paramref name="initial"/> (row-major) is the matrix before any
    /// error feedback, for per-tensor data such as NVFP4's tensor scale.</summary>
    public abstract GridQuantizer Begin(int rows, int cols, ReadOnlySpan<float> initial);

    /// <summary>Opens a stored rows × cols matrix for decoding, asking <paramref name="store"/> for its arrays.</summary>
    public abstract IGridReader Open(IGridStore store, int rows, int cols);
}

/// <summary>
/// The rounding state for one matrix. LDLQ calls <see cref="BeginGroup"/> at the first column of each group of
/// <see cref="GroupSize"/> columns (with the row's current, error-fed values of that group), then, for a vector grid,
/// <see cref="BeginVector"/> at the first column of each vector of <see cref="VectorSize"/> columns, then
/// <see cref="Round"/> once per column. Rows are independent: different rows may be processed on different threads at
/// once.
/// </summary>
internal abstract class GridQuantizer(int rows, int cols)
{
    public int Rows { get; } = rows;

    public int Columns { get; } = cols;

    /// <summary>Columns that share one scale (a block; a whole row; 1 for casts).</summary>
    public abstract int GroupSize { get; }

    /// <summary>Chooses the scale of the group that starts at <paramref name="firstColumn"/> in <paramref name="row"/>.</summary>
    public abstract void BeginGroup(int row, int firstColumn, ReadOnlySpan<float> values);

    /// <summary>Columns rounded together as one point of a vector codebook (E8: 8); 1 for grids of single values.
    /// A vector lies inside one group, and a group is a whole number of vectors.</summary>
    public virtual int VectorSize => 1;

    /// <summary>Rounds the vector that starts at <paramref name="firstColumn"/> (the row's current, error-fed values of
    /// its columns, as many as the row has): the following <see cref="Round"/> calls return its coordinates.</summary>
    public virtual void BeginVector(int row, int firstColumn, ReadOnlySpan<float> values) =>
        throw new InvalidOperationException($"{GetType().Name} rounds single values, not vectors");

    /// <summary>Rounds one element to the grid (with the group's scale), records its code and returns its value; in a
    /// vector grid, returns the coordinate of the point <see cref="BeginVector"/> chose, whatever
    /// <paramref name="value"/> is.</summary>
    public abstract float Round(int row, int column, double value);

    /// <summary>The arrays that store the rounded matrix, by role.</summary>
    public abstract IReadOnlyList<GridArray> Arrays();
}

/// <summary>One stored array of a rounded matrix: its role (<c>data</c>, <c>codes</c>, <c>blocks</c>, <c>scales</c>,
/// <c>tensor_data</c>), element type, shape and little-endian bytes.</summary>
internal sealed record GridArray(string Role, DType DType, long[] Shape, byte[] Data);

/// <summary>Where a grid reads its stored arrays from.</summary>
internal interface IGridStore
{
    /// <summary>The array of a role, checked to be <paramref name="expectedBytes"/> bytes (and of
    /// <paramref name="expectedDType"/> when given); a missing or mis-sized array throws an error that says where.</summary>
    IByteView Open(string role, long expectedBytes, DType? expectedDType = null);
}

/// <summary>Decodes a stored grid matrix by row ranges; safe to call from several threads at once.</summary>
internal interface IGridReader : IDisposable
{
    void ReadRows(long firstRow, int count, Span<float> destination);

    /// <summary>y[i] = row (firstRow + i) · x on the stored codes, when the grid's format has a step kernel; else false.</summary>
    bool TryDotRows(long firstRow, int count, ReadOnlySpan<float> x, Span<float> y) => false;
}
