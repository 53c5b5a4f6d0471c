namespace Nanoscale.Runtime;

public sealed partial class InferenceSession
{
    /// <summary>The key/value cache's type (the model's <see cref="RuntimeOptions.KvCache"/> when the session was made).</summary>
    public KvCacheType KvCache => _kvType;

    /// <summary>Writes <paramref name="keys"/> and <paramref name="values"/> (whole rows, after rotation) into layer
    /// <paramref name="layer"/>'s cache from <paramref name="position"/> on, in the cache's type.</summary>
    private void StoreKv(int layer, int position, ReadOnlySpan<float> keys, ReadOnlySpan<float> values)
    {
        int offset = (position - Base) * _config.KvDim; // a shared beginning is never written: positions from Base on
        _keyCache[layer].Write(offset, keys);
        _valueCache[layer].Write(offset, values);
    }

    /// <summary>Positions 0..<paramref name="positions"/> of one head (<paramref name="offset"/> within each row) of a
    /// layer's cached keys (or values) widened to floats, one head row after another (<c>positions × headDim</c>): the
    /// shared beginning's rows, then this session's own.</summary>
    private void WidenHead(int layer, bool keys, int offset, int positions, Span<float> destination)
    {
        int headDim = _config.HeadDim, kvDim = _config.KvDim, first = Base;
        KvRows own = (keys ? _keyCache : _valueCache)[layer];
        KvRows? shared = _prefix is null ? null : (keys ? _prefix.Keys : _prefix.Values)[layer];
        for (int p = 0; p < positions; p++)
        {
            if (p < first) shared!.Widen(p * kvDim + offset, destination.Slice(p * headDim, headDim));
            else own.Widen((p - first) * kvDim + offset, destination.Slice(p * headDim, headDim));
        }
    }
}
