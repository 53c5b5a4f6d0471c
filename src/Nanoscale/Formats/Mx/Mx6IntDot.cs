using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats.Mx;

/// <summary>
/// The one-token product on 6-bit MX codes in integer arithmetic, where every value of the element times one power of
/// two 2^k is an integer of magnitude at most 127 — MXFP6's E2M3 (its values are multiples of 1/8 up to 7.5, so ×8 they
/// are −60..60), not E3M2 (1/16 steps up to 28: 448). The activations are int8 per 32 (<see cref="Int8Dot"/>, as
/// MXINT8's and llama.cpp's Q8_0 kernels quantize them); per block of 32 codes (24 bytes): one shuffle puts each three
/// bytes (four codes) in a 32-bit lane, four shifts and masks leave one code per byte, two <c>vpshufb</c> and a blend
/// look up |value|·2^k from its five magnitude bits, the sign bit (moved to bit 7 by a 16-bit shift) signs the
/// activations (<c>vpsignb</c>), and one <c>vpmaddubsw</c> + <c>vpmaddwd</c> (or <c>vpdpbusd</c>) sums the block; the
/// E8M0 scale × 2^−k × the activation scale once per block. About 20 operations per 32 weights where widening each code
/// to a float takes ~70 (<see cref="MxFloatDot"/>, which the other 6-bit elements keep).
/// </summary>
/// <remarks>The integers are exact; the result differs from decoding by the int8 rounding of the activations and float
/// summation order (<c>FusedDotTests</c>: the int8 bound, and the scalar twin <see cref="RowReference"/>).</remarks>
internal sealed unsafe class Mx6IntDot
{
    private const int BlockBytes = 24;

    private readonly Vector256<sbyte> _low, _high;   // |value|·2^k for magnitudes 0–15 and 16–31, in both 128-bit lanes
    private readonly sbyte[] _magnitudes;            // the same 32 entries (the scalar twin)
    private readonly float _step;                    // 2^−k

    private Mx6IntDot(sbyte[] magnitudes, float step)
    {
        _magnitudes = magnitudes;
        _step = step;
        _low = Vector256.Create(Vector128.Create(magnitudes.AsSpan(0, 16)));
        _high = Vector256.Create(Vector128.Create(magnitudes.AsSpan(16, 16)));
    }

    /// <summary>The kernel for <paramref name="element"/>, or null: not 6 bits, no AVX2, a code whose value is not
    /// finite, not sign-magnitude with the sign in bit 5, or no power of two that makes every value an integer ≤ 127.</summary>
    public static Mx6IntDot? For(ElementFormat element)
    {
        if (element.Bits != 6 || !MxDot.IsSupported) return null;
        for (int k = 0; k <= 7; k++)
        {
            float scale = 1 << k;
            var magnitudes = new sbyte[32];
            bool fits = true;
            for (int code = 0; code < 32 && fits; code++)
            {
                float value = element.Decode(code) * scale, negative = element.Decode(code | 32) * scale;
                fits = float.IsFinite(value) && value >= 0 && value <= 127 && value == MathF.Round(value) && -negative == value;
                if (fits) magnitudes[code] = (sbyte)value;
            }
            if (fits) return new Mx6IntDot(magnitudes, 1f / scale);
        }
        return null;
    }

