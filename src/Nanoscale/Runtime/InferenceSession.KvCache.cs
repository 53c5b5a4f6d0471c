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
        _keyCache[layer].Write(offset, keys);
        _valueCache[layer].Write(offset, values);
    }

    /// <summary>Positions 0..<paramref name="positions"/> of one head (<paramref name="offset"/> within each row) of a
    /// layer's cache widened to floats, one head row after another (<c>positions × headDim</c>).</summary>
    private void WidenHead(KvRows cache, int offset, int positions, Span<float> destination)
    {
        int headDim = _config.HeadDim, kvDim = _config.KvDim;
        for (int p = 0; p < positions; p++) cache.Widen(p * kvDim + offset, destination.Slice(p * headDim, headDim));
    }
}
