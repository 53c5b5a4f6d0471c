using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Runtime;

/// <summary>
/// The product of a tile of float rows with many tokens (a prompt window, a perplexity window) as an outer-product
/// kernel: the tile's rows are transposed eight at a time into a column-major panel (one register holds column k of
/// eight rows) and every group of twelve tokens' activations is packed once per product in the same column-major way,
/// so each column of the panel is loaded once and meets twelve activations broadcast from one packed line — twelve
/// FMAs per load of weights, eight rows' sums in the lanes of twelve accumulators, no horizontal sums. The
/// dot-product kernel it replaces (<see cref="LinearKernels.DotRows"/>, four rows × two tokens) needs six vector loads
/// per eight FMAs, more than the second-level cache delivers once a tile's rows outgrow the first.
/// </summary>
/// <remarks>Each output is one chain of FMAs over the columns in order (<see cref="Reference"/> gives the same bits), so
/// the results do not depend on tiles, groups or threads.</remarks>
internal static unsafe class PanelGemm
{
    /// <summary>Rows per panel: the lanes of one register.</summary>
    public const int PanelRows = 8;

    /// <summary>Tokens per packed group: twelve accumulators, the panel's column and a broadcast fill 14 of the 16 registers.</summary>
    public const int GroupTokens = 12;

    /// <summary>The fewest tokens the kernel runs for (fewer: <see cref="LinearKernels.DotRows"/>; transposing a panel
    /// costs about what three tokens' multiply-adds do).</summary>
    public const int MinTokens = 8;

    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Floats <see cref="PackActivations"/> writes for <paramref name="tokens"/> tokens of <paramref name="columns"/>.</summary>
    public static long PackedLength(int tokens, int columns) => (long)((tokens + GroupTokens - 1) / GroupTokens) * columns * GroupTokens;

    /// <summary>x (tokens × columns, row-major) in groups of twelve tokens, each column-major:
    /// <c>packed[g·columns·12 + 12k + i] = x[(12g + i)·columns + k]</c>, missing tokens of the last group 0.</summary>
    public static void PackActivations(ReadOnlySpan<float> x, int tokens, int columns, Span<float> packed)
    {
        if (x.Length < (long)tokens * columns || packed.Length < PackedLength(tokens, columns))
            throw new ArgumentException("spans shorter than the tokens");
        for (int g = 0; g * GroupTokens < tokens; g++)
        {
            var group = packed.Slice(g * columns * GroupTokens, columns * GroupTokens);
            int count = Math.Min(GroupTokens, tokens - g * GroupTokens);
            if (count < GroupTokens) group.Clear();
            for (int i = 0; i < count; i++)
            {
                var token = x.Slice((g * GroupTokens + i) * columns, columns);
                for (int k = 0; k < columns; k++) group[k * GroupTokens + i] = token[k];
            }
        }
    }

    [ThreadStatic] private static float[]? t_panel;

    /// <summary>
    /// <c>y[t·yStride + i] = Σ_k tile[i·columns + k] · x_t[k]</c> for the <paramref name="rowCount"/> rows of the tile and
    /// all <paramref name="tokens"/> tokens of <paramref name="packedX"/> (<see cref="PackActivations"/>); the panel
    /// lives in a buffer of the calling thread.
    /// </summary>
    public static void Multiply(float* tile, int rowCount, int columns, float* packedX, int tokens, float* y, nint yStride,
        byte* prefetch = null, nint prefetchBytes = 0) =>
        Multiply<FloatRows>((byte*)tile, rowCount, columns, packedX, tokens, y, yStride, prefetch, prefetchBytes);

