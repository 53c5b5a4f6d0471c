using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats.Mx;

/// <summary>
/// One token's product on MXFP4 codes in integer arithmetic, as llama.cpp's <c>vec_dot</c> kernels do it: the
/// activations are quantized once per product to int8 per 32-element block (scale amax/127, round to nearest), the
/// E2M1 codes are looked up as int8 (value × 2: 0, ±1, ±2, ±3, ±4, ±6, ±8, ±12, with vpshufb), and each block's
/// 32 products are summed in integers (vpmaddubsw, vpmaddwd); the two scales are applied once per block.
/// </summary>
/// <remarks>
/// Exact in the weights; the activations carry int8 rounding (relative error ≤ 1/254 of each block's largest entry),
/// so a product differs from decode-then-multiply by at most Σ_blocks scale·amax/254·Σ|w| — the tolerance
/// <c>FusedDotTests</c> states.
/// </remarks>
internal static class MxDot
{
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>The int8 table (value × 2) of an element format whose doubled values are all integers in int8, else null.</summary>
    public static sbyte[]? DoubledTable(ElementFormat element)
    {
        if (element.Bits != 4) return null;
        var table = new sbyte[16];
        for (int i = 0; i < 16; i++)
        {
            float doubled = element.DecodeTable[i] * 2;
            if (!float.IsFinite(doubled) || doubled != MathF.Round(doubled) || Math.Abs(doubled) > 127) return null;
            table[i] = (sbyte)doubled;
        }
        return table;
    }

    /// <summary>x as int8 per 32-element block, each block's entries stored evens first then odds (the order of the
    /// low and high nibbles of the packed codes), with the block's scale.</summary>
    public static void QuantizeActivations(ReadOnlySpan<float> x, Span<sbyte> q, Span<float> scales)
    {
        for (int j = 0; j < scales.Length; j++)
        {
            var block = x.Slice(j * 32, 32);
            float amax = System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(block);
            amax = Math.Abs(amax);
            float d = amax / 127f, inverse = d == 0 ? 0 : 1f / d;
            scales[j] = d;
            var target = q.Slice(j * 32, 32);
            for (int i = 0; i < 16; i++)
            {
                target[i] = (sbyte)MathF.Round(block[2 * i] * inverse, MidpointRounding.ToEven);
                target[16 + i] = (sbyte)MathF.Round(block[2 * i + 1] * inverse, MidpointRounding.ToEven);
            }
        }
    }

    /// <summary>y[r] = Σ_j scale_j/2 · d_j · Σ_i table[code] · q_i over the rows.</summary>
    public static void DotRows(sbyte[] table, ReadOnlySpan<float> scaleTable, ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales,
        int rowCount, int blocksPerRow, ReadOnlySpan<sbyte> q, ReadOnlySpan<float> qScales, Span<float> y)
    {
        Vector128<sbyte> lut = Vector128.Create(table);
        Vector256<short> ones = Vector256.Create((short)1);
        if (blocks.Length < (long)rowCount * blocksPerRow * 16 || scales.Length < rowCount * blocksPerRow
            || q.Length < blocksPerRow * 32 || qScales.Length < blocksPerRow || y.Length < rowCount)
            throw new ArgumentException("spans shorter than the rows");
        ref byte b0 = ref MemoryMarshal.GetReference(blocks);
        ref byte e0 = ref MemoryMarshal.GetReference(scales);
        ref sbyte q0 = ref MemoryMarshal.GetReference(q);
        ref float s0 = ref MemoryMarshal.GetReference(qScales);
        ref float t0 = ref MemoryMarshal.GetReference(scaleTable);
        for (int r = 0; r < rowCount; r++)
        {
            // Two accumulators: consecutive blocks do not wait on each other's multiply-add.
            Vector256<float> even = Vector256<float>.Zero, odd = Vector256<float>.Zero;
            int rowBase = r * blocksPerRow, j = 0;
            for (; j + 1 < blocksPerRow; j += 2)
            {
                even = Block(ref b0, ref e0, ref q0, ref s0, ref t0, rowBase, j, lut, ones, even);
                odd = Block(ref b0, ref e0, ref q0, ref s0, ref t0, rowBase, j + 1, lut, ones, odd);
            }
            if (j < blocksPerRow) even = Block(ref b0, ref e0, ref q0, ref s0, ref t0, rowBase, j, lut, ones, even);
            y[r] = Vector256.Sum(even + odd);
        }
    }

    /// <summary>total + scale_j/2 · d_j · Σ_i table[code] · q_i for block j of the row at <paramref name="rowBase"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Block(ref byte b0, ref byte e0, ref sbyte q0, ref float s0, ref float t0, int rowBase, int j,
        Vector128<sbyte> lut, Vector256<short> ones, Vector256<float> total)
    {
        Vector128<byte> nibble = Vector128.Create((byte)0x0F);
        Vector128<byte> packed = Vector128.LoadUnsafe(ref b0, (nuint)((rowBase + j) * 16));
        Vector128<byte> lo = packed & nibble;
        Vector128<byte> hi = Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & nibble;
        Vector256<sbyte> w = Vector256.Create(Ssse3.Shuffle(lut, lo.AsSByte()), Ssse3.Shuffle(lut, hi.AsSByte()));
        Vector256<sbyte> x = Vector256.LoadUnsafe(ref q0, (nuint)(j * 32));
        Vector256<short> pairs = Avx2.MultiplyAddAdjacent(Avx2.Abs(w), Avx2.Sign(x, w));
        Vector256<int> sums = Avx2.MultiplyAddAdjacent(pairs, ones);
        float scale = Unsafe.Add(ref t0, Unsafe.Add(ref e0, rowBase + j)) * 0.5f * Unsafe.Add(ref s0, j);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), Vector256.Create(scale), total);
    }

    /// <summary>Scratch for one product's quantized activations.</summary>
    public static (sbyte[] Q, float[] Scales) Rent(int cols) =>
        (ArrayPool<sbyte>.Shared.Rent(cols), ArrayPool<float>.Shared.Rent(cols / 32));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Return((sbyte[] Q, float[] Scales) scratch)
    {
        ArrayPool<sbyte>.Shared.Return(scratch.Q);
        ArrayPool<float>.Shared.Return(scratch.Scales);
    }
}