    /// <summary>y[r] = row r · x over rows of whole 32-code blocks (24 bytes each; spans already checked).</summary>
    public void DotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        int nb = cols / 32;
        if (blocks.Length < (long)rowCount * nb * BlockBytes || scales.Length < (long)rowCount * nb || x.Length < cols || y.Length < rowCount)
            throw new ArgumentException("spans shorter than the rows");
        var (q, qScales) = Int8Dot.Quantized(x[..cols]);
        var ones = Vector256.Create((short)1);
        var groups = Vector256.Create((byte)0, 1, 2, 0x80, 3, 4, 5, 0x80, 6, 7, 8, 0x80, 9, 10, 11, 0x80,
            0, 1, 2, 0x80, 3, 4, 5, 0x80, 6, 7, 8, 0x80, 9, 10, 11, 0x80);
        Span<byte> last = stackalloc byte[32];
        ReadOnlySpan<float> scaleTable = ScaleFormat.E8M0.DecodeTable;
        fixed (byte* b0 = blocks)
        fixed (byte* s0 = scales)
        fixed (sbyte* q0 = q)
        fixed (float* xs = qScales)
        fixed (float* table = scaleTable)
        fixed (byte* tail = last)
        {
            long total = (long)rowCount * nb * BlockBytes;
            for (int r = 0; r < rowCount; r++)
            {
                Vector256<float> even = Vector256<float>.Zero, odd = Vector256<float>.Zero;
                byte* row = b0 + (long)r * nb * BlockBytes;
                byte* rowScales = s0 + (long)r * nb;
                for (int j = 0; j < nb; j++)
                {
                    byte* block = row + j * BlockBytes;
                    Sse.Prefetch0(block + 512);
                    // The second half is read from byte 12 on, 16 bytes: past the block's end by four, so the span's
                    // last block is copied out first.
                    if (block + 28 > b0 + total)
                    {
                        new ReadOnlySpan<byte>(block, BlockBytes).CopyTo(last);
                        block = tail;
                    }
                    var codes = Codes(Vector256.Create(Vector128.Load(block), Vector128.Load(block + 12)), groups);
                    var sums = Avx.ConvertToVector256Single(Int8Dot.BlockProducts(Magnitudes(codes),
                        Avx2.Sign(Vector256.Load(q0 + j * 32), Avx2.ShiftLeftLogical(codes.AsInt16(), 2).AsSByte()), AvxVnni.IsSupported, ones));
                    var factor = Vector256.Create(table[rowScales[j]] * _step * xs[j]);
                    if ((j & 1) == 0) even = Fma.MultiplyAdd(sums, factor, even);
                    else odd = Fma.MultiplyAdd(sums, factor, odd);
                }
                y[r] = Vector256.Sum(even + odd);
            }
        }
    }

    /// <summary>32 codes, one per byte in order, from 24 packed bytes loaded as bytes 0–15 | 12–27: each three bytes
    /// (four codes, the first in the low bits) to a 32-bit lane, its 24 bits split into two 12-bit halves (one per
    /// 16-bit word) and each half into two 6-bit bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Codes(Vector256<byte> packed, Vector256<byte> groups)
    {
        var v = Avx2.Shuffle(packed, groups).AsInt32();
        var words = (v & Vector256.Create(0xFFF)) | Avx2.ShiftLeftLogical(Avx2.ShiftRightLogical(v, 12) & Vector256.Create(0xFFF), 16);
        return ((words & Vector256.Create(0x003F003F)) | (Avx2.ShiftLeftLogical(words, 2) & Vector256.Create(0x3F003F00))).AsByte();
    }

    /// <summary>|value|·2^k of each code from its five magnitude bits: <c>vpshufb</c> reads bits 0–3 (and 7, clear),
    /// the blend takes the high table where bit 4 is set (moved to bit 7 by a 16-bit shift; what it carries into the
    /// next byte stays below that byte's bit 7).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Vector256<byte> Magnitudes(Vector256<byte> codes) =>
        Avx2.BlendVariable(Avx2.Shuffle(_low, codes.AsSByte()), Avx2.Shuffle(_high, codes.AsSByte()),
            Avx2.ShiftLeftLogical(codes.AsInt16(), 3).AsSByte()).AsByte();

    /// <summary>The scalar twin for one row (tests): the same integers per block (unpacked code by code), the same
    /// factors, summed in double.</summary>
    public double RowReference(ReadOnlySpan<byte> row, ReadOnlySpan<byte> rowScales, ReadOnlySpan<float> x)
    {
        int nb = x.Length / 32;
        var q = new sbyte[x.Length];
        var qScales = new float[nb];
        Int8Dot.QuantizeActivations(x, q, qScales);
        double total = 0;
        for (int j = 0; j < nb; j++)
        {
            long sum = 0;
            for (int i = 0; i < 32; i++)
            {
                int bit = j * BlockBytes * 8 + 6 * i;
                int code = ((row[bit / 8] | (bit / 8 + 1 < row.Length ? row[bit / 8 + 1] << 8 : 0)) >> (bit % 8)) & 63;
                sum += _magnitudes[code & 31] * ((code & 32) != 0 ? -1 : 1) * q[j * 32 + i];
            }
            total += (double)ScaleFormat.E8M0.DecodeTable[rowScales[j]] * _step * qScales[j] * sum;
        }
        return total;
    }
}
