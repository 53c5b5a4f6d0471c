using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>
/// The product of a tile of float rows with many tokens (a prompt window, a perplexity window, a step of many
/// sequences) as an outer-product kernel: every group of sixteen tokens' activations is packed once per product
/// column-major (two registers hold column k of the sixteen tokens), and six rows at a time meet them — per column six
/// weights broadcast from the rows as they lie, two loads of activations and twelve FMAs, the six rows' sums for the
/// sixteen tokens in the lanes of twelve accumulators, no horizontal sums and no transposed copy of the weights.
/// </summary>
/// <remarks>Each output is one chain of FMAs over the columns in order (<see cref="Reference"/> gives the same bits), so
/// the results do not depend on tiles, groups or threads. The kernel it replaces (eight rows transposed into a panel,
/// twelve tokens broadcast) issued thirteen loads per twelve FMAs, ran its last four tokens of sixteen on four FMA
/// chains (half the FMA units' throughput at their four-cycle latency) and transposed every tile first: 27.7 G
/// multiply-adds/s on one Zen 3 core for a 1536 × 576 tile and 16 tokens, 44–46 now (docs/runtime.md, nineteenth
/// session).</remarks>
internal static unsafe class PanelGemm
{
    /// <summary>Rows per block: six broadcasts feed the twelve accumulators of sixteen tokens.</summary>
    public const int PanelRows = 6;

    /// <summary>Rows the fullest call takes: two blocks of six (<see cref="Sixteen512{TRows}"/> with AVX-512, and
    /// <see cref="Eight{TRows}"/>, a last group of eight tokens or fewer without it); a call given six rows or fewer does
    /// the second block's multiply-adds on repeated rows and drops them.</summary>
    public const int CallRows = 2 * PanelRows;

    /// <summary>Tokens per packed group: two registers of eight; with twelve accumulators and a broadcast, 15 of the 16 registers.</summary>
    public const int GroupTokens = 16;

    /// <summary>The fewest tokens the kernel runs for (fewer: <see cref="LinearKernels.DotRows"/>).</summary>
    public const int MinTokens = 8;

    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Whether a group of sixteen tokens runs in one 512-bit register per row (AVX-512: <see cref="Sixteen512{TRows}"/>)
    /// rather than two of 256 bits. Each lane is still one token's chain of FMAs over the columns in order, so the
    /// same bits either way.</summary>
    internal static readonly bool Wide = Avx512F.IsSupported;

    /// <summary>Floats <see cref="PackActivations"/> writes for <paramref name="tokens"/> tokens of <paramref name="columns"/>.</summary>
    public static long PackedLength(int tokens, int columns) => (long)((tokens + GroupTokens - 1) / GroupTokens) * columns * GroupTokens;

    /// <summary>x (tokens × columns, row-major) in groups of sixteen tokens, each column-major:
    /// <c>packed[g·columns·16 + 16k + i] = x[(16g + i)·columns + k]</c>, missing tokens of the last group 0 — eight
    /// tokens' eight columns at a time through an 8 × 8 transpose in registers (<see cref="Transposes.Eight"/>). The
    /// scalar copy it replaces cost ~4% of a 16-sequence BF16 step on the step's own thread, once per product (a
    /// step packs ~200 times), while the other thread waited. The same floats as <see cref="PackActivationsReference"/>.</summary>
    public static void PackActivations(ReadOnlySpan<float> x, int tokens, int columns, Span<float> packed)
    {
        if (x.Length < (long)tokens * columns || packed.Length < PackedLength(tokens, columns))
            throw new ArgumentException("spans shorter than the tokens");
        if (!Avx.IsSupported)
        {
            PackActivationsReference(x, tokens, columns, packed);
            return;
        }
        var zero = Vector256<float>.Zero;
        fixed (float* source = x)
        fixed (float* destination = packed)
            for (int g = 0; g * GroupTokens < tokens; g++)
            {
                float* group = destination + (nint)g * columns * GroupTokens;
                int count = Math.Min(GroupTokens, tokens - g * GroupTokens);
                for (int half = 0; half < 2; half++)
                {
                    // Eight tokens' rows; those past the last token read nothing and give zeros.
                    int first = g * GroupTokens + half * 8, present = Math.Clamp(count - half * 8, 0, 8);
                    float* row = source + (nint)first * columns;
                    float* lanes = group + half * 8;
                    int k = 0;
                    if (present == 8)
                        for (; k + 8 <= columns; k += 8)
                            Transposes.Eight(Vector256.Load(row + k), Vector256.Load(row + columns + k), Vector256.Load(row + 2 * columns + k),
                                Vector256.Load(row + 3 * columns + k), Vector256.Load(row + 4 * columns + k), Vector256.Load(row + 5 * columns + k),
                                Vector256.Load(row + 6 * columns + k), Vector256.Load(row + 7 * columns + k), lanes + (nint)k * GroupTokens, GroupTokens);
                    else if (present == 0)
                        for (; k < columns; k++) zero.Store(lanes + (nint)k * GroupTokens);
                    for (; k < columns; k++)
                        for (int i = 0; i < 8; i++) lanes[(nint)k * GroupTokens + i] = i < present ? row[(nint)i * columns + k] : 0;
                }
            }
    }

    /// <summary><see cref="PackActivations"/> one float at a time: the reference its tests compare with.</summary>
    internal static void PackActivationsReference(ReadOnlySpan<float> x, int tokens, int columns, Span<float> packed)
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

