using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Nanoscale.Formats;

/// <summary>
/// The activations (bit for bit) and parameters that a quantized activation set (<see cref="NibbleDot.Activations"/>,
/// <see cref="NibbleLanes.Vectors"/>) was last made from, so a set asked for the same ones again keeps its results: a
/// step's product hands each tile of a thread the same input, and q, k and v (gate and up) share one, so most calls
/// find it; comparing costs a fraction of quantizing. Within one product (<see cref="Product"/>) a set made from the
/// same address is taken without comparing, so a product may hand a thread many small tiles.
/// </summary>
internal sealed unsafe class KeptActivations
{
    private float[] _source = [];
    private (int Vectors, int Cols, bool EvensThenOdds, int Bias, bool Halves)? _kept, _pending;
    private long _product, _pendingProduct; // the product the set was made or last found in (0: none)
    private nint _address, _pendingAddress; // where its activations were then

    [ThreadStatic] private static long t_product;
    private static long s_products;

    /// <summary>
    /// The product this thread's tiles belong to now, or 0: a product (all of its tiles, on every thread) reads one
    /// input that does not change while it runs, so a set made from the same address under the same nonzero stamp
    /// holds without comparing the activations again — a 16-sequence step's products can then be cut into many tiles
    /// that the threads share out, where comparing 36–98 KB of activations per tile made more than one tile a thread
    /// cost more than it balanced. Set around a product's tiles (<see cref="NewProduct"/>), restored after.
    /// </summary>
    public static long Product
    {
        get => t_product;
        set => t_product = value;
    }

    /// <summary>A stamp no other product has had.</summary>
    public static long NewProduct() => Interlocked.Increment(ref s_products);

    /// <summary>True when <paramref name="x"/> and <paramref name="shape"/> are those of the last completed set (its
    /// results stand); else forgets the set, remembers these, and the caller quantizes and then calls
    /// <see cref="Complete"/> (a set left half made by an exception is never taken for a kept one).</summary>
    public bool Same(ReadOnlySpan<float> x, (int Vectors, int Cols, bool EvensThenOdds, int Bias, bool Halves) shape)
    {
        long product = t_product;
        nint address = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetReference(x));
        if (_kept == shape && product != 0 && _product == product && _address == address) return true;
        if (_kept == shape && MemoryMarshal.AsBytes(x).SequenceEqual(MemoryMarshal.AsBytes(_source.AsSpan(0, x.Length))))
        {
            (_product, _address) = (product, address);
            return true;
        }
        _kept = null;
        if (_source.Length < x.Length) _source = new float[x.Length];
        x.CopyTo(_source);
        (_pending, _pendingProduct, _pendingAddress) = (shape, product, address);
        return false;
    }

    /// <summary>The set is made from what <see cref="Same"/> last remembered.</summary>
    public void Complete() => (_kept, _product, _address) = (_pending, _pendingProduct, _pendingAddress);
}
