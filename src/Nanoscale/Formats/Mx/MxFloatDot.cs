using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats.Mx;

/// <summary>
/// One token's product on the codes of the MX formats other than FP4 (MXFP8, MXFP6, MXFP5, MXINT8 … MXINT2), without
/// decoding rows to floats: each code is widened to its value in registers and multiplied with the float activations
/// (FMA); the block's E8M0 scale is applied once per block.
/// </summary>
/// <remarks>
/// <para>A sign-magnitude minifloat ExMy becomes a float by placing its magnitude bits so that its mantissa ends where a
/// float's does (shift 23 − y) and adding 127 − bias to the exponent field; a subnormal code (exponent field 0) is read
/// as 1.m·2^(1−bias) and 2^(1−bias) subtracted, so no float subnormal appears on the way (each would cost a microcode
/// assist). Exact for every finite code; <see cref="Widen(int)"/>, the scalar twin the codes are checked with, multiplies by
/// 2^(127 − bias) instead. The sign bit moves to bit 31. A two's-complement
/// INTn code is sign-extended, converted, and its step 2^−(n−2) goes into the block's scale.</para>
/// <para>At construction every code's widened value is compared bit for bit with the format's table
/// (<see cref="ElementFormat.DecodeTable"/>): the codes where they differ — only E4M3's NaN and E5M2's Inf/NaN, which
/// the encoder never writes — all lie above one magnitude, and a block holding one takes the table (a damaged or
/// hand-made file decodes as the reference does). So the kernel is exact in the weights; a product differs from
/// decode-then-multiply only in float summation order (within 1e-6 of Σ|w·x|, <c>FusedDotTests</c>).</para>
/// <para>The four minifloat shapes of MXFP8 and MXFP6 (E4M3, E5M2, E2M3, E3M2) run their own instance of the same
/// widening with the shape's constants folded in (<see cref="DotRowsShaped{TShape, TRows}"/>): 16 codes a step with
/// AVX-512, eight a step with AVX2 alone (1.4–1.6 times the generic kernel's speed, which branches on the format in
/// every group of eight), both equal to the generic kernel bit for bit.</para>
/// </remarks>
internal sealed class MxFloatDot
{
    private readonly ElementFormat _element;
    private readonly int _bits, _magnitudeMask, _signBit, _shift;
    private int _firstSpecial; // set once by For, after every code was checked
    private readonly bool _integer;
    private readonly float _factor;
    private readonly Vector256<byte> _gather;   // packed codes: the 4 bytes each lane's code starts in
    private readonly Vector256<int> _offsets;   // and the bit where it starts there

    private MxFloatDot(ElementFormat element)
    {
        _element = element;
        _bits = element.Bits;
        _integer = element.Encoding == ElementEncoding.TwosComplement;
        _signBit = 1 << (_bits - 1);
        _magnitudeMask = _signBit - 1;
        _shift = 23 - element.MantissaBits;
        _factor = _integer ? element.Decode(1) : MathF.ScaleB(1f, 127 - element.Bias);
        _firstSpecial = int.MaxValue;
        // Eight codes of b bits fill b bytes: lane i's code starts in byte ⌊i·b/8⌋ at bit i·b mod 8, so the 4 bytes from
        // there (vpshufb, the same 16 bytes in both halves) shifted right by that bit (vpsrlvd) and masked are the code.
        var gather = new byte[32];
        var offsets = new int[8];
        for (int i = 0; i < 8; i++)
        {
            for (int k = 0; k < 4; k++) gather[4 * i + k] = (byte)(i * _bits / 8 + k);
            offsets[i] = i * _bits % 8;
        }
        _gather = Vector256.Create(gather);
        _offsets = Vector256.Create(offsets);
    }

    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>The kernel of an element format, or null when widening cannot give its values (checked on every code).</summary>
    public static MxFloatDot? For(ElementFormat element)
    {
        if (element.Bits is < 2 or > 8 || (element.Encoding == ElementEncoding.SignMagnitude && element.MantissaBits > 23)) return null;
        var dot = new MxFloatDot(element);
        int firstSpecial = int.MaxValue;
        for (int code = 0; code < 1 << element.Bits; code++)
            if (BitConverter.SingleToInt32Bits(dot.Widen(code)) != BitConverter.SingleToInt32Bits(element.Decode(code)))
            {
                if (dot._integer) return null;
                firstSpecial = Math.Min(firstSpecial, code & dot._magnitudeMask);
            }
        // A block with any magnitude from the first such code up takes the table (exact for every code; one comparison
        // per lane finds them, and for E4M3 and E5M2 only the NaN/Inf magnitudes are that high).
        dot._firstSpecial = firstSpecial;
        return dot;
    }

    /// <summary>The scalar twin of the vector widening (and the check above): a code's value as the kernel computes it.</summary>
    internal float Widen(int code)
    {
        if (_integer) return (code << (32 - _bits) >> (32 - _bits)) * _factor;
        float magnitude = BitConverter.Int32BitsToSingle((code & _magnitudeMask) << _shift) * _factor;
        return (code & _signBit) != 0 ? -magnitude : magnitude;
    }