    /// <summary>
    /// <c>y[t·yStride + i] = Σ_k tile[i·columns + k] · x_t[k]</c> for the <paramref name="rowCount"/> rows of the tile and
    /// all <paramref name="tokens"/> tokens of <paramref name="packedX"/> (<see cref="PackActivations"/>); meanwhile
    /// <paramref name="prefetchBytes"/> at <paramref name="prefetch"/> are asked for (the next tile as stored), spread
    /// over the blocks' first groups.
    /// </summary>
    public static void Multiply(float* tile, int rowCount, int columns, float* packedX, int tokens, float* y, nint yStride,
        byte* prefetch = null, nint prefetchBytes = 0) =>
        Multiply<FloatRows>((byte*)tile, rowCount, columns, packedX, tokens, y, yStride, prefetch, prefetchBytes, Wide);

    /// <summary><see cref="Multiply(float*, int, int, float*, int, float*, nint, byte*, nint)"/> with the 256-bit group
    /// kernel even where AVX-512 is (tests compare both with the scalar twin).</summary>
    internal static void MultiplyNarrow(float* tile, int rowCount, int columns, float* packedX, int tokens, float* y, nint yStride) =>
        Multiply<FloatRows>((byte*)tile, rowCount, columns, packedX, tokens, y, yStride, null, 0, wide: false);

    /// <summary><see cref="MultiplyBf16"/> with the 256-bit group kernel even where AVX-512 is.</summary>
    internal static void MultiplyBf16Narrow(ushort* rows, int rowCount, int columns, float* packedX, int tokens, float* y, nint yStride) =>
        Multiply<Bf16Rows>((byte*)rows, rowCount, columns, packedX, tokens, y, yStride, null, 0, wide: false);

    /// <summary>
    /// <see cref="Multiply(float*, int, int, float*, int, float*, nint, byte*, nint)"/> on rows of little-endian BF16 as stored
    /// (<paramref name="rows"/>, <c>rowCount × columns</c> of them), each weight broadcast as the f32 it stands for
    /// (the top half of a float: exact), so no float copy of the rows is written. The same floats meet the same FMA
    /// chains, so the same bits as decoding the rows first.
    /// </summary>
    public static void MultiplyBf16(ushort* rows, int rowCount, int columns, float* packedX, int tokens, float* y, nint yStride,
        byte* prefetch = null, nint prefetchBytes = 0) =>
        Multiply<Bf16Rows>((byte*)rows, rowCount, columns, packedX, tokens, y, yStride, prefetch, prefetchBytes, Wide);

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Multiply<TRows>(byte* tile, int rowCount, int columns, float* packedX, int tokens, float* y, nint yStride,
        byte* prefetch, nint prefetchBytes, bool wide) where TRows : struct, IRows
    {
        nint rowBytes = (nint)columns * TRows.ElementBytes;
        // Groups of nine to sixteen tokens go through Sixteen block by block (Sixteen512, twelve rows a call where it
        // can, with AVX-512); a last group of eight or fewer through Eight, twelve rows (two blocks) a call where it can
        // (EightWide, sixteen rows a call, with AVX-512).
        // Each call asks for its rows' share of the prefetch range during the first pass over them.
        int sixteens = tokens / GroupTokens + (tokens % GroupTokens > 8 ? 1 : 0), tail = tokens - sixteens * GroupTokens;
        for (int r0 = 0, rows; wide && r0 < rowCount && sixteens > 0; r0 += rows)
        {
            rows = rowCount - r0 >= 2 * PanelRows ? 2 * PanelRows : Math.Min(PanelRows, rowCount - r0);
            byte* next = Share(prefetch, prefetchBytes, r0, rowCount), stop = Share(prefetch, prefetchBytes, r0 + rows, rowCount);
            for (int g = 0; g < sixteens; g++, next = stop)
                Sixteen512<TRows>(tile + r0 * rowBytes, rowBytes, columns, rows, packedX + (nint)g * columns * GroupTokens, y + g * GroupTokens * yStride + r0,
                    yStride, Math.Min(GroupTokens, tokens - g * GroupTokens), next, stop);
        }
        for (int r0 = 0; !wide && r0 < rowCount && sixteens > 0; r0 += PanelRows)
        {
            int rows = Math.Min(PanelRows, rowCount - r0);
            byte* next = Share(prefetch, prefetchBytes, r0, rowCount), stop = Share(prefetch, prefetchBytes, r0 + rows, rowCount);
            for (int g = 0; g < sixteens; g++, next = stop)
                Sixteen<TRows>(tile + r0 * rowBytes, rowBytes, columns, rows, packedX + (nint)g * columns * GroupTokens, y + g * GroupTokens * yStride + r0,
                    yStride, Math.Min(GroupTokens, tokens - g * GroupTokens), next, stop);
        }
        if (tail <= 0) return;
        for (int r0 = 0, rows; wide && r0 < rowCount; r0 += rows)
        {
            rows = Math.Min(WideRows, rowCount - r0);
            byte* next = sixteens > 0 ? null : Share(prefetch, prefetchBytes, r0, rowCount);
            byte* stop = sixteens > 0 ? null : Share(prefetch, prefetchBytes, r0 + rows, rowCount);
            EightWide<TRows>(tile + r0 * rowBytes, rowBytes, columns, rows, packedX + (nint)sixteens * columns * GroupTokens,
                y + sixteens * GroupTokens * yStride + r0, yStride, tail, next, stop);
        }
        for (int r0 = 0, rows; !wide && r0 < rowCount; r0 += rows)
        {
            rows = rowCount - r0 >= CallRows ? CallRows : Math.Min(PanelRows, rowCount - r0);
            byte* next = sixteens > 0 ? null : Share(prefetch, prefetchBytes, r0, rowCount);
            byte* stop = sixteens > 0 ? null : Share(prefetch, prefetchBytes, r0 + rows, rowCount);
            Eight<TRows>(tile + r0 * rowBytes, rowBytes, columns, rows, packedX + (nint)sixteens * columns * GroupTokens,
                y + sixteens * GroupTokens * yStride + r0, yStride, tail, next, stop);
        }
    }

