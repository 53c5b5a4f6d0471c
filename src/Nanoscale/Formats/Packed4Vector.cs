using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats;

/// <summary>AVX2 decoding of packed 4-bit codes (element 2j in the low nibble of byte j) through a 16-entry table.</summary>
internal static class Packed4Vector
{
    public static bool IsSupported => Avx2.IsSupported;

    /// <summary>Decode table of a 4-bit format as two 8-float vectors (codes 0..7, 8..15).</summary>
    internal static (Vector256<float> Low, Vector256<float> High) Load4BitTable(ReadOnlySpan<float> table) =>
        (Vector256.Create(table[..8]), Vector256.Create(table.Slice(8, 8)));

    /// <summary>16 packed bytes → 32 floats: split nibbles, interleave to element order, widen to int indices, look
    /// up both table halves with vpermps and pick by index bit 3 (moved to the sign bit for vblendvps).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Dequantize32(Vector256<float> tableLow, Vector256<float> tableHigh,
        ReadOnlySpan<byte> packed, float scale, Span<float> destination)
    {
        Vector128<byte> b = Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(packed));
        Vector128<byte> nibble = Vector128.Create((byte)0x0F);
        Vector128<byte> lo = b & nibble;
        Vector128<byte> hi = Vector128.ShiftRightLogical(b.AsUInt16(), 4).AsByte() & nibble;
        Vector128<byte> first = Sse2.UnpackLow(lo, hi), second = Sse2.UnpackHigh(lo, hi);
        Vector256<float> s = Vector256.Create(scale);
        ref float d = ref MemoryMarshal.GetReference(destination);
        Lookup8(first, tableLow, tableHigh, s).StoreUnsafe(ref d);
        Lookup8(Sse2.ShiftRightLogical128BitLane(first, 8), tableLow, tableHigh, s).StoreUnsafe(ref d, 8);
        Lookup8(second, tableLow, tableHigh, s).StoreUnsafe(ref d, 16);
        Lookup8(Sse2.ShiftRightLogical128BitLane(second, 8), tableLow, tableHigh, s).StoreUnsafe(ref d, 24);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Lookup8(Vector128<byte> codes, Vector256<float> tableLow, Vector256<float> tableHigh, Vector256<float> scale)
    {
        Vector256<int> index = Avx2.ConvertToVector256Int32(codes);
        Vector256<float> value = Avx.BlendVariable(
            Avx2.PermuteVar8x32(tableLow, index), Avx2.PermuteVar8x32(tableHigh, index),
            Avx2.ShiftLeftLogical(index, 28).AsSingle());
        return value * scale;
    }

    /// <summary>Σ table[code_i]·x_i over one 32-element block (16 packed bytes), unscaled: the codes are looked up in
    /// registers and multiplied with the activations at once, never stored as floats.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Dot32(Vector256<float> tableLow, Vector256<float> tableHigh, ReadOnlySpan<byte> packed,
        ref float x, Vector256<float> accumulator)
    {
        Vector128<byte> b = Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(packed));
        Vector128<byte> nibble = Vector128.Create((byte)0x0F);
        Vector128<byte> lo = b & nibble;
        Vector128<byte> hi = Vector128.ShiftRightLogical(b.AsUInt16(), 4).AsByte() & nibble;
        Vector128<byte> first = Sse2.UnpackLow(lo, hi), second = Sse2.UnpackHigh(lo, hi);
        Vector256<float> sum = Lookup8(first, tableLow, tableHigh) * Vector256.LoadUnsafe(ref x);
        sum = Fma.MultiplyAdd(Lookup8(Sse2.ShiftRightLogical128BitLane(first, 8), tableLow, tableHigh), Vector256.LoadUnsafe(ref x, 8), sum);
        sum = Fma.MultiplyAdd(Lookup8(second, tableLow, tableHigh), Vector256.LoadUnsafe(ref x, 16), sum);
        sum = Fma.MultiplyAdd(Lookup8(Sse2.ShiftRightLogical128BitLane(second, 8), tableLow, tableHigh), Vector256.LoadUnsafe(ref x, 24), sum);
        return accumulator + sum;
    }

    /// <summary>Σ table[code_i]·x_i over one 16-element block (8 packed bytes, NVFP4), unscaled.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Dot16(Vector256<float> tableLow, Vector256<float> tableHigh, ReadOnlySpan<byte> packed, ref float x)
    {
        Vector128<byte> b = Vector128.CreateScalar(MemoryMarshal.Read<ulong>(packed)).AsByte();
        Vector128<byte> nibble = Vector128.Create((byte)0x0F);
        Vector128<byte> lo = b & nibble;
        Vector128<byte> hi = Vector128.ShiftRightLogical(b.AsUInt16(), 4).AsByte() & nibble;
        Vector128<byte> codes = Sse2.UnpackLow(lo, hi);
        Vector256<float> sum = Lookup8(codes, tableLow, tableHigh) * Vector256.LoadUnsafe(ref x);
        return Fma.MultiplyAdd(Lookup8(Sse2.ShiftRightLogical128BitLane(codes, 8), tableLow, tableHigh), Vector256.LoadUnsafe(ref x, 8), sum);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Lookup8(Vector128<byte> codes, Vector256<float> tableLow, Vector256<float> tableHigh)
    {
        Vector256<int> index = Avx2.ConvertToVector256Int32(codes);
        return Avx.BlendVariable(Avx2.PermuteVar8x32(tableLow, index), Avx2.PermuteVar8x32(tableHigh, index),
            Avx2.ShiftLeftLogical(index, 28).AsSingle());
    }

    /// <summary>8 packed bytes → 16 floats (NVFP4 block).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Dequantize16(Vector256<float> tableLow, Vector256<float> tableHigh,
        ReadOnlySpan<byte> packed, float scale, Span<float> destination)
    {
        Vector128<byte> b = Vector128.CreateScalar(MemoryMarshal.Read<ulong>(packed)).AsByte();
        Vector128<byte> nibble = Vector128.Create((byte)0x0F);
        Vector128<byte> lo = b & nibble;
        Vector128<byte> hi = Vector128.ShiftRightLogical(b.AsUInt16(), 4).AsByte() & nibble;
        Vector128<byte> codes = Sse2.UnpackLow(lo, hi);
        Vector256<float> s = Vector256.Create(scale);
        ref float d = ref MemoryMarshal.GetReference(destination);
        Lookup8(codes, tableLow, tableHigh, s).StoreUnsafe(ref d);
        Lookup8(Sse2.ShiftRightLogical128BitLane(codes, 8), tableLow, tableHigh, s).StoreUnsafe(ref d, 8);
    }
}
