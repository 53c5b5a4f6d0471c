namespace Nanoscale.Tensors;

/// <summary>
/// Facts about a row-major tensor shape that every room reads the same way (SPEC §1): rows are all axes but the last,
/// the last axis is the reduction axis of a linear layer stored <c>[out, in]</c>.
/// </summary>
internal static class TensorShape
{
    /// <summary>Product of the dims, or −1 when it overflows a long or a dim is negative.</summary>
    public static long ElementCount(IReadOnlyList<long> shape)
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

    /// <summary>Length of the last axis (1 for a scalar).</summary>
    public static long Columns(IReadOnlyList<long> shape) => shape.Count == 0 ? 1 : shape[^1];

    /// <summary>Product of all axes but the last (1 for a vector or scalar).</summary>
    public static long Rows(IReadOnlyList<long> shape) =>
        shape.Count <= 1 ? 1 : ElementCount(shape) / Math.Max(1, Columns(shape));

    /// <summary><c>[a, b, c]</c>.</summary>
    public static string Text(IReadOnlyList<long> shape) => "[" + string.Join(", ", shape) + "]";
}
