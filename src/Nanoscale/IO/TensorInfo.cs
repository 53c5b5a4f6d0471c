using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// One tensor of a checkpoint: where its bytes live (absolute offset in <see cref="FilePath"/>) and what they mean.
/// Rows are all axes but the last; the last axis is the reduction axis of a linear layer stored [out, in].
/// </summary>
public sealed record TensorInfo(string Name, DType DType, long[] Shape, string FilePath, long FileOffset, long ByteLength)
{
    public long ElementCount => TensorShape.ElementCount(Shape);

    /// <summary>Length of the last axis (1 for a scalar).</summary>
    public long Columns => TensorShape.Columns(Shape);

    /// <summary>Product of all axes but the last (1 for a vector or scalar).</summary>
    public long Rows => TensorShape.Rows(Shape);

    public string ShapeText => TensorShape.Text(Shape);
}
