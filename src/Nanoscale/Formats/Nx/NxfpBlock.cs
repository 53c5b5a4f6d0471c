using System.Runtime.CompilerServices;

namespace Nanoscale.Formats.Nx;

/// <summary>
/// The definitions every NxFP kernel shares, so that the reference, scalar and vector paths make the same choice
/// bit for bit.
/// </summary>
/// <remarks>
/// <para><b>Element cast.</b> x = v / s in float (IEEE division, correctly rounded), then the nearest code of the
/// element grid (ties per the rounding mode, saturating). With a recycled level L: the negative-zero code is taken
/// instead when |x − L| &lt; |x − g| in float, g the grid value just chosen; on a tie the grid code is kept (the
/// recycled level never wins a tie). Near a tie both differences are exact (Sterbenz), so this is the true nearest of
/// grid ∪ {L}.</para>
/// <para><b>Block error.</b> q_i = table[c_i]·s (float; exact unless it over/underflows), d_i = v_i − q_i, and the
/// squares d_i·d_i (float) are summed in the lane order of an 8-wide vector: a_k = ((sq_k + sq_{8+k}) + sq_{16+k})
/// + sq_{24+k}, b_k = a_k + a_{k+4}, c_k = b_k + b_{k+2}, error = c_0 + c_1 (<see cref="LaneSum"/>).</para>
/// <para><b>Scale neighbours.</b> For a top T (the format's max, or |L| when the recycled level lies above it):
/// floor = the largest code with value·T ≤ amax, ceil = the smallest with value·T ≥ amax (both exact in double:
/// the products have at most 24 + 8 significant bits); clamped to the smallest/largest code when none exists.</para>
/// </remarks>
internal static class NxfpBlock
{
    public const int B = NxfpCodec.NxBlockSize;

    /// <summary>Sum of 32 squared errors in the fixed 8-lane order (see remarks).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float LaneSum(ReadOnlySpan<float> squares)
    {
        Span<float> a = stackalloc float[8];
        for (int k = 0; k < 8; k++)
            a[k] = ((squares[k] + squares[8 + k]) + squares[16 + k]) + squares[24 + k];
        float b0 = a[0] + a[4], b1 = a[1] + a[5], b2 = a[2] + a[6], b3 = a[3] + a[7];
        float c0 = b0 + b2, c1 = b1 + b3;
        return c0 + c1;
    }

    /// <summary>Floor and ceil scale codes of amax/top (see remarks): a first guess from the bits of amax/top, then
    /// the same exact comparisons as a search, stepping to the largest code with value·top ≤ amax.</summary>
    /// <remarks>For UExMy (value 2^(E−bias)·(1 + M/2^nm), no subnormals) the guess ((e + bias) &lt;&lt; nm) | (top nm
    /// mantissa bits), e = unbiased exponent of the double amax/top, is the floor code or one off it (the quotient is
    /// rounded); the loops below make the answer exact for any ascending table, so it equals the binary search and
    /// the reference's linear scan whatever the guess.</remarks>
    public static (int Floor, int Ceil) ScaleNeighbours(ScaleFormat scale, double amax, double top)
    {
        ReadOnlySpan<float> values = scale.DecodeTable;
        int max = scale.MaxCode, nm = scale.MantissaBits;
        long q = BitConverter.DoubleToInt64Bits(amax / top);
        int e = (int)(q >> 52) - 1023, m = (int)(q >> (52 - nm)) & ((1 << nm) - 1);
        int lo = Math.Clamp(((e + scale.Bias) << nm) | m, 0, max);
        while (lo > 0 && values[lo] * top > amax)
            lo--;
        if (values[lo] * top > amax)
            return (0, 0); // below the smallest code
        while (lo < max && values[lo + 1] * top <= amax)
            lo++;
        if (values[lo] * top == amax || lo == max)
            return (lo, lo);
        return (lo, lo + 1);
    }

    /// <summary>Handles a block holding NaN/Inf: throws for the first such element, or writes the NaN block
    /// (metadata all ones, every code the negative-zero code).</summary>
    public static int NonFiniteBlock(NxfpCodec codec, ReadOnlySpan<float> block, NonFinitePolicy policy, long index0,
        Span<byte> codes, Span<byte> packed)
    {
        if (policy == NonFinitePolicy.Throw)
            for (int i = 0; i < block.Length; i++)
                if (!float.IsFinite(block[i]))
                    throw new NonFiniteValueException(index0 + i, block[i]);
        codes.Fill((byte)codec.NegativeZeroCode);
        BlockPacking.Pack(codes, codec.ElementBits, packed);
        return codec.NaNWord;
    }

    /// <summary>A finite block must not look like the NaN block: in the (only theoretical) case that every code is
    /// the recycled negative-zero code under the all-ones word, element 0 takes its grid code instead.</summary>
    public static void AvoidNaNPattern(NxfpCodec codec, int word, float x0, int format, Span<byte> codes)
    {
        if (word != codec.NaNWord)
            return;
        foreach (byte c in codes)
            if (c != codec.NegativeZeroCode)
                return;
        codes[0] = (byte)codec.Formats[format].EncodeReference(x0, codec.Rounding);
    }

    /// <summary>True when the block is the NaN block.</summary>
    public static bool IsNaNBlock(NxfpCodec codec, int word, ReadOnlySpan<byte> codes)
    {
        if (word != codec.NaNWord)
            return false;
        foreach (byte c in codes)
            if (c != codec.NegativeZeroCode)
                return false;
        return true;
    }

    /// <summary><see cref="IsNaNBlock"/> on a 4-bit block still packed two codes a byte, as the integer kernels read it
    /// (every byte the negative-zero code twice).</summary>
    public static bool IsPackedNaNBlock(NxfpCodec codec, int word, ReadOnlySpan<byte> packed)
    {
        if (word != codec.NaNWord)
            return false;
        byte both = (byte)(codec.NegativeZeroCode * 0x11);
        foreach (byte b in packed)
            if (b != both)
                return false;
        return true;
    }
}
