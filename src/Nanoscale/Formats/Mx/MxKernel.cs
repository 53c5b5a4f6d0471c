using System.Runtime.CompilerServices;

namespace Nanoscale.Formats.Mx;

/// <summary>
/// Fast MX kernels over a range of rows. The scalar path works on float bits (<see cref="ElementFormat.Encode"/>);
/// the vector path (<c>MxKernel.Vector256.cs</c>) does the same arithmetic in 8 lanes. Both match
/// <see cref="MxReference"/> byte for byte.
/// </summary>
/// <remarks>
/// Why float arithmetic is exact here: X = floor(log2 amax) − emax, so every v·2^−X is below 2^(emax+1) and is an
/// exact power-of-two scaling unless it falls under 2^−126, far below half the smallest subnormal of any element
/// format (≥ 2^−64), where every path yields code 0.
/// </remarks>
internal static partial class MxKernel
{
    private const int B = MxCodec.MxBlockSize;

    public static void QuantizeRows(MxCodec codec, ReadOnlySpan<float> source, int rowCount, int cols,
        NonFinitePolicy policy, long firstElementIndex, bool vector, Span<byte> blocks, Span<byte> scales)
    {
        int nb = codec.BlocksPerRow(cols), bpb = codec.BytesPerBlock;
        Span<float> padded = stackalloc float[B];
        Span<byte> codes = stackalloc byte[B];
        var encoder = vector ? new ElementEncoder256(codec.Element, codec.Rounding) : default;
        for (int r = 0; r < rowCount; r++)
        {
            ReadOnlySpan<float> row = source.Slice(r * cols, cols);
            for (int j = 0; j < nb; j++)
            {
                int start = j * B;
                ReadOnlySpan<float> block = BlockPacking.BlockOf(row, start, padded);
                Span<byte> packed = blocks.Slice((r * nb + j) * bpb, bpb);
                long index0 = firstElementIndex + (long)r * cols + start;
                scales[r * nb + j] = vector
                    ? QuantizeBlockVector(codec, in encoder, block, policy, index0, codes, packed)
                    : QuantizeBlockScalar(codec, block, policy, index0, codes, packed);
            }
        }
    }

    /// <summary>Scale code of a finite block from its amax bits, per the codec's rule (MSE excluded).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int SharedExponent(MxCodec codec, uint amaxBits)
    {
        ElementFormat f = codec.Element;
        int x = ElementFormat.ExactFloorLog2Bits(amaxBits) - f.Emax;
        // Ceil: amax·2^−X lies in [2^emax, 2^(emax+1)), exact in double even when X is outside float's range.
        if (codec.ScaleRule == MxScaleRule.Ceil && Math.ScaleB((double)BitConverter.UInt32BitsToSingle(amaxBits), -x) > f.Max)
            x++;
        return Math.Clamp(x, -127, 127);
    }

    /// <summary>Handles a block holding NaN/Inf: throws for the first such element, or marks the block NaN.</summary>
    internal static byte NonFiniteBlock(ReadOnlySpan<float> block, NonFinitePolicy policy, long index0, Span<byte> packed)
    {
        if (policy == NonFinitePolicy.Throw)
            for (int i = 0; i < block.Length; i++)
                if (!float.IsFinite(block[i]))
                    throw new NonFiniteValueException(index0 + i, block[i]);
        packed.Clear();
        return (byte)ScaleFormat.E8M0.NaNCode;
    }