    /// <summary>y[r] = Σ_j scale_j · Σ_i value(code_i) · x_i over <paramref name="rowCount"/> rows of whole blocks.</summary>
    public void DotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        if (Avx512F.IsSupported && Avx512BW.IsSupported && !_integer && cols % MxCodec.MxBlockSize == 0)
        {
            bool done = (_bits, _element.MantissaBits) switch
            {
                (8, 3) => DotRowsShaped<E4M3, Rows512>(blocks, scales, rowCount, cols, x, y),
                (8, 2) => DotRowsShaped<E5M2, Rows512>(blocks, scales, rowCount, cols, x, y),
                (6, 3) => DotRowsShaped<E2M3, Rows512>(blocks, scales, rowCount, cols, x, y),
                (6, 2) => DotRowsShaped<E3M2, Rows512>(blocks, scales, rowCount, cols, x, y),
                _ => false,
            };
            if (done) return;
        }
        else if (Avx2.IsSupported && Fma.IsSupported && !_integer && cols % MxCodec.MxBlockSize == 0)
        {
            bool done = (_bits, _element.MantissaBits) switch
            {
                (8, 3) => DotRowsShaped<E4M3, Rows256>(blocks, scales, rowCount, cols, x, y),
                (8, 2) => DotRowsShaped<E5M2, Rows256>(blocks, scales, rowCount, cols, x, y),
                (6, 3) => DotRowsShaped<E2M3, Rows256>(blocks, scales, rowCount, cols, x, y),
                (6, 2) => DotRowsShaped<E3M2, Rows256>(blocks, scales, rowCount, cols, x, y),
                _ => false,
            };
            if (done) return;
        }
        DotRowsGeneric(blocks, scales, rowCount, cols, x, y);
    }

    /// <summary>The widths and biases of the minifloats that have a kernel of their own (the JIT folds them into the
    /// code: no branch on the format, every shift an immediate).</summary>
    internal interface IShape
    {
        static abstract int Bits { get; }
        static abstract int MantissaBits { get; }
        static abstract int Bias { get; }
    }

    internal readonly struct E4M3 : IShape { public static int Bits => 8; public static int MantissaBits => 3; public static int Bias => 7; }
    internal readonly struct E5M2 : IShape { public static int Bits => 8; public static int MantissaBits => 2; public static int Bias => 15; }
    internal readonly struct E2M3 : IShape { public static int Bits => 6; public static int MantissaBits => 3; public static int Bias => 1; }
    internal readonly struct E3M2 : IShape { public static int Bits => 6; public static int MantissaBits => 2; public static int Bias => 3; }

    /// <summary>
    /// <see cref="DotRowsGeneric"/> for one minifloat shape with its constants folded into the code (no branch on the
    /// format, every shift an immediate): <typeparamref name="TRows"/>'s row loop — AVX-512 (<see cref="Rows512"/>: 16
    /// codes a step, groups 0 and 2 of a block in one vector and 1 and 3 in the other, so one multiply and one
    /// multiply-add give the generic kernel's two sums in the vector's halves) or AVX2 alone (<see cref="Rows256"/>:
    /// eight codes a step, four steps) — both in the generic kernel's float order per block, so the same bits — each widening exactly as
    /// <see cref="Widen(Vector256{int}, in Constants, ref Vector256{int})"/> does (the same integer rebias, so the same
    /// floats), each block's E8M0 scale once. Rows with a code from the first special magnitude up (E4M3's NaN, E5M2's
    /// Inf/NaN) are done again by the generic path after the loop (no call inside it: that would make the JIT keep its
    /// constants on the stack). False when the bias or width does not match <typeparamref name="TShape"/> (the caller
    /// then takes the generic path).
    /// </summary>
    private bool DotRowsShaped<TShape, TRows>(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
        where TShape : struct, IShape where TRows : struct, IShapedRows
    {
        const int B = MxCodec.MxBlockSize;
        if (_element.Bias != TShape.Bias) return false;
        int nb = cols / B, bytesPerBlock = TShape.Bits * 4;
        if (blocks.Length < (long)rowCount * nb * bytesPerBlock || scales.Length < (long)rowCount * nb || x.Length < cols || y.Length < rowCount)
            throw new ArgumentException("spans shorter than the rows");
        // 6-bit codes: a block's last group is read as 16 bytes, up to 10 past the block; the last row, whose last block
        // may end the span, goes through the generic path.
        int fastRows = TShape.Bits == 8 ? rowCount : Math.Max(0, rowCount - 1);
        int[] specialRows = System.Buffers.ArrayPool<int>.Shared.Rent(Math.Max(1, fastRows));
        try
        {
            int specials = TRows.Rows<TShape>(blocks, scales, fastRows, nb, x, y, _firstSpecial == int.MaxValue ? int.MaxValue : _firstSpecial - 1, specialRows);
            for (int i = 0; i < specials; i++)
            {
                int r = specialRows[i];
                DotRowsGeneric(blocks.Slice(r * nb * bytesPerBlock, nb * bytesPerBlock), scales.Slice(r * nb, nb), 1, cols, x, y.Slice(r, 1));
            }
        }
        finally { System.Buffers.ArrayPool<int>.Shared.Return(specialRows); }
        if (fastRows < rowCount)
            DotRowsGeneric(blocks[(fastRows * nb * bytesPerBlock)..], scales[(fastRows * nb)..], rowCount - fastRows, cols, x, y[fastRows..]);
        return true;
    }

    /// <summary>The row loop of <see cref="DotRowsShaped{TShape, TRows}"/> at one vector width: <c>y[r]</c> for the
    /// first rows (spans checked), the rows with a special code listed in the array given; returns how many.</summary>
    internal interface IShapedRows
    {
        static abstract int Rows<TShape>(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int nb, ReadOnlySpan<float> x,
            Span<float> y, int threshold, int[] specialRows) where TShape : struct, IShape;
    }

    internal readonly struct Rows512 : IShapedRows
    {
        public static unsafe int Rows<TShape>(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int nb, ReadOnlySpan<float> x,
            Span<float> y, int threshold, int[] specialRows) where TShape : struct, IShape
        {
            const int B = MxCodec.MxBlockSize;
            int bytesPerBlock = TShape.Bits * 4, specials = 0;
            ref byte b0 = ref MemoryMarshal.GetReference(blocks);
            ref byte s0 = ref MemoryMarshal.GetReference(scales);
            ref float x0 = ref MemoryMarshal.GetReference(x);
            ref float t0 = ref MemoryMarshal.GetReference(ScaleFormat.E8M0.DecodeTable);
            // Code i of eight 6-bit codes starts in byte ⌊6i/8⌋ at bit 6i mod 8 (codes 0–3 in a 128-bit lane, 4–7 in the next).
            var gather = Vector256.Create(Vector128.Create((byte)0, 1, 2, 3, 0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5),
                Vector128.Create((byte)3, 4, 5, 6, 3, 4, 5, 6, 4, 5, 6, 7, 5, 6, 7, 8));
            var offsets = Vector256.Create(0u, 6, 4, 2, 0, 6, 4, 2);
            var limit = Vector512.Create(threshold);
            for (int r = 0; r < rowCount; r++)
            {
                Vector256<float> even = Vector256<float>.Zero, odd = Vector256<float>.Zero;
                Vector512<int> found = Vector512<int>.Zero;
                ref byte row = ref Unsafe.Add(ref b0, (nint)r * nb * bytesPerBlock);
                ref byte rowScales = ref Unsafe.Add(ref s0, (nint)r * nb);
                for (int j = 0; j < nb; j++)
                {
                    ref byte codes = ref Unsafe.Add(ref row, j * bytesPerBlock);
                    Sse.Prefetch0(Unsafe.AsPointer(ref Unsafe.Add(ref codes, 512)));
                    ref float xj = ref Unsafe.Add(ref x0, j * B);
                    // Groups 0 and 2 of the block's four groups of eight in one vector, 1 and 3 in the other, so one
                    // multiply and one multiply-add give Rows256's two sums a and c in the two halves: the same float
                    // operations in the same order, sixteen lanes at a time.
                    var w02 = Widen512<TShape>(Vector512.Create(Codes256<TShape>(ref codes, gather, offsets),
                        Codes256<TShape>(ref Unsafe.Add(ref codes, 2 * TShape.Bits), gather, offsets)), limit, ref found);
                    var w13 = Widen512<TShape>(Vector512.Create(Codes256<TShape>(ref Unsafe.Add(ref codes, TShape.Bits), gather, offsets),
                        Codes256<TShape>(ref Unsafe.Add(ref codes, 3 * TShape.Bits), gather, offsets)), limit, ref found);
                    var x02 = Vector512.Create(Vector256.LoadUnsafe(ref xj), Vector256.LoadUnsafe(ref xj, 16));
                    var x13 = Vector512.Create(Vector256.LoadUnsafe(ref xj, 8), Vector256.LoadUnsafe(ref xj, 24));
                    var ac = Vector512.FusedMultiplyAdd(w13, x13, w02 * x02);
                    var sum = ac.GetLower() + ac.GetUpper();
                    var scale = Vector256.Create(Unsafe.Add(ref t0, Unsafe.Add(ref rowScales, j)));
                    if ((j & 1) == 0) even = Fma.MultiplyAdd(sum, scale, even);
                    else odd = Fma.MultiplyAdd(sum, scale, odd);
                }
                y[r] = Vector256.Sum(even + odd);
                if (found != Vector512<int>.Zero) specialRows[specials++] = r;
            }
            return specials;
        }
    }

    /// <summary><see cref="Widen(Vector256{int}, in Constants, ref Vector256{int})"/> on 16 lanes, its constants the
    /// shape's.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Widen512<TShape>(Vector512<int> c, Vector512<int> threshold, ref Vector512<int> found) where TShape : struct, IShape
    {
        int signBit = 1 << (TShape.Bits - 1);
        Vector512<int> magnitude = c & Vector512.Create(signBit - 1);
        found |= Vector512.GreaterThan(magnitude, threshold);
        Vector512<int> subnormal = Vector512.GreaterThan(Vector512.Create(1 << TShape.MantissaBits), magnitude);
        Vector512<int> bits = Vector512.ShiftLeft(magnitude, 23 - TShape.MantissaBits) + Vector512.Create((127 - TShape.Bias) << 23)
                              + (subnormal & Vector512.Create(1 << 23));
        Vector512<float> value = bits.AsSingle() - (subnormal & Vector512.Create(MathF.ScaleB(1f, 1 - TShape.Bias)).AsInt32()).AsSingle();
        return (value.AsInt32() | Vector512.ShiftLeft(c & Vector512.Create(signBit), 32 - TShape.Bits)).AsSingle();
    }

    internal readonly struct Rows256 : IShapedRows
    {
        public static unsafe int Rows<TShape>(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int nb, ReadOnlySpan<float> x,
            Span<float> y, int threshold, int[] specialRows) where TShape : struct, IShape
        {
            const int B = MxCodec.MxBlockSize;
            int bytesPerBlock = TShape.Bits * 4, groupBytes = TShape.Bits, specials = 0;
            ref byte b0 = ref MemoryMarshal.GetReference(blocks);
            ref byte s0 = ref MemoryMarshal.GetReference(scales);
            ref float x0 = ref MemoryMarshal.GetReference(x);
            ref float t0 = ref MemoryMarshal.GetReference(ScaleFormat.E8M0.DecodeTable);
            // Code i of eight 6-bit codes starts in byte ⌊6i/8⌋ at bit 6i mod 8 (codes 0–3 in the low 128-bit lane, 4–7 in the high).
            var gather = Vector256.Create(Vector128.Create((byte)0, 1, 2, 3, 0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5),
                Vector128.Create((byte)3, 4, 5, 6, 3, 4, 5, 6, 4, 5, 6, 7, 5, 6, 7, 8));
            var offsets = Vector256.Create(0u, 6, 4, 2, 0, 6, 4, 2);
            var limit = Vector256.Create(threshold);
            // An 8-bit block's codes are all normal when each magnitude lies in 2^M .. threshold (bytes, unsigned).
            var lowest = Vector256.Create((byte)(1 << TShape.MantissaBits));
            var normalSpan = Vector256.Create((byte)Math.Clamp(threshold - (1 << TShape.MantissaBits), 0, 255));
            for (int r = 0; r < rowCount; r++)
            {
                Vector256<float> even = Vector256<float>.Zero, odd = Vector256<float>.Zero;
                Vector256<int> found = Vector256<int>.Zero;
                ref byte row = ref Unsafe.Add(ref b0, (nint)r * nb * bytesPerBlock);
                ref byte rowScales = ref Unsafe.Add(ref s0, (nint)r * nb);
                for (int j = 0; j < nb; j++)
                {
                    ref byte codes = ref Unsafe.Add(ref row, j * bytesPerBlock);
                    Sse.Prefetch0(Unsafe.AsPointer(ref Unsafe.Add(ref codes, 512)));
                    ref float xj = ref Unsafe.Add(ref x0, j * B);
                    Vector256<float> w0, w1, w2, w3;
                    if (TShape.Bits == 8 && Normal8(ref codes, lowest, normalSpan))
                    {
                        // Every code of the block normal (no zero, subnormal or special): sign-extended and shifted
                        // under a float's exponent, masked and rebiased — four operations per eight instead of ~13.
                        w0 = WidenNormal8<TShape>(ref codes);
                        w1 = WidenNormal8<TShape>(ref Unsafe.Add(ref codes, 8));
                        w2 = WidenNormal8<TShape>(ref Unsafe.Add(ref codes, 16));
                        w3 = WidenNormal8<TShape>(ref Unsafe.Add(ref codes, 24));
                    }
                    else
                    {
                        w0 = Widen256<TShape>(Codes256<TShape>(ref codes, gather, offsets), limit, ref found);
                        w1 = Widen256<TShape>(Codes256<TShape>(ref Unsafe.Add(ref codes, groupBytes), gather, offsets), limit, ref found);
                        w2 = Widen256<TShape>(Codes256<TShape>(ref Unsafe.Add(ref codes, 2 * groupBytes), gather, offsets), limit, ref found);
                        w3 = Widen256<TShape>(Codes256<TShape>(ref Unsafe.Add(ref codes, 3 * groupBytes), gather, offsets), limit, ref found);
                    }
                    var a = Fma.MultiplyAdd(w1, Vector256.LoadUnsafe(ref xj, 8), w0 * Vector256.LoadUnsafe(ref xj));
                    var c = Fma.MultiplyAdd(w3, Vector256.LoadUnsafe(ref xj, 24), w2 * Vector256.LoadUnsafe(ref xj, 16));
                    var scale = Vector256.Create(Unsafe.Add(ref t0, Unsafe.Add(ref rowScales, j)));
                    if ((j & 1) == 0) even = Fma.MultiplyAdd(a + c, scale, even);
                    else odd = Fma.MultiplyAdd(a + c, scale, odd);
                }
                y[r] = Vector256.Sum(even + odd);
                if (found != Vector256<int>.Zero) specialRows[specials++] = r;
            }
            return specials;
        }
    }

    /// <summary>Eight codes of <typeparamref name="TShape"/> as int32 lanes, from <paramref name="group"/> (8 bytes
    /// read for 8-bit codes, 16 for 6-bit ones).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Codes256<TShape>(ref byte group, Vector256<byte> gather, Vector256<uint> offsets) where TShape : struct, IShape
    {
        if (TShape.Bits == 8) return Avx2.ConvertToVector256Int32(Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<ulong>(ref group)).AsByte());
        var bytes = Vector128.LoadUnsafe(ref group);
        var words = Avx2.Shuffle(Vector256.Create(bytes, bytes), gather);
        return (Avx2.ShiftRightLogicalVariable(words.AsUInt32(), offsets) & Vector256.Create((1u << TShape.Bits) - 1)).AsInt32();
    }

    /// <summary>Whether the 32 8-bit codes at <paramref name="codes"/> are all normal: magnitude (the low seven bits)
    /// from <paramref name="lowest"/> (2^M, the first with a nonzero exponent) to <paramref name="lowest"/> +
    /// <paramref name="span"/> (the largest code the encoder writes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Normal8(ref byte codes, Vector256<byte> lowest, Vector256<byte> span) =>
        Vector256.LessThanOrEqualAll((Vector256.LoadUnsafe(ref codes) & Vector256.Create((byte)0x7F)) - lowest, span);

    /// <summary>Eight normal 8-bit codes as floats, the same bits as <see cref="Widen256{TShape}"/> gives them: each code
    /// sign-extended to 32 bits and shifted so its exponent's lowest bit is the float's (bit 23); the mask keeps the sign
    /// (bit 31) and the seven magnitude bits, and adding 127 − bias to the exponent field cannot carry into the sign.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<float> WidenNormal8<TShape>(ref byte codes) where TShape : struct, IShape
    {
        var c = Avx2.ConvertToVector256Int32((sbyte*)Unsafe.AsPointer(ref codes));
        var bits = Vector256.ShiftLeft(c, 23 - TShape.MantissaBits) & Vector256.Create(unchecked((int)0x80000000) | (0x7F << (23 - TShape.MantissaBits)));
        return (bits + Vector256.Create((127 - TShape.Bias) << 23)).AsSingle();
    }

    /// <summary><see cref="Widen512{TShape}"/> on eight lanes (<see cref="Rows256"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Widen256<TShape>(Vector256<int> c, Vector256<int> threshold, ref Vector256<int> found) where TShape : struct, IShape
    {
        int signBit = 1 << (TShape.Bits - 1);
        Vector256<int> magnitude = c & Vector256.Create(signBit - 1);
        found |= Vector256.GreaterThan(magnitude, threshold);
        Vector256<int> subnormal = Vector256.GreaterThan(Vector256.Create(1 << TShape.MantissaBits), magnitude);
        Vector256<int> bits = Vector256.ShiftLeft(magnitude, 23 - TShape.MantissaBits) + Vector256.Create((127 - TShape.Bias) << 23)
                              + (subnormal & Vector256.Create(1 << 23));
        Vector256<float> value = bits.AsSingle() - (subnormal & Vector256.Create(MathF.ScaleB(1f, 1 - TShape.Bias)).AsInt32()).AsSingle();
        return (value.AsInt32() | Vector256.ShiftLeft(c & Vector256.Create(signBit), 32 - TShape.Bits)).AsSingle();
    }

    /// <summary><see cref="DotRows"/> through the generic AVX2 kernel alone (tests compare the shape kernels with it).</summary>
    internal void DotRowsGenericOnly(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y) =>
        DotRowsGeneric(blocks, scales, rowCount, cols, x, y);

    /// <summary>The AVX2 kernel for any element width (2–8 bits, minifloat or integer).</summary>
    private void DotRowsGeneric(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        const int B = MxCodec.MxBlockSize;
        int nb = cols / B, bytesPerBlock = BlockPacking.PackedBytes(B, _bits);
        if (cols % B != 0 || blocks.Length < (long)rowCount * nb * bytesPerBlock || scales.Length < (long)rowCount * nb
            || x.Length < cols || y.Length < rowCount)
            throw new ArgumentException("spans shorter than the rows");
        ReadOnlySpan<float> scaleTable = ScaleFormat.E8M0.DecodeTable;
        var constants = new Constants(this);
        float integerStep = _integer ? _factor : 1f;
        Span<byte> padded = stackalloc byte[PaddedBytes];
        ref float x0 = ref MemoryMarshal.GetReference(x);
        for (int r = 0; r < rowCount; r++)
        {
            // Two accumulators: consecutive blocks do not wait on each other's multiply-add.
            Vector256<float> even = Vector256<float>.Zero, odd = Vector256<float>.Zero;
            for (int j = 0; j < nb; j++)
            {
                int block = r * nb + j;
                scoped ref byte codes = ref Readable(blocks, block, bytesPerBlock, padded);
                float scale = scaleTable[scales[block]] * integerStep;
                Vector256<float> sum = Block(ref codes, ref Unsafe.Add(ref x0, j * B), constants, out bool special);
                if (special) sum = Vector256.CreateScalar(TableBlock(MemoryMarshal.CreateReadOnlySpan(ref codes, bytesPerBlock), x.Slice(j * B, B)));
                if ((j & 1) == 0) even = Fma.MultiplyAdd(sum, Vector256.Create(scale), even);
                else odd = Fma.MultiplyAdd(sum, Vector256.Create(scale), odd);
            }
            y[r] = Vector256.Sum(even + odd);
        }
    }

    /// <summary>What widening needs, made once per product (not per block).</summary>
    private readonly struct Constants(MxFloatDot dot)
    {
        public readonly int Bits = dot._bits, Shift = dot._shift;
        public readonly bool Integer = dot._integer;
        public readonly Vector256<byte> Gather = dot._gather;
        public readonly Vector256<uint> Offsets = dot._offsets.AsUInt32();
        public readonly Vector256<int> CodeMask = Vector256.Create((1 << dot._bits) - 1);
        public readonly Vector256<int> Magnitude = Vector256.Create(dot._magnitudeMask), Sign = Vector256.Create(dot._signBit);
        public readonly Vector256<int> Threshold = Vector256.Create(dot._firstSpecial == int.MaxValue ? int.MaxValue : dot._firstSpecial - 1);
        public readonly Vector256<int> NormalLimit = Vector256.Create(1 << dot._element.MantissaBits), ImplicitOne = Vector256.Create(1 << 23);
        public readonly Vector256<int> Rebias = Vector256.Create((127 - dot._element.Bias) << 23);
        public readonly Vector256<int> Hidden = Vector256.Create(MathF.ScaleB(1f, 1 - dot._element.Bias)).AsInt32();
    }

    /// <summary>Eight codes starting at <paramref name="group"/> (b bytes; 16 readable) as int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Codes(ref byte group, in Constants k)
    {
        if (k.Bits == 8) return Avx2.ConvertToVector256Int32(Vector128.CreateScalarUnsafe(Unsafe.ReadUnaligned<ulong>(ref group)).AsByte());
        Vector128<byte> bytes = Vector128.LoadUnsafe(ref group);
        Vector256<byte> words = Avx2.Shuffle(Vector256.Create(bytes, bytes), k.Gather);
        return Avx2.ShiftRightLogicalVariable(words.AsInt32(), k.Offsets) & k.CodeMask;
    }

    /// <summary>The values of eight codes; <paramref name="found"/> gains the lanes whose code the widening does not give.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Widen(Vector256<int> c, in Constants k, ref Vector256<int> found)
    {
        if (k.Integer) return Avx.ConvertToVector256Single(Vector256.ShiftRightArithmetic(Vector256.ShiftLeft(c, 32 - k.Bits), 32 - k.Bits));
        Vector256<int> magnitude = c & k.Magnitude;
        found |= Avx2.CompareGreaterThan(magnitude, k.Threshold);
        // No float subnormal on the way (each costs a microcode assist on this class of CPU): the exponent is rebiased
        // in the integers, and a subnormal code (exponent field 0) is read as 1.m·2^(1−bias) and 2^(1−bias) subtracted.
        Vector256<int> subnormal = Avx2.CompareGreaterThan(k.NormalLimit, magnitude);
        Vector256<int> bits = Vector256.ShiftLeft(magnitude, k.Shift) + k.Rebias + (subnormal & k.ImplicitOne);
        Vector256<float> value = bits.AsSingle() - (subnormal & k.Hidden).AsSingle();
        return (value.AsInt32() | Vector256.ShiftLeft(c & k.Sign, 32 - k.Bits)).AsSingle();
    }

    /// <summary>The values of one block's 32 packed codes, four groups of eight (<paramref name="found"/> as in
    /// <see cref="Widen(Vector256{int}, in Constants, ref Vector256{int})"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WidenBlock(ref byte c0, in Constants k, ref Vector256<int> found,
        out Vector256<float> w0, out Vector256<float> w1, out Vector256<float> w2, out Vector256<float> w3)
    {
        int b = k.Bits;
        w0 = Widen(Codes(ref c0, k), k, ref found);
        w1 = Widen(Codes(ref Unsafe.Add(ref c0, b), k), k, ref found);
        w2 = Widen(Codes(ref Unsafe.Add(ref c0, 2 * b), k), k, ref found);
        w3 = Widen(Codes(ref Unsafe.Add(ref c0, 3 * b), k), k, ref found);
    }

    /// <summary>Bytes a padded copy of one block needs: its last group (from byte 3·b) is read as 16 bytes.</summary>
    private const int PaddedBytes = 3 * 8 + 16;

    /// <summary>Block <paramref name="block"/>'s bytes, readable 16 bytes from its last group's start (<see cref="Codes"/>
    /// reads each group so): in place, or, for the span's last blocks, copied into <paramref name="padded"/>.</summary>
    private ref byte Readable(ReadOnlySpan<byte> blocks, int block, int bytesPerBlock, Span<byte> padded)
    {
        long start = (long)block * bytesPerBlock;
        if (start + 3L * _bits + 16 <= blocks.Length) return ref Unsafe.Add(ref MemoryMarshal.GetReference(blocks), (nint)start);
        blocks.Slice((int)start, bytesPerBlock).CopyTo(padded);
        return ref MemoryMarshal.GetReference(padded);
    }

    /// <summary>Σ value(code_i)·x_i of one block of 32 packed codes, as eight lanes; <paramref name="special"/> when a
    /// code is one the widening does not give (the caller then takes <see cref="TableBlock"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Block(ref byte c0, ref float x, in Constants k, out bool special)
    {
        Vector256<int> found = Vector256<int>.Zero;
        WidenBlock(ref c0, k, ref found, out var w0, out var w1, out var w2, out var w3);
        // Two chains of multiply-adds.
        Vector256<float> a = Fma.MultiplyAdd(w1, Vector256.LoadUnsafe(ref x, 8), w0 * Vector256.LoadUnsafe(ref x));
        Vector256<float> c = Fma.MultiplyAdd(w3, Vector256.LoadUnsafe(ref x, 24), w2 * Vector256.LoadUnsafe(ref x, 16));
        special = found != Vector256<int>.Zero;
        return a + c;
    }

    /// <summary>
    /// Decodes <paramref name="blockCount"/> consecutive blocks of whole 32-code blocks into floats, value(code) × the
    /// block's E8M0 scale — the reference dequantizer's arithmetic (<c>table[code] · scale</c>, one multiply), with the
    /// values widened in registers eight at a time instead of looked up one by one; a block holding a code the widening
    /// does not give takes the table. The same bits as the reference (<c>CodecTests</c>' fast-equals-reference checks).
    /// </summary>
    public void Dequantize(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int blockCount, Span<float> destination)
    {
        int bytesPerBlock = 4 * _bits;
        if (blocks.Length < (long)blockCount * bytesPerBlock || scales.Length < blockCount || destination.Length < (long)blockCount * 32)
            throw new ArgumentException("spans shorter than the blocks");
        if (!_integer && _bits == 8 && _element.MantissaBits == 3 && _element.Bias == E4M3.Bias)
            Dequantize8<E4M3>(blocks, scales, blockCount, destination);
        else if (!_integer && _bits == 8 && _element.MantissaBits == 2 && _element.Bias == E5M2.Bias)
            Dequantize8<E5M2>(blocks, scales, blockCount, destination);
        else if (_integer && _bits == 8) DequantizeInt8(blocks, scales, blockCount, destination);
        else DequantizeGeneric(blocks, scales, 0, blockCount, destination);
    }

    /// <summary>
    /// <see cref="Dequantize"/> for MXINT8: each code sign-extended and converted (exact), times step × scale in one
    /// multiply — the step 2^−6 and the E8M0 scale are powers of two, so their product is exact (a subnormal one too)
    /// and code × it rounds the same real number the reference's (code × step) × scale does: the same floats.
    /// </summary>
    private unsafe void DequantizeInt8(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int blockCount, Span<float> destination)
    {
        ref float t0 = ref MemoryMarshal.GetReference(ScaleFormat.E8M0.DecodeTable);
        fixed (byte* b0 = blocks)
        fixed (byte* s0 = scales)
        fixed (float* d0 = destination)
            for (int j = 0; j < blockCount; j++)
                Int8Dot.DecodeBlock((sbyte*)b0 + (nint)j * 32, Unsafe.Add(ref t0, s0[j]) * _factor, d0 + (nint)j * 32);
    }

    /// <summary>
    /// <see cref="Dequantize"/> for 8-bit minifloats (MXFP8's E4M3 and E5M2): a block whose codes are all normal — every
    /// block of real or random weights but those holding a zero — is widened four operations per eight codes
    /// (<see cref="WidenNormal8{TShape}"/>, as the one-token kernel does) instead of ~13, then scaled; any other block
    /// goes through the generic widening (and the table for specials). The same floats either way, so the reference's
    /// bits. A 16-sequence MXFP8 step of the SmolLM2-shaped model decodes every tile: docs/serve.md, eighteenth session.
    /// </summary>
    private unsafe void Dequantize8<TShape>(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int blockCount, Span<float> destination)
        where TShape : struct, IShape
    {
        int threshold = _firstSpecial == int.MaxValue ? int.MaxValue : _firstSpecial - 1;
        var lowest = Vector256.Create((byte)(1 << TShape.MantissaBits));
        var normalSpan = Vector256.Create((byte)Math.Clamp(threshold - (1 << TShape.MantissaBits), 0, 255));
        ref float t0 = ref MemoryMarshal.GetReference(ScaleFormat.E8M0.DecodeTable);
        ref byte b0 = ref MemoryMarshal.GetReference(blocks);
        ref byte s0 = ref MemoryMarshal.GetReference(scales);
        ref float d0 = ref MemoryMarshal.GetReference(destination);
        for (int j = 0; j < blockCount; j++)
        {
            ref byte codes = ref Unsafe.Add(ref b0, (nint)j * 32);
            if (!Normal8(ref codes, lowest, normalSpan))
            {
                DequantizeGeneric(blocks, scales, j, 1, destination);
                continue;
            }
            var scale = Vector256.Create(Unsafe.Add(ref t0, Unsafe.Add(ref s0, j)));
            ref float d = ref Unsafe.Add(ref d0, (nint)j * 32);
            (WidenNormal8<TShape>(ref codes) * scale).StoreUnsafe(ref d);
            (WidenNormal8<TShape>(ref Unsafe.Add(ref codes, 8)) * scale).StoreUnsafe(ref d, 8);
            (WidenNormal8<TShape>(ref Unsafe.Add(ref codes, 16)) * scale).StoreUnsafe(ref d, 16);
            (WidenNormal8<TShape>(ref Unsafe.Add(ref codes, 24)) * scale).StoreUnsafe(ref d, 24);
        }
    }

    /// <summary><see cref="Dequantize"/> of blocks <paramref name="first"/>.. (<paramref name="blockCount"/> of them) through
    /// the generic widening, any element width.</summary>
    private void DequantizeGeneric(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int first, int blockCount, Span<float> destination)
    {
        int bytesPerBlock = 4 * _bits;
        var k = new Constants(this);
        ReadOnlySpan<float> scaleTable = ScaleFormat.E8M0.DecodeTable;
        ReadOnlySpan<float> table = _element.DecodeTable;
        scoped Span<byte> padded = stackalloc byte[PaddedBytes];
        scoped Span<byte> codes = stackalloc byte[MxCodec.MxBlockSize];
        ref float d0 = ref MemoryMarshal.GetReference(destination);
        for (int j = first; j < first + blockCount; j++)
        {
            scoped ref byte c0 = ref Readable(blocks, j, bytesPerBlock, padded);
            Vector256<int> found = Vector256<int>.Zero;
            WidenBlock(ref c0, k, ref found, out var w0, out var w1, out var w2, out var w3);
            float scale = scaleTable[scales[j]];
            ref float d = ref Unsafe.Add(ref d0, j * 32);
            if (_integer)
            {
                // An integer's value is its code × the step 2^−(n−2): exact, so × the scale rounds as the table's value does.
                var step = Vector256.Create(_factor);
                (w0, w1, w2, w3) = (w0 * step, w1 * step, w2 * step, w3 * step);
            }
            else if (found != Vector256<int>.Zero)
            {
                BlockPacking.Unpack(blocks.Slice(j * bytesPerBlock, bytesPerBlock), _bits, codes);
                for (int i = 0; i < MxCodec.MxBlockSize; i++) Unsafe.Add(ref d, i) = table[codes[i]] * scale;
                continue;
            }
            var sv = Vector256.Create(scale);
            (w0 * sv).StoreUnsafe(ref d);
            (w1 * sv).StoreUnsafe(ref d, 8);
            (w2 * sv).StoreUnsafe(ref d, 16);
            (w3 * sv).StoreUnsafe(ref d, 24);
        }
    }

    /// <summary>Whether <see cref="Dequantize"/> runs on this CPU (AVX2).</summary>
    public static bool CanDequantize => Avx2.IsSupported;

    /// <summary>The block by the format's table (the reference's values), for blocks with a code the widening does not give.</summary>
    private float TableBlock(ReadOnlySpan<byte> packed, ReadOnlySpan<float> x)
    {
        Span<byte> codes = stackalloc byte[MxCodec.MxBlockSize];
        BlockPacking.Unpack(packed, _bits, codes);
        float sum = 0;
        for (int i = 0; i < MxCodec.MxBlockSize; i++) sum += _element.Decode(codes[i]) * x[i];
        return sum;
    }
}
