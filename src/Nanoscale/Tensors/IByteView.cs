namespace Nanoscale.Tensors;

/// <summary>
/// Read access to the bytes of one stored array, wherever they live (a mapped file region, an array in memory), by
/// slices, so arrays of 2 GiB or more are read in pieces. Readers in every room take this instead of a file type.
/// </summary>
internal interface IByteView : IDisposable
{
    long Length { get; }

    /// <summary>Bytes [offset, offset + length).</summary>
    ReadOnlySpan<byte> Slice(long offset, int length);
}