    private static byte QuantizeBlockScalar(MxCodec codec, ReadOnlySpan<float> block, NonFinitePolicy policy,
        long index0, Span<byte> codes, Span<byte> packed)
    {
        uint amaxBits = 0;
        foreach (float v in block)
            amaxBits = Math.Max(amaxBits, BitConverter.SingleToUInt32Bits(v) & 0x7FFF_FFFFu);
        if (amaxBits >= 0x7F80_0000u)
            return NonFiniteBlock(block, policy, index0, packed);
        if (amaxBits == 0)
        {
            packed.Clear();
            return 0;
        }
        int x = codec.ScaleRule == MxScaleRule.Mse
            ? MseExponent(codec, block, SharedExponentFloor(codec, amaxBits), codes)
            : SharedExponent(codec, amaxBits);
        EncodeScalar(codec.Element, codec.Rounding, block, MathF.ScaleB(1f, -x), codes);
        BlockPacking.Pack(codes, codec.Element.Bits, packed);
        return (byte)(x + 127);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SharedExponentFloor(MxCodec codec, uint amaxBits) =>
        Math.Clamp(ElementFormat.ExactFloorLog2Bits(amaxBits) - codec.Element.Emax, -127, 127);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void EncodeScalar(ElementFormat f, RoundingMode mode, ReadOnlySpan<float> block, float multiplier, Span<byte> codes)
    {
        for (int i = 0; i < block.Length; i++)
            codes[i] = (byte)f.Encode(block[i] * multiplier, mode);
    }

    /// <summary>MSE rule: floor X, then X − 1, then X + 1; strictly lower squared error wins (same order and double
    /// arithmetic as the reference, so the choice is identical).</summary>
    internal static int MseExponent(MxCodec codec, ReadOnlySpan<float> block, int x0, Span<byte> codes)
    {
        int best = x0;
        double bestError = BlockError(codec, block, x0, codes);
        for (int k = 0; k < 2; k++)
        {
            int candidate = k == 0 ? x0 - 1 : x0 + 1;
            if (candidate < -127 || candidate > 127) continue;
            double error = BlockError(codec, block, candidate, codes);
            if (error < bestError) { bestError = error; best = candidate; }
        }
        return best;
    }

    private static double BlockError(MxCodec codec, ReadOnlySpan<float> block, int x, Span<byte> codes)
    {
        ElementFormat f = codec.Element;
        EncodeScalar(f, codec.Rounding, block, MathF.ScaleB(1f, -x), codes);
        double scale = Math.ScaleB(1.0, x), error = 0;
        for (int i = 0; i < block.Length; i++)
        {
            double d = f.Decode(codes[i]) * scale - block[i];
            error += d * d;
        }
        return error;
    }

    public static void DequantizeRows(MxCodec codec, ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales,
        int rowCount, int cols, bool vector, Span<float> destination)
    {
        int nb = codec.BlocksPerRow(cols), bpb = codec.BytesPerBlock, bits = codec.Element.Bits;
        ReadOnlySpan<float> table = codec.Element.DecodeTable;
        ReadOnlySpan<float> scaleTable = ScaleFormat.E8M0.DecodeTable;
        Span<byte> codes = stackalloc byte[B];
        Span<float> values = stackalloc float[B];
        bool vector4 = vector && bits == 4 && Vector256Dequantize4IsSupported;
        var (tableLow, tableHigh) = vector4 ? Packed4Vector.Load4BitTable(table) : default;
        for (int r = 0; r < rowCount; r++)
        {
            Span<float> row = destination.Slice(r * cols, cols);
            for (int j = 0; j < nb; j++)
            {
                float scale = scaleTable[scales[r * nb + j]];
                ReadOnlySpan<byte> packed = blocks.Slice((r * nb + j) * bpb, bpb);
                int start = j * B, count = Math.Min(B, cols - start);
                Span<float> target = count == B ? row.Slice(start, B) : values;
                if (vector4)
                    Packed4Vector.Dequantize32(tableLow, tableHigh, packed, scale, target);
                else
                {
                    if (bits == 8)
                        packed.CopyTo(codes);
                    else
                        BlockPacking.Unpack(packed, bits, codes);
                    for (int i = 0; i < B; i++)
                        target[i] = table[codes[i]] * scale;
                }
                if (count != B)
                    values[..count].CopyTo(row[start..]);
            }
        }
    }
}
