using System.Runtime.InteropServices;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

public sealed partial class InferenceSession
{
    /// <summary>The key/value cache's type (the model's <see cref="RuntimeOptions.KvCache"/> when the session was made).</summary>
    public KvCacheType KvCache => _kvType;

    /// <summary>Writes <paramref name="keys"/> and <paramref name="values"/> (whole rows, after rotation) into layer
    /// <paramref name="layer"/>'s cache from <paramref name="position"/> on, in the cache's type.</summary>
    private void StoreKv(int layer, int position, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        int offset = position * _config.KvDim;
        if (_kvType == KvCacheType.F32)
        {
            keys.CopyTo(_keyCache[layer].AsSpan(offset, keys.Length));
            values.CopyTo(_valueCache[layer].AsSpan(offset, values.Length));
            return;
        }
        Narrow(keys, _keyHalves[layer].AsSpan(offset, keys.Length), _kvType);
        Narrow(values, _valueHalves[layer].AsSpan(offset, values.Length), _kvType);
    }

    /// <summary>float32 → the 16-bit cache type, rounded to nearest even; for F16, magnitudes beyond its largest
    /// finite value (65504) saturate to it (NaN stays NaN).</summary>
    internal static void Narrow(ReadOnlySpan<float> source, Span<ushort> destination, KvCacheType type)
    {
        if (type == KvCacheType.BF16)
            for (int i = 0; i < source.Length; i++) destination[i] = TensorData.SingleToBFloat16(source[i]);
        else
            for (int i = 0; i < source.Length; i++)
                destination[i] = BitConverter.HalfToUInt16Bits((Half)Math.Clamp(source[i], -65504f, 65504f));
    }

    /// <summary>Positions 0..<paramref name="positions"/> of one head (<paramref name="offset"/> within each row) of a
    /// 16-bit cache widened to floats, one head row after another (<c>positions × headDim</c>).</summary>
    private void WidenHead(ushort[] cache, int offset, int positions, Span<float> destination)
    {
        int headDim = _config.HeadDim, kvDim = _config.KvDim;
        var dtype = _kvType == KvCacheType.BF16 ? DType.BF16 : DType.F16;
        for (int p = 0; p < positions; p++)
            TensorData.ToFloat(MemoryMarshal.AsBytes(cache.AsSpan(p * kvDim + offset, headDim)), dtype, destination.Slice(p * headDim, headDim));
    }
}
