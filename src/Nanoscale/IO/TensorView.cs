using System.IO.MemoryMappedFiles;
using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// The mapped bytes of one tensor. Only the pages touched are read, and they are released when the view is
/// disposed, so streaming a checkpoint tensor by tensor keeps resident memory near the largest tensor.
/// </summary>
public sealed unsafe class TensorView : IByteView
{
    private readonly MemoryMappedViewAccessor? _accessor;
    private byte* _pointer;

    internal TensorView(TensorInfo tensor, MemoryMappedFile? file)
    {
        Tensor = tensor;
        if (tensor.ByteLength == 0 || file is null) return;
        _accessor = file.CreateViewAccessor(tensor.FileOffset, tensor.ByteLength, MemoryMappedFileAccess.Read);
        byte* basePointer = null;
        _accessor.SafeMemoryMappedViewHandle.AcquirePointer(ref basePointer);
        // The view starts at the page boundary below FileOffset; PointerOffset is the distance to our first byte.
        _pointer = basePointer + _accessor.PointerOffset;
    }

    public TensorInfo Tensor { get; }

    /// <summary>The first byte of the mapping, for kernels that read a whole tensor in place (valid until disposed).</summary>
    internal byte* Address
    {
        get
        {
            ObjectDisposedException.ThrowIf(_pointer == null && Length != 0, this);
            return _pointer;
        }
    }

    public long Length => Tensor.ByteLength;

    /// <summary>The first byte when the tensor is little-endian BF16 as mapped (what the panel kernel broadcasts as
    /// stored, <c>PanelGemm.MultiplyBf16</c>), else null.</summary>
    internal ushort* Bf16Address => Tensor.DType == DType.BF16 && BitConverter.IsLittleEndian ? (ushort*)Address : null;

    /// <summary>Where <paramref name="count"/> rows of <paramref name="columns"/> elements from <paramref name="firstRow"/>
    /// lie in the mapping, for asking for them ahead of use.</summary>
    internal (nint Address, nint Length) RowBytes(long firstRow, long count, long columns)
    {
        long width = columns * Tensor.DType.ElementSize();
        return ((nint)(Address + firstRow * width), (nint)(count * width));
    }

    /// <summary>All bytes of the tensor; tensors of 2 GiB or more must be read through <see cref="Slice"/>.</summary>
    public ReadOnlySpan<byte> Bytes
    {
        get
        {
            if (Length > int.MaxValue)
                throw new InvalidOperationException(
                    $"{Tensor.Name} is {Length} bytes; read tensors of 2 GiB or more with Slice(offset, length).");
            return Slice(0, (int)Length);
        }
    }

    /// <summary>A byte range of the tensor.</summary>
    public ReadOnlySpan<byte> Slice(long offset, int length)
    {
        ObjectDisposedException.ThrowIf(_pointer == null && Length != 0, this);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (offset + length > Length)
            throw new ArgumentOutOfRangeException(nameof(length), $"{Tensor.Name}: range {offset}+{length} is past its {Length} bytes");
        return length == 0 ? default : new ReadOnlySpan<byte>(_pointer + offset, length);
    }

    /// <summary>Converts elements <paramref name="firstElement"/>.. of the tensor to float32.</summary>
    public void ReadFloats(long firstElement, Span<float> destination)
    {
        int size = Tensor.DType.ElementSize();
        TensorData.ToFloat(Slice(firstElement * size, checked(destination.Length * size)), Tensor.DType, destination);
    }

    /// <summary>The whole tensor as float32 (for tensors that fit in one array).</summary>
    public float[] ToFloatArray()
    {
        var result = new float[checked((int)Tensor.ElementCount)];
        ReadFloats(0, result);
        return result;
    }

    public void Dispose()
    {
        if (_accessor is not null && _pointer != null)
        {
            _pointer = null;
            _accessor.SafeMemoryMappedViewHandle.ReleasePointer();
            _accessor.Dispose();
        }
    }
}
