namespace Nanoscale.Formats;

/// <summary>
/// The per-tensor pass of a block codec (see <see cref="IBlockCodec"/>): sees every element once, in chunks, in any
/// order, then writes the tensor's <see cref="IBlockCodec.TensorDataBytes"/> bytes. Not thread-safe; use one per tensor.
/// </summary>
public interface ITensorDataAccumulator
{
    /// <summary>Adds a chunk; <paramref name="firstElementIndex"/> is the flat index of <c>values[0]</c> in the tensor.</summary>
    /// <exception cref="NonFiniteValueException">A NaN/Inf value under <see cref="NonFinitePolicy.Throw"/>.</exception>
    void Add(ReadOnlySpan<float> values, long firstElementIndex);

    /// <summary>Writes the tensor data (exactly <see cref="IBlockCodec.TensorDataBytes"/> bytes).</summary>
    void WriteTensorData(Span<byte> destination);
}

/// <summary>Accumulator of codecs that store nothing per tensor.</summary>
internal sealed class NoTensorData : ITensorDataAccumulator
{
    public static NoTensorData Instance { get; } = new();

    public void Add(ReadOnlySpan<float> values, long firstElementIndex) { }

    public void WriteTensorData(Span<byte> destination) { }
}