    /// <summary>
    /// <see cref="Multiply(float*, int, int, float*, int, float*, nint, byte*, nint)"/> on rows of little-endian BF16 as stored
    /// (<paramref name="rows"/>, <c>rowCount × columns</c> of them): each is widened to f32 (a shift: exact) inside the
    /// panel's transpose, so no float tile is written and read back. Widening a 16-sequence step's tiles first was a
    /// seventh of its time on the SmolLM2-shaped model (docs/serve.md, eighteenth session). The same floats meet the
    /// same FMA chains, so the same bits as decoding the rows first.
    /// </summary>
    public static void MultiplyBf16(ushort* rows, int rowCount, int columns, float* packedX, int tokens, float* y, nint yStride,
        byte* prefetch = null, nint prefetchBytes = 0) =>
        Multiply<Bf16Rows>((byte*)rows, rowCount, columns, packedX, tokens, y, yStride, prefetch, prefetchBytes);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Multiply<TRows>(byte* tile, int rowCount, int columns, float* packedX, int tokens, float* y, nint yStride,
        byte* prefetch, nint prefetchBytes) where TRows : struct, IRows
    {
        int panels = (rowCount + PanelRows - 1) / PanelRows;
        if ((t_panel?.Length ?? 0) < PanelRows * columns) t_panel = GC.AllocateArray<float>(Math.Max(PanelRows * columns, 4096), pinned: true);
        nint rowBytes = (nint)columns * TRows.ElementBytes;
        fixed (float* panel = t_panel)
        {
            for (int r0 = 0; r0 < rowCount; r0 += PanelRows)
            {
                int rows = Math.Min(PanelRows, rowCount - r0);
                Pack<TRows>(tile + r0 * rowBytes, rowBytes, rows, columns, panel);
                // This panel's share of the bytes to ask for (the next tile's, as stored) during its first group.
                int p = r0 / PanelRows;
                byte* next = prefetch + prefetchBytes * p / panels, stop = prefetch == null ? null : prefetch + prefetchBytes * (p + 1) / panels;
                for (int t0 = 0; t0 < tokens; t0 += GroupTokens, next = stop)
                {
                    float* xg = packedX + (nint)(t0 / GroupTokens) * columns * GroupTokens, yg = y + t0 * yStride + r0;
                    switch (Math.Min(GroupTokens, tokens - t0))
                    {
                        case 12: Group<N12>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                        case 11: Group<N11>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                        case 10: Group<N10>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                        case 9: Group<N9>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                        case 8: Group<N8>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                        case 7: Group<N7>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                        case 6: Group<N6>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                        case 5: Group<N5>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                        case 4: Group<N4>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                        case 3: Group<N3>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                        case 2: Group<N2>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                        default: Group<N1>(panel, columns, xg, yg, yStride, rows, next, stop); break;
                    }
                }
            }
        }
    }

    /// <summary>How <see cref="Pack{TRows}"/> reads a tile's rows: eight consecutive elements as floats, or one.</summary>
    private interface IRows
    {
        static abstract int ElementBytes { get; }

        static abstract Vector256<float> Load8(byte* element);

        static abstract float Load1(byte* element);
    }

    /// <summary>Float rows (a decoded tile, or F32 weights in place).</summary>
    private readonly struct FloatRows : IRows
    {
        public static int ElementBytes => 4;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load8(byte* element) => Vector256.Load((float*)element);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load1(byte* element) => *(float*)element;
    }

