using System.Runtime.InteropServices;

namespace Nanoscale.Formats;

/// <summary>
/// The activations (bit for bit) and parameters that a quantized activation set (<see cref="NibbleDot.Activations"/>,
/// <see cref="NibbleLanes.Vectors"/>) was last made from, so a set asked for the same ones again keeps its results: a
/// step's product hands each tile of a thread the same input, and q, k and v (gate and up) share one, so most calls
/// find it; comparing costs a fraction of quantizing.
/// </summary>
internal sealed class KeptActivations
{
    private float[] _source = [];
    private (int Vectors, int Cols, bool EvensThenOdds, int Bias, bool Halves)? _kept, _pending;

    /// <summary>True when <paramref name="x"/> and <paramref name="shape"/> are those of the last completed set (its
    /// results stand); else forgets the set, remembers these, and the caller quantizes and then calls
    /// <see cref="Complete"/> (a set left half made by an exception is never taken for a kept one).</summary>
    public bool Same(ReadOnlySpan<float> x, (int Vectors, int Cols, bool EvensThenOdds, int Bias, bool Halves) shape)
    {
        if (_kept == shape && MemoryMarshal.AsBytes(x).SequenceEqual(MemoryMarshal.AsBytes(_source.AsSpan(0, x.Length)))) return true;
        _kept = null;
        if (_source.Length < x.Length) _source = new float[x.Length];
        x.CopyTo(_source);
        _pending = shape;
        return false;
    }

    /// <summary>The set is made from what <see cref="Same"/> last remembered.</summary>
    public void Complete() => _kept = _pending;
}