    /// <summary>Where the share of the prefetch range of rows up to <paramref name="row"/> of <paramref name="rows"/> ends.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* Share(byte* prefetch, nint bytes, int row, int rows) => prefetch == null ? null : prefetch + bytes * row / rows;

    /// <summary>How the kernels read a weight: element k of a row, broadcast to every lane as a float.</summary>
    private interface IRows
    {
        static abstract int ElementBytes { get; }

        /// <summary>Element <paramref name="k"/> ≥ 1 (the kernels read column 0 with <see cref="First"/>).</summary>
        static abstract Vector256<float> Broadcast(byte* row, nint k);

        static abstract Vector256<float> First(byte* row);

        /// <summary><see cref="Broadcast"/> to sixteen lanes.</summary>
        static abstract Vector512<float> Broadcast512(byte* row, nint k);

        static abstract Vector512<float> First512(byte* row);

        /// <summary>Elements <paramref name="k"/>..k + 15 as floats.</summary>
        static abstract Vector512<float> Sixteen(byte* row, nint k);

        /// <summary>Element <paramref name="k"/> as a float.</summary>
        static abstract float Element(byte* row, nint k);
    }

    /// <summary>Float rows (a decoded tile, or F32 weights in place).</summary>
    private readonly struct FloatRows : IRows
    {
        public static int ElementBytes => 4;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Broadcast(byte* row, nint k) => Vector256.Create(((float*)row)[k]);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> First(byte* row) => Vector256.Create(*(float*)row);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Broadcast512(byte* row, nint k) => Vector512.Create(((float*)row)[k]);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> First512(byte* row) => Vector512.Create(*(float*)row);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Sixteen(byte* row, nint k) => Vector512.Load((float*)row + k);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Element(byte* row, nint k) => ((float*)row)[k];
    }

