using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats.Mx;

/// <summary>
/// One token's product on MXFP4 codes in integer arithmetic, as llama.cpp's <c>vec_dot</c> kernels do it: the
/// activations are quantized once per product to int8 per 32-element block (scale amax/127, round to nearest), the
/// E2M1 codes are looked up as unsigned int8 (value × 2 + 12: 0 … 24, with vpshufb), and each block's 32 products are
/// summed in integers (vpmaddubsw, vpmaddwd) less 12 × the block's activation sum; the two scales are applied once per
/// block. The loop itself is <see cref="NibbleDot.Row{TMode}"/>, shared with ggml's 4-bit blocks and NxFP4.
/// </summary>
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

    /// <summary>A doubled table made unsigned for <see cref="NibbleDot"/>: each value plus the bias −min, or null when
    /// the values span more than 64 (the one-table kernel adds two products in int16).</summary>
    public static (sbyte[] Table, int Bias)? Biased(sbyte[] doubled)
    {
        int bias = -Math.Min(0, (int)doubled.Min());
        if (doubled.Max() + bias > 64) return null;
        return ([.. doubled.Select(v => (sbyte)(v + bias))], bias);
    }

    /// <summary>
    /// y[r] = Σ_j scale_j/2 · d_j · Σ_i table[code] · q_i over the rows, two blocks a step: the activations quantized
    /// here (evens then odds, as the codes are packed), each row's block scales × activation scales gathered first, then
    /// the products
    /// (<see cref="NibbleDot.Row{TMode}"/>).
    /// </summary>
    public static unsafe void DotRows((sbyte[] Table, int Bias) biased, ReadOnlySpan<float> scaleTable, ReadOnlySpan<byte> blocks,
        ReadOnlySpan<byte> scales, int rowCount, int blocksPerRow, ReadOnlySpan<float> x, Span<float> y)
    {
        if (blocks.Length < (long)rowCount * blocksPerRow * 16 || scales.Length < rowCount * blocksPerRow
            || x.Length < blocksPerRow * 32 || y.Length < rowCount)
            throw new ArgumentException("spans shorter than the rows");
        var a = NibbleDot.Scratch;
        a.Set(x[..(blocksPerRow * 32)], evensThenOdds: true, biased.Bias);
        var table = NibbleDot.Broadcast(biased.Table);
        float[] c = ArrayPool<float>.Shared.Rent(blocksPerRow);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (byte* s0 = scales)
            fixed (float* t0 = scaleTable)
            fixed (float* c0 = c)
            fixed (float* xs = a.Scales)
            {
                var factors = new RowFactors(s0, blocksPerRow, t0, xs, c0);
                NibbleDot.Rows<NibbleDot.OneTable, RowFactors>(b0, (nint)blocksPerRow * 16, 16, rowCount, blocksPerRow, a, table, null, biased.Bias, ref factors, y);
            }
        }
        finally { ArrayPool<float>.Shared.Return(c); }
    }

    /// <summary>Each row's factors for <see cref="NibbleDot.Rows{TMode, TFactors}"/>: its E8M0 scales halved × the
    /// activation scales (<see cref="HalfScales"/>).</summary>
    private readonly unsafe struct RowFactors(byte* scales, int blocksPerRow, float* table, float* xs, float* c) : NibbleDot.IRowFactors
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* Prepare(int row, out int* pairIndex)
        {
            pairIndex = null;
            HalfScales(scales + (nint)row * blocksPerRow, table, xs, blocksPerRow, c);
            return c;
        }
    }

    /// <summary><see cref="DotRows"/> for several activation vectors (<c>y[v·yStride + r]</c>): each row's codes unpacked
    /// once for all of them (<see cref="NibbleDot.RowMany{TMode}"/>).</summary>
    public static unsafe void DotRowsMany((sbyte[] Table, int Bias) biased, ReadOnlySpan<float> scaleTable, ReadOnlySpan<byte> blocks,
        ReadOnlySpan<byte> scales, int rowCount, int blocksPerRow, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        int cols = blocksPerRow * 32;
        if (blocks.Length < (long)rowCount * blocksPerRow * 16 || scales.Length < rowCount * blocksPerRow
            || x.Length < vectors * cols || y.Length < (vectors - 1) * yStride + rowCount || vectors > NibbleDot.MaxVectors)
            throw new ArgumentException("spans shorter than the rows");
        var sets = NibbleDot.QuantizeMany(x, vectors, cols, evensThenOdds: true, biased.Bias);
        var table = NibbleDot.Broadcast(biased.Table);
        float[] c = ArrayPool<float>.Shared.Rent(blocksPerRow);
        float* ones = NibbleDot.Ones(blocksPerRow);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (byte* s0 = scales)
            fixed (float* t0 = scaleTable)
            fixed (float* c0 = c)
            fixed (float* y0 = y)
            {
                for (int r = 0; r < rowCount; r++)
                {
                    HalfScales(s0 + (nint)r * blocksPerRow, t0, ones, blocksPerRow, c0);
                    NibbleDot.RowMany<NibbleDot.OneTable>(b0 + (nint)r * blocksPerRow * 16, 16, blocksPerRow, c0, sets, vectors, table,
                        null, null, biased.Bias, y0 + r, yStride);
                }
            }
        }
        finally { ArrayPool<float>.Shared.Return(c); }
    }

    /// <summary><see cref="DotRowsMany"/> with eight rows in a register's lanes (<see cref="NibbleLanes"/>; AVX-VNNI or AVX2): each
    /// block's scales applied once per eight rows; the same block totals, other float summation order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once: a prompt pass alone may call it too rarely to leave tier 0
    public static unsafe void DotRowsLanes((sbyte[] Table, int Bias) biased, ReadOnlySpan<float> scaleTable, ReadOnlySpan<byte> blocks,
        ReadOnlySpan<byte> scales, int rowCount, int blocksPerRow, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        int cols = blocksPerRow * 32;
        if (blocks.Length < (long)rowCount * blocksPerRow * 16 || scales.Length < rowCount * blocksPerRow
            || x.Length < vectors * cols || y.Length < (vectors - 1) * yStride + rowCount)
            throw new ArgumentException("spans shorter than the rows");
        var a = NibbleLanes.Scratch;
        a.Set(x, vectors, cols, evensThenOdds: true, biased.Bias);
        var table = new NibbleLanes.Tables(NibbleDot.Broadcast(biased.Table));
        var unpacked = NibbleLanes.Unpacked(blocksPerRow);
        const int Lanes = NibbleLanes.Lanes, GroupRows = NibbleLanes.GroupRows;
        float[] factors = ArrayPool<float>.Shared.Rent(blocksPerRow * GroupRows);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (byte* s0 = scales)
            fixed (float* t0 = scaleTable)
            fixed (float* f0 = factors)
            fixed (float* y0 = y)
            {
                for (int r = 0; r < rowCount; r += GroupRows)
                {
                    int n = Math.Min(GroupRows, rowCount - r);
                    // Each eight rows' scales in the lanes' layout, the second eight's after the first's.
                    for (int half = 0; half * Lanes < n; half++)
                        LaneScales(s0 + (nint)(r + half * Lanes) * blocksPerRow, blocksPerRow, Math.Min(Lanes, n - half * Lanes), t0,
                            f0 + half * blocksPerRow * Lanes, shift: 1);
                    NibbleLanes.Prefetch(s0 + (nint)(r + GroupRows) * blocksPerRow, GroupRows * blocksPerRow); // the next group's, as Group does its codes
                    NibbleLanes.Group(b0 + (nint)r * blocksPerRow * 16, blocksPerRow * 16, n, blocksPerRow, f0, a, table, unpacked, y0 + r, yStride);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(factors);
        }
    }

    /// <summary>
    /// <c>f[8j + i] = E8M0(e[i·count + j]) · 2^−shift</c> for up to eight rows (<paramref name="rows"/>; missing rows
    /// repeat row 0), the lanes <see cref="NibbleLanes"/> wants (MXFP4: shift 1, its doubled table's half; MXFP6-E2M3:
    /// 3, its values ×8): four blocks of eight rows per gather of 32-bit words (all inside the rows; a row whose block
    /// count is not a multiple of four ends with a gather that overlaps the one before), each code shifted into a float's
    /// exponent (2^(e − 127 − shift), for shift + 1 ≤ e ≤ 254, checked for all 32 codes at once); a gather with another
    /// code, or rows of fewer than four blocks, through <paramref name="table"/>.
    /// </summary>
    internal static unsafe void LaneScales(byte* e, int count, int rows, float* table, float* f, int shift)
    {
        const int Lanes = NibbleLanes.Lanes;
        if ((uint)shift > 8) throw new ArgumentOutOfRangeException(nameof(shift), shift, "a shift from 0 to 8");
        if (!Avx2.IsSupported || count < 4)
        {
            LaneScalesFromTable(e, 0, count, count, rows, table, f, shift);
            return;
        }
        var offsets = NibbleLanes.RowOffsets(rows, count);
        var exponent = Vector256.Create(0x7F80_0000);
        var lower = Vector256.Create(shift << 23);
        var lowest = Vector256.Create((byte)(shift + 1));
        var span = Vector256.Create((byte)(253 - shift));
        for (int j = 0; j < count; j += 4)
        {
            if (j + 4 > count) j = count - 4; // the last four blocks, overlapping the gather before (same values again)
            var words = Avx2.GatherVector256((int*)(e + j), offsets, 1);
            // shift + 1 ≤ e ≤ 254 for every byte: (e − shift − 1) ≤ 253 − shift unsigned.
            if (!Vector256.LessThanOrEqualAll(words.AsByte() - lowest, span))
            {
                LaneScalesFromTable(e, j, j + 4, count, rows, table, f, shift);
                continue;
            }
            // Byte t of each word into bits 23–30: 2^(e − 127) · 2^−shift = the float with exponent field e − shift.
            ((Avx2.ShiftLeftLogical(words, 23) & exponent) - lower).AsSingle().Store(f + j * Lanes);
            ((Avx2.ShiftLeftLogical(words, 15) & exponent) - lower).AsSingle().Store(f + (j + 1) * Lanes);
            ((Avx2.ShiftLeftLogical(words, 7) & exponent) - lower).AsSingle().Store(f + (j + 2) * Lanes);
            ((Avx2.ShiftRightLogical(words, 1) & exponent) - lower).AsSingle().Store(f + (j + 3) * Lanes);
        }
    }

    /// <summary><see cref="LaneScales"/> for blocks <paramref name="from"/>..<paramref name="to"/> through the table
    /// (every code, the special ones included).</summary>
    private static unsafe void LaneScalesFromTable(byte* e, int from, int to, int count, int rows, float* table, float* f, int shift)
    {
        float factor = MathF.ScaleB(1f, -shift);
        for (int j = from; j < to; j++)
            for (int i = 0; i < NibbleLanes.Lanes; i++) f[j * NibbleLanes.Lanes + i] = table[e[NibbleLanes.SourceRow(i, rows) * count + j]] * factor;
    }

    /// <summary>
    /// c[j] = E8M0(e[j]) / 2 · xs[j] for one row's block scales (the doubled table's half folded in): eight at a time by
    /// placing e − 1 in a float's exponent (2^(e − 128)), which holds for 2 ≤ e ≤ 254; a group of eight with another
    /// code (2^−127 and 2^−126, or NaN) goes through <paramref name="table"/>.
    /// </summary>
    private static unsafe void HalfScales(byte* e, float* table, float* xs, int count, float* c)
    {
        int j = 0;
        for (; j + 8 <= count; j += 8)
        {
            var codes = Avx2.ConvertToVector256Int32(e + j);
            var plain = Vector256.GreaterThan(codes, Vector256.Create(1)) & Vector256.LessThan(codes, Vector256.Create(255));
            if (plain.AsByte().ExtractMostSignificantBits() == uint.MaxValue)
                (Avx2.ShiftLeftLogical(codes - Vector256.Create(1), 23).AsSingle() * Vector256.Load(xs + j)).Store(c + j);
            else
                for (int k = j; k < j + 8; k++) c[k] = table[e[k]] * 0.5f * xs[k];
        }
        for (; j < count; j++) c[j] = table[e[j]] * 0.5f * xs[j];
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
