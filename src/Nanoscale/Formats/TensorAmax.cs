using System.Buffers.Binary;

namespace Nanoscale.Formats;

/// <summary>
/// The tensor data of a format with a per-tensor scale (NVFP4, E8): the largest finite |v| of the tensor, streamed,
/// written as amax / <paramref name="divisor"/> (a float32). A non-finite value throws under
/// <see cref="NonFinitePolicy.Throw"/> and is skipped otherwise.
/// </summary>
internal sealed class TensorAmax(NonFinitePolicy policy, float divisor, bool inverse = false) : ITensorDataAccumulator
{
    private uint _amaxBits;

    public void Add(ReadOnlySpan<float> values, long firstElementIndex)
    {
        uint amax = _amaxBits;
        for (int i = 0; i < values.Length; i++)
        {
            uint a = BitConverter.SingleToUInt32Bits(values[i]) & 0x7FFF_FFFFu;
            if (a >= 0x7F80_0000u)
            {
                if (policy == NonFinitePolicy.Throw)
                    throw new NonFiniteValueException(firstElementIndex + i, values[i]);
                continue;
            }
            amax = Math.Max(amax, a);
        }
        _amaxBits = amax;
    }

    /// <summary>The tensor scale a format of this kind stored: a finite float ≥ 0 (else an error naming <paramref name="format"/>).</summary>
    public static float ReadScale(ReadOnlySpan<byte> tensorData, string format)
    {
        float scale = BinaryPrimitives.ReadSingleLittleEndian(tensorData);
        if (!float.IsFinite(scale) || scale < 0)
            throw new ArgumentException($"{format}: tensor scale must be a finite float ≥ 0, found {scale}.", nameof(tensorData));
        return scale;
    }

    /// <summary>amax/divisor, or with <c>inverse</c> divisor/amax (1 when amax is 0, so the scale stays finite).</summary>
    public void WriteTensorData(Span<byte> destination)
    {
        float amax = BitConverter.UInt32BitsToSingle(_amaxBits);
        float scale = !inverse ? amax / divisor : amax == 0 ? 1f : divisor / amax;
        if (!float.IsFinite(scale)) scale = float.MaxValue; // divisor/amax for a subnormal amax: every block saturates
        BinaryPrimitives.WriteSingleLittleEndian(destination, scale);
    }
}