    /// <summary>BF16 rows as stored: each element the top half of its f32 (<c>vpmovzxwd</c> and a shift).</summary>
    private readonly struct Bf16Rows : IRows
    {
        public static int ElementBytes => 2;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load8(byte* element) =>
            Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((ushort*)element), 16).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Load1(byte* element) => BitConverter.Int32BitsToSingle(*(ushort*)element << 16);
    }

    /// <summary><paramref name="rows"/> (≤ 8) rows of <paramref name="columns"/> elements (<paramref name="rowBytes"/>
    /// apart) into column-major float <c>panel[8k + i]</c>, missing rows 0: 8 × 8 transposes, the last columns one by one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Pack<TRows>(byte* rowsStart, nint rowBytes, int rows, int columns, float* panel) where TRows : struct, IRows
    {
        byte* p0 = rowsStart, p1 = Row(rowsStart, rowBytes, rows, 1), p2 = Row(rowsStart, rowBytes, rows, 2), p3 = Row(rowsStart, rowBytes, rows, 3);
        byte* p4 = Row(rowsStart, rowBytes, rows, 4), p5 = Row(rowsStart, rowBytes, rows, 5), p6 = Row(rowsStart, rowBytes, rows, 6), p7 = Row(rowsStart, rowBytes, rows, 7);
        // Missing rows read row 0 and are masked to zero (their sums are dropped; zeros keep NaN out of nothing).
        var keep = Vector256.LessThan(Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7), Vector256.Create(rows)).AsSingle();
        int size = TRows.ElementBytes;
        int k = 0;
        for (; k + 8 <= columns; k += 8)
        {
            nint at = (nint)k * size;
            Vector256<float> r0 = TRows.Load8(p0 + at), r1 = TRows.Load8(p1 + at), r2 = TRows.Load8(p2 + at), r3 = TRows.Load8(p3 + at);
            Vector256<float> r4 = TRows.Load8(p4 + at), r5 = TRows.Load8(p5 + at), r6 = TRows.Load8(p6 + at), r7 = TRows.Load8(p7 + at);
            var t0 = Avx.UnpackLow(r0, r1);
            var t1 = Avx.UnpackHigh(r0, r1);
            var t2 = Avx.UnpackLow(r2, r3);
            var t3 = Avx.UnpackHigh(r2, r3);
            var t4 = Avx.UnpackLow(r4, r5);
            var t5 = Avx.UnpackHigh(r4, r5);
            var t6 = Avx.UnpackLow(r6, r7);
            var t7 = Avx.UnpackHigh(r6, r7);
            var s0 = Avx.Shuffle(t0, t2, 0x44);   // columns k and k + 4 of rows 0–3
            var s1 = Avx.Shuffle(t0, t2, 0xEE);   // k + 1, k + 5
            var s2 = Avx.Shuffle(t1, t3, 0x44);   // k + 2, k + 6
            var s3 = Avx.Shuffle(t1, t3, 0xEE);   // k + 3, k + 7
            var s4 = Avx.Shuffle(t4, t6, 0x44);   // the same of rows 4–7
            var s5 = Avx.Shuffle(t4, t6, 0xEE);
            var s6 = Avx.Shuffle(t5, t7, 0x44);
            var s7 = Avx.Shuffle(t5, t7, 0xEE);
            float* c = panel + 8 * k;
            (Avx.Permute2x128(s0, s4, 0x20) & keep).Store(c);
            (Avx.Permute2x128(s1, s5, 0x20) & keep).Store(c + 8);
            (Avx.Permute2x128(s2, s6, 0x20) & keep).Store(c + 16);
            (Avx.Permute2x128(s3, s7, 0x20) & keep).Store(c + 24);
            (Avx.Permute2x128(s0, s4, 0x31) & keep).Store(c + 32);
            (Avx.Permute2x128(s1, s5, 0x31) & keep).Store(c + 40);
            (Avx.Permute2x128(s2, s6, 0x31) & keep).Store(c + 48);
            (Avx.Permute2x128(s3, s7, 0x31) & keep).Store(c + 56);
        }
        for (; k < columns; k++)
            for (int i = 0; i < PanelRows; i++) panel[8 * k + i] = i < rows ? TRows.Load1(rowsStart + i * rowBytes + (nint)k * size) : 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* Row(byte* rowsStart, nint rowBytes, int rows, int i) => rowsStart + (i < rows ? i : 0) * rowBytes;

    private interface ICount
    {
        static abstract int N { get; }
    }

    private struct N1 : ICount { public static int N => 1; }
    private struct N2 : ICount { public static int N => 2; }
    private struct N3 : ICount { public static int N => 3; }
    private struct N4 : ICount { public static int N => 4; }
    private struct N5 : ICount { public static int N => 5; }
    private struct N6 : ICount { public static int N => 6; }
    private struct N7 : ICount { public static int N => 7; }
    private struct N8 : ICount { public static int N => 8; }
    private struct N9 : ICount { public static int N => 9; }
    private struct N10 : ICount { public static int N => 10; }
    private struct N11 : ICount { public static int N => 11; }
    private struct N12 : ICount { public static int N => 12; }

    /// <summary>One panel times <c>TN.N</c> tokens of a packed group: per column one load of eight rows' weights and
    /// one broadcast and FMA per token.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Group<TN>(float* panel, int columns, float* x, float* y, nint yStride, int rows, byte* next, byte* stop)
        where TN : struct, ICount
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default;
        Vector256<float> a6 = default, a7 = default, a8 = default, a9 = default, a10 = default, a11 = default;
        for (int k = 0; k < columns; k++)
        {
            var w = Vector256.Load(panel + 8 * k);
            // A line of what to prefetch every other column (a panel's share of the next BF16 tile is columns/4 lines):
            // spread out, not a burst, which stalled the loop (tried: slower than none).
            if ((k & 1) == 0 && next < stop)
            {
                Sse.Prefetch0(next);
                next += 64;
            }
            float* b = x + GroupTokens * k;
            a0 = Fma.MultiplyAdd(w, Vector256.Create(b[0]), a0);
            if (TN.N > 1) a1 = Fma.MultiplyAdd(w, Vector256.Create(b[1]), a1);
            if (TN.N > 2) a2 = Fma.MultiplyAdd(w, Vector256.Create(b[2]), a2);
            if (TN.N > 3) a3 = Fma.MultiplyAdd(w, Vector256.Create(b[3]), a3);
            if (TN.N > 4) a4 = Fma.MultiplyAdd(w, Vector256.Create(b[4]), a4);
            if (TN.N > 5) a5 = Fma.MultiplyAdd(w, Vector256.Create(b[5]), a5);
            if (TN.N > 6) a6 = Fma.MultiplyAdd(w, Vector256.Create(b[6]), a6);
            if (TN.N > 7) a7 = Fma.MultiplyAdd(w, Vector256.Create(b[7]), a7);
            if (TN.N > 8) a8 = Fma.MultiplyAdd(w, Vector256.Create(b[8]), a8);
            if (TN.N > 9) a9 = Fma.MultiplyAdd(w, Vector256.Create(b[9]), a9);
            if (TN.N > 10) a10 = Fma.MultiplyAdd(w, Vector256.Create(b[10]), a10);
            if (TN.N > 11) a11 = Fma.MultiplyAdd(w, Vector256.Create(b[11]), a11);
        }
        Store(a0, y, rows);
        if (TN.N > 1) Store(a1, y + yStride, rows);
        if (TN.N > 2) Store(a2, y + 2 * yStride, rows);
        if (TN.N > 3) Store(a3, y + 3 * yStride, rows);
        if (TN.N > 4) Store(a4, y + 4 * yStride, rows);
        if (TN.N > 5) Store(a5, y + 5 * yStride, rows);
        if (TN.N > 6) Store(a6, y + 6 * yStride, rows);
        if (TN.N > 7) Store(a7, y + 7 * yStride, rows);
        if (TN.N > 8) Store(a8, y + 8 * yStride, rows);
        if (TN.N > 9) Store(a9, y + 9 * yStride, rows);
        if (TN.N > 10) Store(a10, y + 10 * yStride, rows);
        if (TN.N > 11) Store(a11, y + 11 * yStride, rows);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector256<float> sums, float* destination, int rows)
    {
        if (rows == PanelRows) sums.Store(destination);
        else for (int i = 0; i < rows; i++) destination[i] = sums.GetElement(i);
    }

    /// <summary>The scalar twin (tests): each output one chain of fused multiply-adds over the columns in order, from 0.</summary>
    public static void Reference(ReadOnlySpan<float> tile, int rowCount, int columns, ReadOnlySpan<float> x, int tokens, Span<float> y, int yStride)
    {
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rowCount; r++)
            {
                float sum = 0;
                for (int k = 0; k < columns; k++) sum = MathF.FusedMultiplyAdd(tile[r * columns + k], x[t * columns + k], sum);
                y[t * yStride + r] = sum;
            }
    }
}
