using System.Buffers;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Nanoscale.Formats.Mx;

namespace Nanoscale.Formats.Nv;

/// <summary>
/// NVFP4's generation-step product in integer arithmetic (<see cref="NibbleDot"/>, as MXFP4's): two 16-element blocks
/// are one 16-byte group of codes, looked up as unsigned doubled E2M1 (+12) and multiplied with int8 activations per 32;
/// each 16-element block keeps its own factor s_b·s_t/2·d_x (or s_b/g/2·d_x in the <c>global=divisor</c> form),
/// applied to the int32 lanes that hold its elements (<see cref="NibbleDot.OneTableHalfBlocks"/>). The factors of a
/// row are computed first, eight at a time (UE4M3 codes gathered from the scale table).
/// </summary>
/// <remarks>Rows whose length is not a multiple of 32 keep the float-lookup kernel. Exact in the weights; the
/// activations carry int8 rounding (the bound of <c>FusedDotTests</c>).</remarks>
internal static unsafe class NvFp4Dot
{
    private static readonly (sbyte[] Table, int Bias) Biased = MxDot.Biased(MxDot.DoubledTable(ElementFormat.E2M1)!)!.Value;

    public static bool Applies(int cols) => cols % 32 == 0 && NibbleDot.IsSupported;

    /// <summary>y[r] = row r · x (spans already checked; <see cref="Applies"/> true).</summary>
    public static void DotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, float tensorScale, bool divisor,
        int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        int groups = cols / 32, blocks16 = cols / 16;
        var a = NibbleDot.Scratch;
        a.Set(x[..cols], evensThenOdds: true, Biased.Bias, halves: true);
        var table = NibbleDot.Broadcast(Biased.Table);
        float[] c = ArrayPool<float>.Shared.Rent(blocks16 + 8);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (byte* s0 = scales)
            fixed (float* c0 = c)
            fixed (float* xs = a.HalfScales)
            fixed (float* ue4m3 = ScaleFormat.UE4M3.DecodeTable)
            {
                var factors = new RowFactors(s0, blocks16, ue4m3, tensorScale, divisor, xs, c0);
                NibbleDot.Rows<NibbleDot.OneTableHalfBlocks, RowFactors>(b0, (nint)blocks16 * 8, 16, rowCount, groups, a, table, null, Biased.Bias, ref factors, y);
            }
        }
        finally { ArrayPool<float>.Shared.Return(c); }
    }

    /// <summary>Each row's factors for <see cref="NibbleDot.Rows{TMode, TFactors}"/> (<see cref="Factors"/>).</summary>
    private readonly struct RowFactors(byte* scales, int blocks16, float* ue4m3, float tensorScale, bool divisor, float* xs, float* c) : NibbleDot.IRowFactors
    {
        [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
        public float* Prepare(int row, out int* pairIndex)
        {
            pairIndex = null;
            Factors(scales + (nint)row * blocks16, blocks16, ue4m3, tensorScale, divisor, xs, c);
            return c;
        }
    }

    /// <summary><see cref="DotRows"/> for several activation vectors (<c>y[v·yStride + r]</c>), each row unpacked once.</summary>
    public static void DotRowsMany(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, float tensorScale, bool divisor,
        int rowCount, int cols, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        int groups = cols / 32, blocks16 = cols / 16;
        if (x.Length < vectors * cols || y.Length < (vectors - 1) * yStride + rowCount || vectors > NibbleDot.MaxVectors)
            throw new ArgumentException("spans shorter than the rows");
        var sets = NibbleDot.QuantizeMany(x, vectors, cols, evensThenOdds: true, Biased.Bias, halves: true);
        var table = NibbleDot.Broadcast(Biased.Table);
        float[] c = ArrayPool<float>.Shared.Rent(blocks16 + 8);
        float* ones = NibbleDot.Ones(blocks16 + 8);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (byte* s0 = scales)
            fixed (float* c0 = c)
            fixed (float* ue4m3 = ScaleFormat.UE4M3.DecodeTable)
            fixed (float* y0 = y)
            {
                for (int r = 0; r < rowCount; r++)
                {
                    Factors(s0 + (nint)r * blocks16, blocks16, ue4m3, tensorScale, divisor, ones, c0);
                    NibbleDot.RowMany<NibbleDot.OneTableHalfBlocks>(b0 + (nint)r * blocks16 * 8, 16, groups, c0, sets, vectors, table,
                        null, null, Biased.Bias, y0 + r, yStride);
                }
            }
        }
        finally { ArrayPool<float>.Shared.Return(c); }
    }

    /// <summary>
    /// <see cref="DotRowsMany"/> with eight rows in a register's lanes (<see cref="NibbleLanes"/>, its half-block shape:
    /// each block of 32 has two weight factors, one per 16): each row's factors from <see cref="Factors"/>, placed eight
    /// rows per half block; any number of vectors.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public static void DotRowsLanes(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, float tensorScale, bool divisor,
        int rowCount, int cols, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        const int Lanes = NibbleLanes.Lanes;
        int groups = cols / 32, blocks16 = cols / 16;
        if (x.Length < vectors * cols || y.Length < (vectors - 1) * yStride + rowCount
            || blocks.Length < (long)rowCount * groups * 16 || scales.Length < rowCount * blocks16)
            throw new ArgumentException("spans shorter than the rows");
        var a = NibbleLanes.Scratch;
        a.Set(x, vectors, cols, evensThenOdds: true, Biased.Bias, halves: true);
        var table = new NibbleLanes.Tables(NibbleDot.Broadcast(Biased.Table));
        var unpacked = NibbleLanes.Unpacked(groups);
        float[] factors = ArrayPool<float>.Shared.Rent(blocks16 * NibbleLanes.GroupRows);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (byte* s0 = scales)
            fixed (float* f0 = factors)
            fixed (float* ue4m3 = ScaleFormat.UE4M3.DecodeTable)
            fixed (float* y0 = y)
            {
                for (int r = 0; r < rowCount; r += NibbleLanes.GroupRows)
                {
                    int n = Math.Min(NibbleLanes.GroupRows, rowCount - r);
                    NibbleLanes.Prefetch(s0 + (nint)(r + NibbleLanes.GroupRows) * blocks16, NibbleLanes.GroupRows * blocks16); // the next group's scales, as Group does its codes
                    // Each eight rows' factors in the lanes' layout, the second eight's after the first's.
                    for (int half = 0; half * Lanes < n; half++)
                        LaneFactors(s0 + (nint)(r + half * Lanes) * blocks16, blocks16, Math.Min(Lanes, n - half * Lanes), ue4m3, tensorScale, divisor,
                            f0 + half * blocks16 * Lanes);
                    NibbleLanes.Group(b0 + (nint)r * groups * 16, groups * 16, n, groups, f0, a, table, unpacked, y0 + r, yStride);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(factors);
        }
    }

    /// <summary>
    /// <c>f[8k + i] = BlockScale(UE4M3(codes[i·count + k]), s_t) / 2</c> for up to eight rows (<paramref name="rows"/>;
    /// missing rows repeat row 0), the lanes' layout: four 16-blocks of eight rows per gather of 32-bit words, each byte
    /// decoded for eight rows at once (<see cref="DecodeScales"/>), then the same float operations as
    /// <see cref="Factors"/> (its activation scales are ones here, a multiply that changes nothing), so the same floats as
    /// its per-row factors placed lane by lane
    /// (which cost a fifth of a 16-sequence NVFP4 product: <c>dot-kernels nvfp4 1536 576 1 16</c>). Fewer than four
    /// blocks left at a row's end: those through <see cref="Factors"/>'s scalar formula.
    /// </summary>
    internal static void LaneFactors(byte* codes, int count, int rows, float* ue4m3, float tensorScale, bool divisor, float* f)
    {
        const int Lanes = NibbleLanes.Lanes;
        var offsets = NibbleLanes.RowOffsets(rows, count);
        var st = Vector256.Create(tensorScale);
        var half = Vector256.Create(0.5f);
        var low = Vector256.Create(0xFF);
        int k = 0;
        if (Avx2.IsSupported)
            for (; k + 4 <= count; k += 4)
            {
                var words = Avx2.GatherVector256((int*)(codes + k), offsets, 1);
                LaneFactor(words & low, st, half, divisor, f + k * Lanes);
                LaneFactor(Avx2.ShiftRightLogical(words, 8) & low, st, half, divisor, f + (k + 1) * Lanes);
                LaneFactor(Avx2.ShiftRightLogical(words, 16) & low, st, half, divisor, f + (k + 2) * Lanes);
                LaneFactor(Avx2.ShiftRightLogical(words, 24), st, half, divisor, f + (k + 3) * Lanes);
            }
        for (; k < count; k++)
            for (int i = 0; i < Lanes; i++)
                f[k * Lanes + i] = NvFp4Codec.BlockScale(ue4m3[codes[NibbleLanes.SourceRow(i, rows) * count + k]], tensorScale, divisor) * 0.5f;
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void LaneFactor(Vector256<int> codes, Vector256<float> st, Vector256<float> half, bool divisor, float* f)
    {
        var sb = DecodeScales(codes);
        ((divisor ? sb / st : sb * st) * half).Store(f);
    }

    /// <summary>
    /// Eight UE4M3 codes (as int32) to their values by arithmetic instead of a gather from the 256-entry table (the
    /// gather made this per-row work cost as much as the 4-bit product itself): code = E·8 + M; E &gt; 0: the float whose
    /// bits are (code + 120·8) &lt;&lt; 20 (exponent E − 7 + 127, M its top three mantissa bits); E = 0: M · 2^−9; 0x7F
    /// and the codes above it (not UE4M3) are NaN. The same floats as <see cref="ScaleFormat.DecodeTable"/> for all
    /// 256 codes (<c>FusedDotTests.NvFp4ArithmeticScaleDecodeEqualsTheTable</c>).
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> DecodeScales(Vector256<int> codes)
    {
        var normal = NormalScales(codes);
        var subnormal = Avx.ConvertToVector256Single(codes & Vector256.Create(7)) * Vector256.Create(1f / 512);
        var value = Vector256.ConditionalSelect(Vector256.Equals(codes & Vector256.Create(0x78), Vector256<int>.Zero).AsSingle(), subnormal, normal);
        return Vector256.ConditionalSelect(Vector256.GreaterThan(codes, Vector256.Create(0x7E)).AsSingle(), Vector256.Create(float.NaN), value);
    }

    /// <summary>c[k] = BlockScale(UE4M3(code_k), s_t) / 2 · xs[k] for a row's <paramref name="count"/> 16-blocks
    /// (<paramref name="xs"/>: each 16-block's activation scale, <see cref="NibbleDot.Activations.HalfScales"/>, or ones).
    /// Each 32 codes are checked at once as bytes: a run of normal codes (all but subnormals and NaN: real and random
    /// weights alike) decodes by the add and shift alone, the same floats as <see cref="DecodeScales"/>.</summary>
    private static void Factors(byte* codes, int count, float* ue4m3, float tensorScale, bool divisor, float* xs, float* c)
    {
        int k = 0;
        var st = Vector256.Create(tensorScale);
        var half = Vector256.Create(0.5f);
        var eight = Vector256.Create((byte)8);
        var normalSpan = Vector256.Create((byte)(0x7E - 8));
        for (; k + 8 <= count; k += 8)
        {
            if (k + 32 <= count && Vector256.LessThanOrEqualAll(Vector256.Load(codes + k) - eight, normalSpan))
            {
                for (int end = k + 32; k < end; k += 8)
                    Store(NormalScales(Avx2.ConvertToVector256Int32(codes + k)), st, half, divisor, xs + k, c + k);
                k -= 8;
                continue;
            }
            Store(DecodeScales(Avx2.ConvertToVector256Int32(codes + k)), st, half, divisor, xs + k, c + k);
        }
        for (; k < count; k++) c[k] = NvFp4Codec.BlockScale(ue4m3[codes[k]], tensorScale, divisor) * 0.5f * xs[k];
    }

    /// <summary>Normal UE4M3 codes (8 to 0x7E) as floats: the code's exponent and mantissa under an f32's, rebiased.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> NormalScales(Vector256<int> codes) => Avx2.ShiftLeftLogical(codes + Vector256.Create(120 << 3), 20).AsSingle();

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector256<float> sb, Vector256<float> st, Vector256<float> half, bool divisor, float* xs, float* c) =>
        ((divisor ? sb / st : sb * st) * half * Vector256.Load(xs)).Store(c);
}
