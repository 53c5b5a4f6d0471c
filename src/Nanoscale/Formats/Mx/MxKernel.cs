using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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

    /// <summary>One MX block at a time for <see cref="BlockCodec.QuantizeBlocks"/>: the scalar bit encoder, or 8 lanes.</summary>
    internal readonly ref struct Quantizer : IBlockQuantizer
    {
        private readonly MxCodec _codec;
        private readonly NonFinitePolicy _policy;
        private readonly bool _vector;
        private readonly ElementEncoder256 _encoder;
        private readonly Span<byte> _codes; // scratch: one block of codes

        public Quantizer(MxCodec codec, NonFinitePolicy policy, bool vector, Span<byte> codes)
        {
            _codec = codec;
            _policy = policy;
            _vector = vector;
            _encoder = vector ? new ElementEncoder256(codec.Element, codec.Rounding, codec.SignedZero) : default;
            _codes = codes;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int QuantizeBlock(scoped ReadOnlySpan<float> block, long firstElementIndex, scoped Span<byte> packed) =>
            _vector
                ? QuantizeBlockVector(_codec, in _encoder, block, _policy, firstElementIndex, _codes, packed)
                : QuantizeBlockScalar(_codec, block, _policy, firstElementIndex, _codes, packed);
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
        EncodeScalar(codec.Element, codec.Rounding, codec.SignedZero, block, MathF.ScaleB(1f, -x), codes);
        BlockPacking.Pack(codes, codec.Element.Bits, packed);
        return (byte)(x + 127);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SharedExponentFloor(MxCodec codec, uint amaxBits) =>
        Math.Clamp(ElementFormat.ExactFloorLog2Bits(amaxBits) - codec.Element.Emax, -127, 127);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void EncodeScalar(ElementFormat f, RoundingMode mode, bool signedZero, ReadOnlySpan<float> block, float multiplier, Span<byte> codes)
    {
        for (int i = 0; i < block.Length; i++)
            codes[i] = (byte)f.Encode(block[i] * multiplier, mode, signedZero);
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
        EncodeScalar(f, codec.Rounding, codec.SignedZero, block, MathF.ScaleB(1f, -x), codes);
        double scale = Math.ScaleB(1.0, x), error = 0;
        for (int i = 0; i < block.Length; i++)
        {
            double d = f.Decode(codes[i]) * scale - block[i];
            error += d * d;
        }
        return error;
    }

    /// <summary>One MX block at a time for <see cref="BlockCodec.DequantizeBlocks"/>: <c>decode(code)·2^X</c>, 4-bit
    /// codes through the 16-entry vector table lookup.</summary>
    internal readonly ref struct Dequantizer : IBlockDequantizer
    {
        private readonly int _bits, _bytesPerBlock;
        private readonly ReadOnlySpan<float> _table, _scaleTable;
        private readonly bool _vector4;
        private readonly Vector256<float> _tableLow, _tableHigh;
        private readonly Span<byte> _codes; // scratch: one block of codes

        public Dequantizer(MxCodec codec, bool vector, Span<byte> codes)
        {
            _bits = codec.Element.Bits;
            _bytesPerBlock = codec.BytesPerBlock;
            _table = codec.Element.DecodeTable;
            _scaleTable = ScaleFormat.E8M0.DecodeTable;
            _vector4 = vector && _bits == 4 && Vector256Dequantize4IsSupported;
            (_tableLow, _tableHigh) = _vector4 ? Packed4Vector.Load4BitTable(_table) : default;
            _codes = codes;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void DequantizeBlock(int word, scoped ReadOnlySpan<byte> blocks, int offset, scoped Span<float> destination)
        {
            float scale = _scaleTable[word];
            ReadOnlySpan<byte> packed = blocks.Slice(offset, _bytesPerBlock);
            if (_vector4)
            {
                Packed4Vector.Dequantize32(_tableLow, _tableHigh, packed, scale, destination);
                return;
            }
            if (_bits == 8)
                packed.CopyTo(_codes);
            else
                BlockPacking.Unpack(packed, _bits, _codes);
            for (int i = 0; i < B; i++)
                destination[i] = _table[_codes[i]] * scale;
        }
    }
}
