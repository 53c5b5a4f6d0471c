namespace Nanoscale.IO;

/// <summary>
/// One tensor of a checkpoint: where its bytes live (absolute offset in <see cref="FilePath"/>) and what they mean.
/// Rows are all axes but the last; the last axis is the reduction axis of a linear layer stored [out, in].
/// </summary>
public sealed record TensorInfo(string Name, DType DType, long[] Shape, string FilePath, long FileOffset, long ByteLength)
{
    public long ElementCount => CountElements(Shape);

    /// <summary>Length of the last axis (1 for a scalar).</summary>
    public long Columns => Shape.Length == 0 ? 1 : Shape[^1];

    /// <summary>Product of all axes but the last (1 for a vector or scalar).</summary>
    public long Rows => Shape.Length <= 1 ? 1 : ElementCount / Math.Max(1, Columns);

    public string ShapeText => "[" + string.Join(", ", Shape) + "]";

    /// <summary>Product of the dims, or -1 when it overflows a long or a dim is negative.</summary>
    public static long CountElements(IReadOnlyList<long> shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0) return -1;
            try { n = checked(n * d); }
            catch (OverflowException) { return -1; }
        }
        return n;
    }
}
