using System.Buffers;
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
    private readonly int _shift;                     // k
    private readonly int _bias;                      // the largest |value|·2^k

    private Mx6IntDot(sbyte[] magnitudes, int shift)
    {
        _magnitudes = magnitudes;
        _shift = shift;
        _step = MathF.ScaleB(1f, -shift);
        _bias = magnitudes.Max();
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
            if (fits) return new Mx6IntDot(magnitudes, k);
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
        ReadOnlySpan<float> scaleTable = ScaleFormat.E8M0.DecodeTable;
        fixed (byte* b0 = blocks)
        fixed (byte* s0 = scales)
        fixed (sbyte* q0 = q)
        fixed (float* xs = qScales)
        fixed (float* table = scaleTable)
        {
            for (int r = 0; r < rowCount; r++)
            {
                Vector256<float> even = Vector256<float>.Zero, odd = Vector256<float>.Zero;
                byte* row = b0 + (long)r * nb * BlockBytes;
                byte* rowScales = s0 + (long)r * nb;
                for (int j = 0; j < nb; j++)
                {
                    byte* block = row + j * BlockBytes;
                    Sse.Prefetch0(block + 512);
                    var codes = Codes(block);
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

    /// <summary>The largest |value|·2^k: the lanes kernel adds it to every value so that they are unsigned (0..2·bias).</summary>
    public int Bias => _bias;

    /// <summary>
    /// y[v·yStride + r] = row r · vector v for several vectors (a prompt window, a token-factory step) on
    /// <see cref="NibbleLanes"/>: each group of up to sixteen rows unpacked once — per row and block the 32 codes split
    /// as in <see cref="DotRows"/>, looked up and signed (|value|·2^k, <c>vpsignb</c> by the code's sign bit), plus
    /// <see cref="Bias"/> so they are unsigned, then an 8 × 8 transpose of 32-bit words puts each four values of eight
    /// rows in one register — and multiplied with every vector by the lanes' shared loop (<see cref="NibbleLanes.Multiply"/>),
    /// each block's E8M0 scale × 2^−k applied once per eight rows. The integers are exact; the scalar twin
    /// <see cref="LanesRowReference"/> gives the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // a prompt pass alone may call it too rarely to leave tier 0
    public void DotRowsLanes(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, int vectors,
        ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        int nb = cols / 32;
        if (cols % 32 != 0 || vectors < 1 || vectors > NibbleLanes.MaxVectors || blocks.Length < (long)rowCount * nb * BlockBytes
            || scales.Length < (long)rowCount * nb || x.Length < (long)vectors * cols || y.Length < (long)(vectors - 1) * yStride + rowCount)
            throw new ArgumentException("spans shorter than the rows");
        var a = NibbleLanes.Scratch;
        a.Set(x, vectors, cols, evensThenOdds: false, _bias);
        var unpacked = NibbleLanes.Unpacked(nb);
        const int Lanes = NibbleLanes.Lanes, GroupRows = NibbleLanes.GroupRows;
        float[] factors = ArrayPool<float>.Shared.Rent(nb * GroupRows);
        ReadOnlySpan<float> scaleTable = ScaleFormat.E8M0.DecodeTable;
        nint rowBytes = (nint)nb * BlockBytes;
        try
        {
            fixed (byte* b0 = blocks)
            fixed (byte* s0 = scales)
            fixed (float* table = scaleTable)
            fixed (float* f0 = factors)
            fixed (float* y0 = y)
            {
                for (int r = 0; r < rowCount; r += GroupRows)
                {
                    int n = Math.Min(GroupRows, rowCount - r);
                    var arithmetic = NibbleLanes.For(NibbleLanes.Best, n, 2 * _bias);
                    for (int half = 0; half * Lanes < n; half++)
                    {
                        int rows = Math.Min(Lanes, n - half * Lanes), first = r + half * Lanes;
                        MxDot.LaneScales(s0 + (nint)first * nb, nb, rows, table, f0 + half * nb * Lanes, _shift);
                        var start = NibbleLanes.Eight(unpacked, nb, half, arithmetic, out int step);
                        Unpack(b0 + first * rowBytes, rowBytes, rows, nb, start, step);
                    }
                    NibbleLanes.Multiply(unpacked, n, nb, f0, a, 2 * _bias, y0 + r, yStride, arithmetic,
                        n == GroupRows ? b0 + (r + n) * rowBytes : null, n == GroupRows ? n * rowBytes : 0);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(factors);
        }
    }

    /// <summary>Up to eight rows' codes (missing rows read row 0) as unsigned values bias + value·2^k in the lanes'
    /// layout: block j's word m (elements 4m..4m+3 of each row, one row per 32-bit lane) at <c>unpacked[step·(8j + 2m)]</c>
    /// for m &lt; 4 and elements 16 + 4(m − 4).. at <c>[step·(8j + 2(m − 4) + 1)]</c> — the order of the activations in natural
    /// order (<see cref="NibbleLanes.Vectors.Set"/> without evens then odds); <paramref name="step"/> is
    /// <see cref="NibbleLanes.Eight"/>'s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Unpack(byte* codes, nint rowStride, int rowCount, int blocks, Vector256<byte>* unpacked, int step)
    {
        byte* p0 = codes, p1 = Row(codes, rowStride, rowCount, 1), p2 = Row(codes, rowStride, rowCount, 2), p3 = Row(codes, rowStride, rowCount, 3);
        byte* p4 = Row(codes, rowStride, rowCount, 4), p5 = Row(codes, rowStride, rowCount, 5), p6 = Row(codes, rowStride, rowCount, 6), p7 = Row(codes, rowStride, rowCount, 7);
        var bias = Vector256.Create((byte)_bias);
        for (int j = 0; j < blocks; j++)
        {
            nint o = (nint)j * BlockBytes;
            var r0 = Values(p0 + o, bias).AsInt32();
            var r1 = Values(p1 + o, bias).AsInt32();
            var r2 = Values(p2 + o, bias).AsInt32();
            var r3 = Values(p3 + o, bias).AsInt32();
            var r4 = Values(p4 + o, bias).AsInt32();
            var r5 = Values(p5 + o, bias).AsInt32();
            var r6 = Values(p6 + o, bias).AsInt32();
            var r7 = Values(p7 + o, bias).AsInt32();
            // 8 × 8 transpose of words: within each 128-bit lane rows 0–3 (4–7) of words 4L..4L+3, then the lanes crossed.
            var t0 = Avx2.UnpackLow(r0, r1).AsInt64();
            var t1 = Avx2.UnpackHigh(r0, r1).AsInt64();
            var t2 = Avx2.UnpackLow(r2, r3).AsInt64();
            var t3 = Avx2.UnpackHigh(r2, r3).AsInt64();
            var t4 = Avx2.UnpackLow(r4, r5).AsInt64();
            var t5 = Avx2.UnpackHigh(r4, r5).AsInt64();
            var t6 = Avx2.UnpackLow(r6, r7).AsInt64();
            var t7 = Avx2.UnpackHigh(r6, r7).AsInt64();
            var u0 = Avx2.UnpackLow(t0, t2).AsByte();    // word 0 (and 4) of rows 0–3
            var u1 = Avx2.UnpackHigh(t0, t2).AsByte();   // word 1 (5)
            var u2 = Avx2.UnpackLow(t1, t3).AsByte();    // word 2 (6)
            var u3 = Avx2.UnpackHigh(t1, t3).AsByte();   // word 3 (7)
            var u4 = Avx2.UnpackLow(t4, t6).AsByte();    // the same of rows 4–7
            var u5 = Avx2.UnpackHigh(t4, t6).AsByte();
            var u6 = Avx2.UnpackLow(t5, t7).AsByte();
            var u7 = Avx2.UnpackHigh(t5, t7).AsByte();
            Vector256<byte>* w = unpacked + (nint)j * 8 * step;
            w[0] = Avx2.Permute2x128(u0, u4, 0x20);
            w[2 * step] = Avx2.Permute2x128(u1, u5, 0x20);
            w[4 * step] = Avx2.Permute2x128(u2, u6, 0x20);
            w[6 * step] = Avx2.Permute2x128(u3, u7, 0x20);
            w[step] = Avx2.Permute2x128(u0, u4, 0x31);
            w[3 * step] = Avx2.Permute2x128(u1, u5, 0x31);
            w[5 * step] = Avx2.Permute2x128(u2, u6, 0x31);
            w[7 * step] = Avx2.Permute2x128(u3, u7, 0x31);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* Row(byte* codes, nint rowStride, int rowCount, int i) => codes + NibbleLanes.SourceRow(i, rowCount) * rowStride;

    /// <summary>One block's 32 values bias + value·2^k in order, one per byte.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Vector256<byte> Values(byte* block, Vector256<byte> bias)
    {
        var codes = Codes(block);
        // The sign (bit 5) to bit 7 by a 16-bit shift (codes are below 64: nothing carries into the next byte); a zero
        // code has magnitude 0, so vpsignb's zeroing does not matter.
        return Avx2.Add(Avx2.Sign(Magnitudes(codes).AsSByte(), Avx2.ShiftLeftLogical(codes.AsInt16(), 2).AsSByte()).AsByte(), bias);
    }

    /// <summary>The scalar twin of <see cref="DotRowsLanes"/> for one row and one vector (tests): per block the same
    /// integer (the activations' bias term plus each unsigned value × its activation byte), then the same float
    /// multiply-add, block after block.</summary>
    public float LanesRowReference(ReadOnlySpan<byte> row, ReadOnlySpan<byte> rowScales, NibbleLanes.Vectors a, int vector)
    {
        int nb = a.Blocks;
        float total = 0;
        ReadOnlySpan<sbyte> q = System.Runtime.InteropServices.MemoryMarshal.Cast<int, sbyte>(a.Q.AsSpan());
        Span<byte> codes = stackalloc byte[32];
        for (int j = 0; j < nb; j++)
        {
            int sum = a.Bias[vector * nb + j];
            BlockPacking.Unpack(row.Slice(j * BlockBytes, BlockBytes), 6, codes);
            for (int i = 0; i < 32; i++)
            {
                // Element i's activation byte: word 2m holds elements 4m.., word 2m + 1 elements 16 + 4m...
                int m = i < 16 ? 2 * (i / 4) : 2 * ((i - 16) / 4) + 1;
                sum += (_bias + SignedValue(codes[i])) * q[((vector * nb + j) * 8 + m) * 4 + i % 4];
            }
            total = MathF.FusedMultiplyAdd(sum, ScaleFormat.E8M0.DecodeTable[rowScales[j]] * _step * a.Scales[vector * nb + j], total);
        }
        return total;
    }

    /// <summary>A code's value ×2^k, signed (the scalar twins).</summary>
    private int SignedValue(int code) => _magnitudes[code & 31] * ((code & 32) != 0 ? -1 : 1);

    /// <summary>A block's 32 codes, one per byte in order, from its 24 bytes loaded as bytes 0–15 | 8–23 (never past its
    /// end): each three bytes (four codes, the first in the low bits) to a 32-bit lane, its 24 bits split into two
    /// 12-bit halves (one per 16-bit word) and each half into two 6-bit bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Codes(byte* block)
    {
        var groups = Vector256.Create((byte)0, 1, 2, 0x80, 3, 4, 5, 0x80, 6, 7, 8, 0x80, 9, 10, 11, 0x80,
            4, 5, 6, 0x80, 7, 8, 9, 0x80, 10, 11, 12, 0x80, 13, 14, 15, 0x80);
        var v = Avx2.Shuffle(Vector256.Create(Vector128.Load(block), Vector128.Load(block + 8)), groups).AsInt32();
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
        Span<byte> codes = stackalloc byte[32];
        for (int j = 0; j < nb; j++)
        {
            long sum = 0;
            BlockPacking.Unpack(row.Slice(j * BlockBytes, BlockBytes), 6, codes);
            for (int i = 0; i < 32; i++) sum += SignedValue(codes[i]) * q[j * 32 + i];
            total += (double)ScaleFormat.E8M0.DecodeTable[rowScales[j]] * _step * qScales[j] * sum;
        }
        return total;
    }
}