    /// <summary>BF16 rows as stored: the 32 bits ending with element k (element k − 1 below it) broadcast, and the low
    /// half masked off — one load and one logical operation, which the FP ports the FMAs leave free take (widening
    /// rows to a float buffer first cost a fifth of the kernel's rate).</summary>
    private readonly struct Bf16Rows : IRows
    {
        public static int ElementBytes => 2;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Broadcast(byte* row, nint k) =>
            Avx.And(Vector256.Create(*(float*)(row + 2 * k - 2)), Vector256.Create(0xFFFF0000u).AsSingle());

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> First(byte* row) => Vector256.Create(BitConverter.Int32BitsToSingle(*(ushort*)row << 16));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Broadcast512(byte* row, nint k) =>
            (Vector512.Create(*(uint*)(row + 2 * k - 2)) & Vector512.Create(0xFFFF0000u)).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> First512(byte* row) => Vector512.Create(BitConverter.Int32BitsToSingle(*(ushort*)row << 16));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Sixteen(byte* row, nint k) =>
            Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512Int32(Vector256.Load((ushort*)row + k)), 16).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static float Element(byte* row, nint k) => BitConverter.Int32BitsToSingle(((ushort*)row)[k] << 16);
    }

    /// <summary>Six rows (<paramref name="rowBytes"/> apart; missing ones read row 0, their sums dropped) times a group of
    /// up to sixteen tokens: per column two loads of activations, six broadcasts and twelve FMAs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Sixteen<TRows>(byte* w, nint rowBytes, int columns, int rows, float* x, float* y, nint yStride, int tokens,
        byte* next, byte* stop) where TRows : struct, IRows
    {
        byte* w0 = w, w1 = Row(w, rowBytes, rows, 1), w2 = Row(w, rowBytes, rows, 2);
        byte* w3 = Row(w, rowBytes, rows, 3), w4 = Row(w, rowBytes, rows, 4), w5 = Row(w, rowBytes, rows, 5);
        var zero = Vector256<float>.Zero;
        var lo = Vector256.Load(x);
        var hi = Vector256.Load(x + 8);
        var c = TRows.First(w0);
        Vector256<float> a0 = Fma.MultiplyAdd(c, lo, zero), b0 = Fma.MultiplyAdd(c, hi, zero);
        c = TRows.First(w1);
        Vector256<float> a1 = Fma.MultiplyAdd(c, lo, zero), b1 = Fma.MultiplyAdd(c, hi, zero);
        c = TRows.First(w2);
        Vector256<float> a2 = Fma.MultiplyAdd(c, lo, zero), b2 = Fma.MultiplyAdd(c, hi, zero);
        c = TRows.First(w3);
        Vector256<float> a3 = Fma.MultiplyAdd(c, lo, zero), b3 = Fma.MultiplyAdd(c, hi, zero);
        c = TRows.First(w4);
        Vector256<float> a4 = Fma.MultiplyAdd(c, lo, zero), b4 = Fma.MultiplyAdd(c, hi, zero);
        c = TRows.First(w5);
        Vector256<float> a5 = Fma.MultiplyAdd(c, lo, zero), b5 = Fma.MultiplyAdd(c, hi, zero);
        for (nint k = 1; k < columns; k++)
        {
            // A line of the prefetch range every other column: spread out, not a burst (a burst stalled the loop).
            if ((k & 1) == 0 && next < stop)
            {
                Sse.Prefetch0(next);
                next += 64;
            }
            lo = Vector256.Load(x + GroupTokens * k);
            hi = Vector256.Load(x + GroupTokens * k + 8);
            c = TRows.Broadcast(w0, k);
            a0 = Fma.MultiplyAdd(c, lo, a0);
            b0 = Fma.MultiplyAdd(c, hi, b0);
            c = TRows.Broadcast(w1, k);
            a1 = Fma.MultiplyAdd(c, lo, a1);
            b1 = Fma.MultiplyAdd(c, hi, b1);
            c = TRows.Broadcast(w2, k);
            a2 = Fma.MultiplyAdd(c, lo, a2);
            b2 = Fma.MultiplyAdd(c, hi, b2);
            c = TRows.Broadcast(w3, k);
            a3 = Fma.MultiplyAdd(c, lo, a3);
            b3 = Fma.MultiplyAdd(c, hi, b3);
            c = TRows.Broadcast(w4, k);
            a4 = Fma.MultiplyAdd(c, lo, a4);
            b4 = Fma.MultiplyAdd(c, hi, b4);
            c = TRows.Broadcast(w5, k);
            a5 = Fma.MultiplyAdd(c, lo, a5);
            b5 = Fma.MultiplyAdd(c, hi, b5);
        }
        int low = Math.Min(8, tokens), high = tokens - low;
        float* yh = y + 8 * yStride;
        Store(a0, y, yStride, low); Store(b0, yh, yStride, high);
        if (rows > 1) { Store(a1, y + 1, yStride, low); Store(b1, yh + 1, yStride, high); }
        if (rows > 2) { Store(a2, y + 2, yStride, low); Store(b2, yh + 2, yStride, high); }
        if (rows > 3) { Store(a3, y + 3, yStride, low); Store(b3, yh + 3, yStride, high); }
        if (rows > 4) { Store(a4, y + 4, yStride, low); Store(b4, yh + 4, yStride, high); }
        if (rows > 5) { Store(a5, y + 5, yStride, low); Store(b5, yh + 5, yStride, high); }
    }

    /// <summary>Twelve rows (two whole blocks), or up to six (<paramref name="rows"/>; the second six then repeat the
    /// first, their sums dropped), times a last group of eight or fewer tokens: one load of activations, twelve broadcasts
    /// and twelve FMAs a column in twelve chains. On Zen 3 a broadcast from memory also takes an FP port, so at one
    /// broadcast per FMA this runs at about half the FMA peak (~27–31 G multiply-adds/s a core at 8 tokens against
    /// 40–46 for sixteen, where a broadcast feeds two FMAs); twelve rows instead of six gained only a little
    /// (<c>panel-gemm 1536 576 8</c>: bf16 25–27 → 26–28, f32 17 → 31 in one run each).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Eight<TRows>(byte* w, nint rowBytes, int columns, int rows, float* x, float* y, nint yStride, int tokens,
        byte* next, byte* stop) where TRows : struct, IRows
    {
        byte* w0 = w, w1 = Row(w, rowBytes, rows, 1), w2 = Row(w, rowBytes, rows, 2);
        byte* w3 = Row(w, rowBytes, rows, 3), w4 = Row(w, rowBytes, rows, 4), w5 = Row(w, rowBytes, rows, 5);
        // The second block's rows are the first's, six rows on: the same pointers, a column index that far ahead.
        nint second = rows == 2 * PanelRows ? PanelRows * (nint)columns : 0, far = second * TRows.ElementBytes;
        var zero = Vector256<float>.Zero;
        var lo = Vector256.Load(x);
        Vector256<float> a0 = Fma.MultiplyAdd(TRows.First(w0), lo, zero), a1 = Fma.MultiplyAdd(TRows.First(w1), lo, zero);
        Vector256<float> a2 = Fma.MultiplyAdd(TRows.First(w2), lo, zero), a3 = Fma.MultiplyAdd(TRows.First(w3), lo, zero);
        Vector256<float> a4 = Fma.MultiplyAdd(TRows.First(w4), lo, zero), a5 = Fma.MultiplyAdd(TRows.First(w5), lo, zero);
        Vector256<float> b0 = Fma.MultiplyAdd(TRows.First(w0 + far), lo, zero), b1 = Fma.MultiplyAdd(TRows.First(w1 + far), lo, zero);
        Vector256<float> b2 = Fma.MultiplyAdd(TRows.First(w2 + far), lo, zero), b3 = Fma.MultiplyAdd(TRows.First(w3 + far), lo, zero);
        Vector256<float> b4 = Fma.MultiplyAdd(TRows.First(w4 + far), lo, zero), b5 = Fma.MultiplyAdd(TRows.First(w5 + far), lo, zero);
        for (nint k = 1; k < columns; k++)
        {
            if ((k & 1) == 0 && next < stop)
            {
                Sse.Prefetch0(next);
                next += 64;
            }
            lo = Vector256.Load(x + GroupTokens * k);
            nint kb = k + second;
            a0 = Fma.MultiplyAdd(TRows.Broadcast(w0, k), lo, a0);
            b0 = Fma.MultiplyAdd(TRows.Broadcast(w0, kb), lo, b0);
            a1 = Fma.MultiplyAdd(TRows.Broadcast(w1, k), lo, a1);
            b1 = Fma.MultiplyAdd(TRows.Broadcast(w1, kb), lo, b1);
            a2 = Fma.MultiplyAdd(TRows.Broadcast(w2, k), lo, a2);
            b2 = Fma.MultiplyAdd(TRows.Broadcast(w2, kb), lo, b2);
            a3 = Fma.MultiplyAdd(TRows.Broadcast(w3, k), lo, a3);
            b3 = Fma.MultiplyAdd(TRows.Broadcast(w3, kb), lo, b3);
            a4 = Fma.MultiplyAdd(TRows.Broadcast(w4, k), lo, a4);
            b4 = Fma.MultiplyAdd(TRows.Broadcast(w4, kb), lo, b4);
            a5 = Fma.MultiplyAdd(TRows.Broadcast(w5, k), lo, a5);
            b5 = Fma.MultiplyAdd(TRows.Broadcast(w5, kb), lo, b5);
        }
        if (second != 0 && tokens == 8)
        {
            StoreByToken(a0, a1, a2, a3, a4, a5, b0, b1, b2, b3, b4, b5, y, yStride);
            return;
        }
        Store(a0, y, yStride, tokens);
        if (rows > 1) Store(a1, y + 1, yStride, tokens);
        if (rows > 2) Store(a2, y + 2, yStride, tokens);
        if (rows > 3) Store(a3, y + 3, yStride, tokens);
        if (rows > 4) Store(a4, y + 4, yStride, tokens);
        if (rows > 5) Store(a5, y + 5, yStride, tokens);
        if (second == 0) return;
        Store(b0, y + 6, yStride, tokens);
        Store(b1, y + 7, yStride, tokens);
        Store(b2, y + 8, yStride, tokens);
        Store(b3, y + 9, yStride, tokens);
        Store(b4, y + 10, yStride, tokens);
        Store(b5, y + 11, yStride, tokens);
    }

    /// <summary>Twelve rows (two blocks of six), or up to six (<paramref name="rows"/>; the second six then repeat the
    /// first, their sums dropped), times a group of nine to sixteen tokens in one 512-bit register: per column one load
    /// of activations, twelve broadcasts and twelve FMAs in twelve chains — the work of two <see cref="Sixteen{TRows}"/>
    /// calls in half the instructions, each lane the same chain as there.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Sixteen512<TRows>(byte* w, nint rowBytes, int columns, int rows, float* x, float* y, nint yStride, int tokens,
        byte* next, byte* stop) where TRows : struct, IRows
    {
        byte* w0 = w, w1 = Row(w, rowBytes, rows, 1), w2 = Row(w, rowBytes, rows, 2);
        byte* w3 = Row(w, rowBytes, rows, 3), w4 = Row(w, rowBytes, rows, 4), w5 = Row(w, rowBytes, rows, 5);
        // The second block's rows are the first's, six rows on: the same pointers, a column index that far ahead.
        nint second = rows == 2 * PanelRows ? PanelRows * (nint)columns : 0, far = second * TRows.ElementBytes;
        var zero = Vector512<float>.Zero;
        var t = Vector512.Load(x);
        Vector512<float> a0 = Avx512F.FusedMultiplyAdd(TRows.First512(w0), t, zero), a1 = Avx512F.FusedMultiplyAdd(TRows.First512(w1), t, zero);
        Vector512<float> a2 = Avx512F.FusedMultiplyAdd(TRows.First512(w2), t, zero), a3 = Avx512F.FusedMultiplyAdd(TRows.First512(w3), t, zero);
        Vector512<float> a4 = Avx512F.FusedMultiplyAdd(TRows.First512(w4), t, zero), a5 = Avx512F.FusedMultiplyAdd(TRows.First512(w5), t, zero);
        Vector512<float> b0 = Avx512F.FusedMultiplyAdd(TRows.First512(w0 + far), t, zero), b1 = Avx512F.FusedMultiplyAdd(TRows.First512(w1 + far), t, zero);
        Vector512<float> b2 = Avx512F.FusedMultiplyAdd(TRows.First512(w2 + far), t, zero), b3 = Avx512F.FusedMultiplyAdd(TRows.First512(w3 + far), t, zero);
        Vector512<float> b4 = Avx512F.FusedMultiplyAdd(TRows.First512(w4 + far), t, zero), b5 = Avx512F.FusedMultiplyAdd(TRows.First512(w5 + far), t, zero);
        for (nint k = 1; k < columns; k++)
        {
            if ((k & 1) == 0 && next < stop)
            {
                Sse.Prefetch0(next);
                next += 64;
            }
            t = Vector512.Load(x + GroupTokens * k);
            nint kb = k + second;
            a0 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w0, k), t, a0);
            b0 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w0, kb), t, b0);
            a1 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w1, k), t, a1);
            b1 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w1, kb), t, b1);
            a2 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w2, k), t, a2);
            b2 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w2, kb), t, b2);
            a3 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w3, k), t, a3);
            b3 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w3, kb), t, b3);
            a4 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w4, k), t, a4);
            b4 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w4, kb), t, b4);
            a5 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w5, k), t, a5);
            b5 = Avx512F.FusedMultiplyAdd(TRows.Broadcast512(w5, kb), t, b5);
        }
        if (second != 0 && tokens == GroupTokens)
        {
            StoreByToken(a0, a1, a2, a3, a4, a5, b0, b1, b2, b3, b4, b5, y, yStride);
            return;
        }
        Store(a0, y, yStride, tokens);
        if (rows > 1) Store(a1, y + 1, yStride, tokens);
        if (rows > 2) Store(a2, y + 2, yStride, tokens);
        if (rows > 3) Store(a3, y + 3, yStride, tokens);
        if (rows > 4) Store(a4, y + 4, yStride, tokens);
        if (rows > 5) Store(a5, y + 5, yStride, tokens);
        if (second == 0) return;
        Store(b0, y + 6, yStride, tokens);
        Store(b1, y + 7, yStride, tokens);
        Store(b2, y + 8, yStride, tokens);
        Store(b3, y + 9, yStride, tokens);
        Store(b4, y + 10, yStride, tokens);
        Store(b5, y + 11, yStride, tokens);
    }

    /// <summary>Rows a call of <see cref="EightWide{TRows}"/> takes: one 512-bit register of them.</summary>
    private const int WideRows = 16;

    /// <summary>Rows that are whole calls of both AVX-512 kernels (<see cref="CallRows"/> and <see cref="WideRows"/>):
    /// a step's tiles come in multiples of these (<see cref="LinearKernels.StepRowsPerTile"/>).</summary>
    public const int StepTileRows = 48;

    /// <summary>Columns of a call's rows turned into columns of sixteen floats at a time (<see cref="EightWide{TRows}"/>):
    /// 4 KB, in the first-level cache.</summary>
    private const int WideChunk = 64;

    /// <summary>
    /// Up to sixteen rows (<paramref name="rows"/>; missing ones read row 0, their sums dropped) times a last group of
    /// eight tokens or fewer, with AVX-512: the rows in a register's lanes instead of the tokens. Each chunk of columns is
    /// first turned into columns of sixteen floats (16 × 16 transposes in registers, BF16 widened on the way) in a
    /// scratch in the first-level cache; then per column one load of those sixteen weights and one multiply-add per
    /// token, the token's activation broadcast from the packed group. <see cref="Eight{TRows}"/>, the 256-bit kernel
    /// it replaces here, needs a broadcast, a logical operation and a multiply-add on eight lanes per row and column:
    /// a step of eight sequences cost as much as one of sixteen. Each output is the same chain of multiply-adds over
    /// the columns in order from 0, so the same bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization), SkipLocalsInit]
    private static void EightWide<TRows>(byte* w, nint rowBytes, int columns, int rows, float* x, float* y, nint yStride, int tokens,
        byte* next, byte* stop) where TRows : struct, IRows
    {
        float* raw = stackalloc float[WideChunk * WideRows + 16];
        float* scratch = (float*)(((nint)raw + 63) & ~(nint)63);
        byte** row = stackalloc byte*[WideRows];
        for (int i = 0; i < WideRows; i++) row[i] = i < rows ? w + i * rowBytes : w;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
        for (int c0 = 0; c0 < columns; c0 += WideChunk)
        {
            int n = Math.Min(WideChunk, columns - c0), c = 0;
            for (; c + 16 <= n; c += 16) TransposeSixteen<TRows>(row, c0 + c, scratch + c * WideRows);
            for (; c < n; c++)
                for (int i = 0; i < WideRows; i++) scratch[c * WideRows + i] = TRows.Element(row[i], c0 + c);
            float* xc = x + (nint)c0 * GroupTokens;
            for (c = 0; c < n; c++)
            {
                if ((c & 1) == 0 && next < stop)
                {
                    Sse.Prefetch0(next);
                    next += 64;
                }
                var weights = Vector512.Load(scratch + c * WideRows);
                float* t = xc + c * GroupTokens;
                a0 = Avx512F.FusedMultiplyAdd(weights, Vector512.Create(t[0]), a0);
                a1 = Avx512F.FusedMultiplyAdd(weights, Vector512.Create(t[1]), a1);
                a2 = Avx512F.FusedMultiplyAdd(weights, Vector512.Create(t[2]), a2);
                a3 = Avx512F.FusedMultiplyAdd(weights, Vector512.Create(t[3]), a3);
                a4 = Avx512F.FusedMultiplyAdd(weights, Vector512.Create(t[4]), a4);
                a5 = Avx512F.FusedMultiplyAdd(weights, Vector512.Create(t[5]), a5);
                a6 = Avx512F.FusedMultiplyAdd(weights, Vector512.Create(t[6]), a6);
                a7 = Avx512F.FusedMultiplyAdd(weights, Vector512.Create(t[7]), a7);
            }
        }
        StoreRows(a0, y, rows);
        if (tokens > 1) StoreRows(a1, y + yStride, rows);
        if (tokens > 2) StoreRows(a2, y + 2 * yStride, rows);
        if (tokens > 3) StoreRows(a3, y + 3 * yStride, rows);
        if (tokens > 4) StoreRows(a4, y + 4 * yStride, rows);
        if (tokens > 5) StoreRows(a5, y + 5 * yStride, rows);
        if (tokens > 6) StoreRows(a6, y + 6 * yStride, rows);
        if (tokens > 7) StoreRows(a7, y + 7 * yStride, rows);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void StoreRows(Vector512<float> sums, float* destination, int count)
        {
            if (count == WideRows) sums.Store(destination);
            else for (int i = 0; i < count; i++) destination[i] = sums.GetElement(i);
        }
    }

    /// <summary>Columns <paramref name="k"/>..k + 15 of sixteen rows as sixteen columns of sixteen floats
    /// (<c>destination[16j + i] = row i's element k + j</c>): the unpacking rounds of <see cref="StoreByToken(Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, float*, nint)"/>
    /// on all sixteen.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void TransposeSixteen<TRows>(byte** row, nint k, float* destination) where TRows : struct, IRows
    {
        Quad512(TRows.Sixteen(row[0], k), TRows.Sixteen(row[1], k), TRows.Sixteen(row[2], k), TRows.Sixteen(row[3], k), out var u0, out var u1, out var u2, out var u3);
        Quad512(TRows.Sixteen(row[4], k), TRows.Sixteen(row[5], k), TRows.Sixteen(row[6], k), TRows.Sixteen(row[7], k), out var u4, out var u5, out var u6, out var u7);
        Quad512(TRows.Sixteen(row[8], k), TRows.Sixteen(row[9], k), TRows.Sixteen(row[10], k), TRows.Sixteen(row[11], k), out var u8, out var u9, out var u10, out var u11);
        Quad512(TRows.Sixteen(row[12], k), TRows.Sixteen(row[13], k), TRows.Sixteen(row[14], k), TRows.Sixteen(row[15], k), out var u12, out var u13, out var u14, out var u15);
        Columns(u0, u4, u8, u12, destination);
        Columns(u1, u5, u9, u13, destination + WideRows);
        Columns(u2, u6, u10, u14, destination + 2 * WideRows);
        Columns(u3, u7, u11, u15, destination + 3 * WideRows);

        // Columns j, j+4, j+8, j+12 (at destination, + 4·16, …).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Columns(Vector512<float> low, Vector512<float> middle, Vector512<float> high, Vector512<float> rest, float* destination)
        {
            Lanes(low, middle, high, rest, out var j0, out var j4, out var j8, out var j12);
            j0.Store(destination);
            j4.Store(destination + 4 * WideRows);
            j8.Store(destination + 8 * WideRows);
            j12.Store(destination + 12 * WideRows);
        }
    }

    /// <summary>The last two rounds of a 16 × 16 transpose after <see cref="Quad512"/>: from the four 128-bit lanes of
    /// rows 0–3 (<paramref name="low"/>), 4–7, 8–11 and 12–15 (<paramref name="rest"/>) of elements j, j+4, j+8, j+12,
    /// the sixteen rows of each of those elements.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Lanes(Vector512<float> low, Vector512<float> middle, Vector512<float> high, Vector512<float> rest,
        out Vector512<float> j0, out Vector512<float> j4, out Vector512<float> j8, out Vector512<float> j12)
    {
        var even = Avx512F.Shuffle4x128(low, middle, 0x88); // lanes 0, 2 of each: elements j and j+8
        var odd = Avx512F.Shuffle4x128(low, middle, 0xDD); // lanes 1, 3: elements j+4 and j+12
        var evenHigh = Avx512F.Shuffle4x128(high, rest, 0x88);
        var oddHigh = Avx512F.Shuffle4x128(high, rest, 0xDD);
        j0 = Avx512F.Shuffle4x128(even, evenHigh, 0x88);
        j4 = Avx512F.Shuffle4x128(odd, oddHigh, 0x88);
        j8 = Avx512F.Shuffle4x128(even, evenHigh, 0xDD);
        j12 = Avx512F.Shuffle4x128(odd, oddHigh, 0xDD);
    }

    /// <summary>Four rows transposed within 128-bit lanes: <paramref name="j0"/>..<paramref name="j3"/> hold rows a, b, c,
    /// d of element (lane L) 4L + j.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Quad512(Vector512<float> a, Vector512<float> b, Vector512<float> c, Vector512<float> d,
        out Vector512<float> j0, out Vector512<float> j1, out Vector512<float> j2, out Vector512<float> j3)
    {
        var ab0 = Avx512F.UnpackLow(a, b).AsDouble();
        var ab1 = Avx512F.UnpackHigh(a, b).AsDouble();
        var cd0 = Avx512F.UnpackLow(c, d).AsDouble();
        var cd1 = Avx512F.UnpackHigh(c, d).AsDouble();
        j0 = Avx512F.UnpackLow(ab0, cd0).AsSingle();
        j1 = Avx512F.UnpackHigh(ab0, cd0).AsSingle();
        j2 = Avx512F.UnpackLow(ab1, cd1).AsSingle();
        j3 = Avx512F.UnpackHigh(ab1, cd1).AsSingle();
    }

    /// <summary>
    /// Twelve rows' sums of sixteen tokens (<paramref name="r0"/>..<paramref name="r11"/>, lane t token t) written as
    /// each token's twelve rows side by side (<c>y[t·stride + i]</c>), transposed in registers: two rounds of unpacking
    /// inside 128-bit lanes and two of moving whole lanes, then per token one 256-bit and one 128-bit store. The row by
    /// row writes (sixteen floats a row, <paramref name="stride"/> apart) were 192 single-float stores a call, all at one
    /// offset within their pages when a stride is a multiple of 4 KiB (the output head's 49152 rows): in a loop alone,
    /// 55 against 80 G multiply-adds/s of the same kernel writing its sums contiguously (docs/runtime.md, twenty-ninth
    /// session). The same floats, only stored another way.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreByToken(Vector512<float> r0, Vector512<float> r1, Vector512<float> r2, Vector512<float> r3,
        Vector512<float> r4, Vector512<float> r5, Vector512<float> r6, Vector512<float> r7, Vector512<float> r8,
        Vector512<float> r9, Vector512<float> r10, Vector512<float> r11, float* y, nint stride)
    {
        // Rows in pairs, then fours: u[4g + j] holds rows 4g..4g+3 of tokens j, j+4, j+8, j+12 in its four 128-bit lanes.
        var zero = Vector512<float>.Zero;
        Quad512(r0, r1, r2, r3, out var u0, out var u1, out var u2, out var u3);
        Quad512(r4, r5, r6, r7, out var u4, out var u5, out var u6, out var u7);
        Quad512(r8, r9, r10, r11, out var u8, out var u9, out var u10, out var u11);
        Tokens(u0, u4, u8, zero, y, stride);
        Tokens(u1, u5, u9, zero, y + stride, stride);
        Tokens(u2, u6, u10, zero, y + 2 * stride, stride);
        Tokens(u3, u7, u11, zero, y + 3 * stride, stride);

        // Tokens j, j+4, j+8, j+12 (at y, y + 4·stride, …) from rows 0–3, 4–7, 8–11 (and a fourth four, unused).
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Tokens(Vector512<float> low, Vector512<float> middle, Vector512<float> high, Vector512<float> rest, float* y, nint stride)
        {
            Lanes(low, middle, high, rest, out var j0, out var j4, out var j8, out var j12);
            Twelve(j0, y);
            Twelve(j4, y + 4 * stride);
            Twelve(j8, y + 8 * stride);
            Twelve(j12, y + 12 * stride);
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Twelve(Vector512<float> token, float* destination)
        {
            token.GetLower().Store(destination);
            token.GetUpper().GetLower().Store(destination + 8);
        }
    }

    /// <summary>
    /// <see cref="StoreByToken(Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, Vector512{float}, float*, nint)"/>
    /// for eight tokens in 256-bit registers: rows 0–7 through an 8 × 8 transpose (unpacking inside 128-bit lanes, then
    /// swapping lanes), rows 8–11 through a 4 × 8 one; per token one 256-bit and one 128-bit store.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreByToken(Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7, Vector256<float> r8,
        Vector256<float> r9, Vector256<float> r10, Vector256<float> r11, float* y, nint stride)
    {
        // u[4g + j]: rows 4g..4g+3 of token j in the low lane, of token j + 4 in the high lane.
        Quad(r0, r1, r2, r3, out var u0, out var u1, out var u2, out var u3);
        Quad(r4, r5, r6, r7, out var u4, out var u5, out var u6, out var u7);
        Quad(r8, r9, r10, r11, out var u8, out var u9, out var u10, out var u11);
        Token(u0, u4, u8, y, stride);
        Token(u1, u5, u9, y + stride, stride);
        Token(u2, u6, u10, y + 2 * stride, stride);
        Token(u3, u7, u11, y + 3 * stride, stride);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Quad(Vector256<float> a, Vector256<float> b, Vector256<float> c, Vector256<float> d,
            out Vector256<float> j0, out Vector256<float> j1, out Vector256<float> j2, out Vector256<float> j3)
        {
            var ab0 = Avx.UnpackLow(a, b).AsDouble();
            var ab1 = Avx.UnpackHigh(a, b).AsDouble();
            var cd0 = Avx.UnpackLow(c, d).AsDouble();
            var cd1 = Avx.UnpackHigh(c, d).AsDouble();
            j0 = Avx.UnpackLow(ab0, cd0).AsSingle();
            j1 = Avx.UnpackHigh(ab0, cd0).AsSingle();
            j2 = Avx.UnpackLow(ab1, cd1).AsSingle();
            j3 = Avx.UnpackHigh(ab1, cd1).AsSingle();
        }

        // Tokens j (at y) and j + 4 (at y + 4·stride) from rows 0–3, 4–7 and 8–11.
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void Token(Vector256<float> low, Vector256<float> middle, Vector256<float> high, float* y, nint stride)
        {
            Avx.Permute2x128(low, middle, 0x20).Store(y);
            high.GetLower().Store(y + 8);
            Avx.Permute2x128(low, middle, 0x31).Store(y + 4 * stride);
            high.GetUpper().Store(y + 4 * stride + 8);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte* Row(byte* w, nint rowBytes, int rows, int i) => w + (i < rows ? i : 0) * rowBytes;

    /// <summary>The first <paramref name="count"/> lanes (tokens) of one row's sums, <paramref name="stride"/> apart.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector256<float> sums, float* destination, nint stride, int count)
    {
        for (int i = 0; i < count; i++) destination[i * stride] = sums.GetElement(i);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(Vector512<float> sums, float* destination, nint stride, int count)
    {
        for (int i = 0; i < count; i++) destination[i * stride] = sums.GetElement(i);
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
