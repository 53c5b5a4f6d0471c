using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Numerics.Tensors;

namespace Nanoscale.Runtime;

/// <summary>The element-wise pieces of the forward pass (llama2.c run.c semantics).</summary>
internal static class Kernels
{
    /// <summary>o = w ⊙ x / sqrt(mean(x²) + eps).</summary>
    public static void RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> destination)
    {
        float meanSquare = TensorPrimitives.SumOfSquares(x) / x.Length;
        float inverse = 1f / MathF.Sqrt(meanSquare + eps);
        TensorPrimitives.Multiply(x, inverse, destination);
        TensorPrimitives.Multiply(destination, weight, destination);
    }

    /// <summary>In-place softmax, shifted by the maximum for stability.</summary>
    public static void Softmax(Span<float> x)
    {
        float max = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, max, x);
        TensorPrimitives.Exp(x, x);
        float sum = TensorPrimitives.Sum(x);
        TensorPrimitives.Multiply(x, 1f / sum, x);
    }

    /// <summary>Whether <see cref="AttendRows(ReadOnlySpan{float}, int, KvRows, KvRows, int, int, float, Span{float}, Span{float}, KvRows?, KvRows?, int)"/> takes heads of this width (whole 256-bit vectors, with AVX2 and FMA).</summary>
    public static bool AttendRowApplies(int headDim) =>
        headDim % 8 == 0 && System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported;

    /// <summary>
    /// One query row's attention over the first <c>scores.Length</c> cached positions of one head: scores
    /// <c>q·k_p × scale</c>, softmax, then <c>o = Σ_p a_p·v_p</c> — what the generic loops of
    /// <c>InferenceSession.Attend</c> compute, without a library call per position. <see cref="AttendRows"/> with one head.
    /// </summary>
    public static unsafe void AttendRow(ReadOnlySpan<float> query, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int stride, int offset,
        float scale, Span<float> scores, Span<float> output)
    {
        CheckRows(query.Length, 1, keys.Length, values.Length, stride, offset, scores.Length, output.Length);
        fixed (float* k = keys)
        fixed (float* v = values)
            AttendRows(query, 1, default(FloatRows), default(FloatRows), 0, new FloatRows(k), new FloatRows(v), stride, offset, scale, scores, output);
    }

    /// <summary><see cref="AttendRows"/> with one head (the form the tests compare with the generic loops).</summary>
    public static void AttendRow(ReadOnlySpan<float> query, KvRows keys, KvRows values, int stride, int offset,
        float scale, Span<float> scores, Span<float> output) =>
        AttendRows(query, 1, keys, values, stride, offset, scale, scores, output);

    /// <summary>
    /// The attention of <paramref name="heads"/> query heads that share one cached key/value head (grouped-query
    /// attention: <paramref name="queries"/> holds them one after another, <c>headDim</c> floats each; the scores are
    /// <c>heads × positions</c>, the outputs <c>heads × headDim</c>) over the first <c>positions</c> cached rows, the
    /// cache in any <see cref="KvCacheType"/>, each group of eight numbers widened to floats as it is read exactly as
    /// <see cref="KvRows.Widen"/> widens them (so the same operations on the same floats as widening the rows first;
    /// <c>KvCacheTests</c>). Eight positions' scores at a time, each in its own register and the eight summed across
    /// by one tree of horizontal adds (a chain of dependent multiply-adds and a horizontal sum per position was the
    /// step's slowest part at 16 sequences); the heads of a group read each block of eight rows while it is in the
    /// first-level cache. Equal to the generic loops up to float summation order (<c>KernelsTests</c>).
    /// With <paramref name="prefixKeys"/> and <paramref name="prefixValues"/> (a shared beginning, <see cref="KvPrefix"/>:
    /// rows of the same type), positions 0..<paramref name="split"/> are read from them and the later ones from
    /// <paramref name="keys"/> and <paramref name="values"/>, whose first row is position <paramref name="split"/>; with
    /// a split that is a multiple of eight, the same operations on the same numbers as one contiguous cache.
    /// </summary>
    public static unsafe void AttendRows(ReadOnlySpan<float> queries, int heads, KvRows keys, KvRows values, int stride, int offset,
        float scale, Span<float> scores, Span<float> output, KvRows? prefixKeys = null, KvRows? prefixValues = null, int split = 0)
    {
        if (heads <= 0 || queries.Length % heads != 0 || scores.Length % heads != 0)
            throw new ArgumentException($"{queries.Length} query numbers and {scores.Length} scores are not {heads} heads' worth");
        int positions = scores.Length / heads;
        if (split < 0 || split >= positions || (split > 0) != (prefixKeys is not null && prefixValues is not null))
            throw new ArgumentException($"a shared beginning of {split} positions for {positions} positions, its rows {(prefixKeys is null ? "missing" : "given")}");
        CheckRows(queries.Length / heads, heads, keys.Length, values.Length, stride, offset, positions - split, output.Length);
        if (split > 0) CheckRows(queries.Length / heads, heads, prefixKeys!.Length, prefixValues!.Length, stride, offset, split, output.Length);
        KvRows pk = prefixKeys ?? keys, pv = prefixValues ?? values;
        if (pk.GetType() != keys.GetType() || pv.GetType() != values.GetType())
            throw new ArgumentException("a shared beginning's rows of another cache type");
        switch ((keys, values))
        {
            case (FloatKvRows k, FloatKvRows v):
                fixed (float* kp = k.Data, vp = v.Data, pkp = ((FloatKvRows)pk).Data, pvp = ((FloatKvRows)pv).Data)
                    AttendRows(queries, heads, new FloatRows(pkp), new FloatRows(pvp), split, new FloatRows(kp), new FloatRows(vp), stride, offset, scale, scores, output);
                break;
            case (HalfKvRows k, HalfKvRows v) when k.BFloat16 == v.BFloat16 && ((HalfKvRows)pk).BFloat16 == k.BFloat16 && ((HalfKvRows)pv).BFloat16 == k.BFloat16:
                fixed (ushort* kp = k.Data, vp = v.Data, pkp = ((HalfKvRows)pk).Data, pvp = ((HalfKvRows)pv).Data)
                {
                    if (k.BFloat16)
                        AttendRows(queries, heads, new BFloat16Rows(pkp), new BFloat16Rows(pvp), split, new BFloat16Rows(kp), new BFloat16Rows(vp), stride, offset, scale, scores, output);
                    else AttendRows(queries, heads, new HalfRows(pkp), new HalfRows(pvp), split, new HalfRows(kp), new HalfRows(vp), stride, offset, scale, scores, output);
                }
                break;
            case (Q8KvRows k, Q8KvRows v) when offset % 8 == 0 && stride % 8 == 0:
                fixed (sbyte* kc = k.Codes, vc = v.Codes, pkc = ((Q8KvRows)pk).Codes, pvc = ((Q8KvRows)pv).Codes)
                fixed (float* ks = k.Scales, vs = v.Scales, pks = ((Q8KvRows)pk).Scales, pvs = ((Q8KvRows)pv).Scales)
                    AttendRows(queries, heads, new Q8Rows(pkc, pks), new Q8Rows(pvc, pvs), split, new Q8Rows(kc, ks), new Q8Rows(vc, vs), stride, offset, scale, scores, output);
                break;
            case (Q4KvRows k, Q4KvRows v) when offset % 8 == 0 && stride % 8 == 0:
                fixed (byte* kc = k.Codes, vc = v.Codes, pkc = ((Q4KvRows)pk).Codes, pvc = ((Q4KvRows)pv).Codes)
                fixed (float* ks = k.Scales, vs = v.Scales, pks = ((Q4KvRows)pk).Scales, pvs = ((Q4KvRows)pv).Scales)
                    AttendRows(queries, heads, new Q4Rows(pkc, pks), new Q4Rows(pvc, pvs), split, new Q4Rows(kc, ks), new Q4Rows(vc, vs), stride, offset, scale, scores, output);
                break;
            default:
                throw new ArgumentException("keys and values of different cache types, or q8/q4 rows not in whole groups of eight");
        }
    }

    private static void CheckRows(int headDim, int heads, long keys, long values, int stride, int offset, int positions, int output)
    {
        if (!AttendRowApplies(headDim) || (long)(positions - 1) * stride + offset + headDim > Math.Min(keys, values) || output < (long)heads * headDim)
            throw new ArgumentException("spans shorter than the positions or heads not whole vectors");
    }

    /// <summary>How a cache's numbers at an index become eight floats.</summary>
    private interface IRows
    {
        Vector256<float> Load(nint index);

        /// <summary>Sixteen numbers from <paramref name="index"/> (a multiple of eight for the block types): the floats of
        /// two <see cref="Load"/>s. Each type spells it out (a default body would box the struct on every call).</summary>
        Vector512<float> Load512(nint index);

        /// <summary>Asks for the cache line that holds number <paramref name="index"/> (a hint: never faults).</summary>
        void Prefetch(nint index);

        /// <summary>Numbers per 64-byte cache line.</summary>
        int LineNumbers { get; }
    }

    private readonly unsafe struct FloatRows(float* data) : IRows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<float> Load(nint index) => Vector256.Load(data + index);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector512<float> Load512(nint index) => Vector512.Load(data + index);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Prefetch(nint index) => System.Runtime.Intrinsics.X86.Sse.Prefetch0(data + index);

        public int LineNumbers => 16;
    }

    private readonly unsafe struct BFloat16Rows(ushort* data) : IRows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<float> Load(nint index) =>
            System.Runtime.Intrinsics.X86.Avx2.ShiftLeftLogical(System.Runtime.Intrinsics.X86.Avx2.ConvertToVector256Int32(Vector128.Load(data + index)), 16).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector512<float> Load512(nint index) => Vector512.Create(Load(index), Load(index + 8));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Prefetch(nint index) => System.Runtime.Intrinsics.X86.Sse.Prefetch0(data + index);

        public int LineNumbers => 32;
    }

    private readonly unsafe struct HalfRows(ushort* data) : IRows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<float> Load(nint index) => Tensors.TensorData.WidenHalf(Vector128.Load(data + index));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector512<float> Load512(nint index) => Vector512.Create(Load(index), Load(index + 8));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Prefetch(nint index) => System.Runtime.Intrinsics.X86.Sse.Prefetch0(data + index);

        public int LineNumbers => 32;
    }

    /// <summary>Eight int8 codes (index a multiple of eight), as <see cref="Q8KvRows.WidenEight"/> widens them.</summary>
    private readonly unsafe struct Q8Rows(sbyte* codes, float* scales) : IRows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<float> Load(nint index) => Q8KvRows.WidenEight(codes, scales, index);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector512<float> Load512(nint index) => Vector512.Create(Load(index), Load(index + 8));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Prefetch(nint index) => System.Runtime.Intrinsics.X86.Sse.Prefetch0(codes + index);

        public int LineNumbers => 64;
    }

    /// <summary>Eight numbers of a q4 block (index a multiple of eight), as <see cref="Q4KvRows.WidenEight"/> widens them.</summary>
    private readonly unsafe struct Q4Rows(byte* codes, float* scales) : IRows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector256<float> Load(nint index) => Q4KvRows.WidenEight(codes, scales, index);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public Vector512<float> Load512(nint index) => Vector512.Create(Load(index), Load(index + 8));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Prefetch(nint index) => System.Runtime.Intrinsics.X86.Sse.Prefetch0(codes + index / 2);

        public int LineNumbers => 128;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once: a prompt pass alone may call it too rarely to leave tier 0
    private static unsafe void AttendRows<TRows>(ReadOnlySpan<float> queries, int heads, TRows prefixKeys, TRows prefixValues, int split,
        TRows ownKeys, TRows ownValues, int stride, int offset, float scale, Span<float> allScores, Span<float> output) where TRows : struct, IRows
    {
        int headDim = queries.Length / heads, positions = allScores.Length / heads;
        bool wide = System.Runtime.Intrinsics.X86.Avx512F.IsSupported && headDim % 64 == 0;
        fixed (float* queryPointer = queries)
        fixed (float* scorePointer = allScores)
        {
            // Two runs of rows: the shared beginning's (positions 0..split) and the sequence's own (split..), each
            // indexed from its first row. With split a multiple of eight the groups of eight are those of one run.
            for (int run = split > 0 ? 0 : 1; run < 2; run++)
            {
                var (keys, values) = run == 0 ? (prefixKeys, prefixValues) : (ownKeys, ownValues);
                int from = run == 0 ? 0 : split, to = run == 0 ? split : positions;
                // The cache rows come from memory (a step's weights pass through the caches between two visits of a
                // sequence's layer). The call for a row's first head (offset 0) asks for whole rows — its keys two blocks
                // ahead, and this block's values for the weighted sum below — while its scores compute, so the calls for
                // the row's other heads, which come next, find their slices in the second-level cache and ask for nothing.
                int p = from, line = keys.LineNumbers, width = offset == 0 ? stride : 0;
                if (width > 0) PrefetchRows(keys, 0, Math.Min(to - from, PrefetchAhead), stride, width, line);
                for (; p + 8 <= to; p += 8)
                {
                    nint k = (nint)(p - from) * stride + offset;
                    if (width > 0)
                    {
                        if (p + PrefetchAhead + 8 <= to) PrefetchRows(keys, k + (nint)PrefetchAhead * stride, 8, stride, width, line);
                        PrefetchRows(values, k, 8, stride, width, line);
                    }
                    nint s1 = stride, s2 = 2 * s1, s3 = 3 * s1, s4 = 4 * s1, s5 = 5 * s1, s6 = 6 * s1, s7 = 7 * s1;
                    if (wide)
                    {
                        // Sixteen numbers of a head a register (half the loads and multiply-adds), each folded to eight
                        // before the same tree of horizontal adds.
                        for (int g = 0; g < heads; g++)
                        {
                            float* q = queryPointer + g * headDim;
                            Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
                            for (int d = 0; d < headDim; d += 16)
                            {
                                var x = Vector512.Load(q + d);
                                nint at = k + d;
                                a0 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(x, keys.Load512(at), a0);
                                a1 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(x, keys.Load512(at + s1), a1);
                                a2 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(x, keys.Load512(at + s2), a2);
                                a3 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(x, keys.Load512(at + s3), a3);
                                a4 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(x, keys.Load512(at + s4), a4);
                                a5 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(x, keys.Load512(at + s5), a5);
                                a6 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(x, keys.Load512(at + s6), a6);
                                a7 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(x, keys.Load512(at + s7), a7);
                            }
                            (SumEach(Fold(a0), Fold(a1), Fold(a2), Fold(a3), Fold(a4), Fold(a5), Fold(a6), Fold(a7)) * scale).Store(scorePointer + g * positions + p);
                        }
                        continue;
                    }
                    for (int g = 0; g < heads; g++)
                    {
                        float* q = queryPointer + g * headDim;
                        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
                        for (int d = 0; d < headDim; d += 8)
                        {
                            var x = Vector256.Load(q + d);
                            nint at = k + d;
                            a0 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(x, keys.Load(at), a0);
                            a1 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(x, keys.Load(at + s1), a1);
                            a2 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(x, keys.Load(at + s2), a2);
                            a3 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(x, keys.Load(at + s3), a3);
                            a4 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(x, keys.Load(at + s4), a4);
                            a5 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(x, keys.Load(at + s5), a5);
                            a6 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(x, keys.Load(at + s6), a6);
                            a7 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(x, keys.Load(at + s7), a7);
                        }
                        (SumEach(a0, a1, a2, a3, a4, a5, a6, a7) * scale).Store(scorePointer + g * positions + p);
                    }
                }
                for (; p < to; p++)
                {
                    nint k = (nint)(p - from) * stride + offset;
                    if (width > 0) PrefetchRows(values, k, 1, stride, width, line);
                    for (int g = 0; g < heads; g++)
                    {
                        float* q = queryPointer + g * headDim;
                        var acc = Vector256<float>.Zero;
                        for (int d = 0; d < headDim; d += 8)
                            acc = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(Vector256.Load(q + d), keys.Load(k + d), acc);
                        scorePointer[g * positions + p] = Vector256.Sum(acc) * scale;
                    }
                }
            }
        }
        if (wide)
        {
            for (int g = 0; g < heads; g++) Softmax(allScores.Slice(g * positions, positions));
            fixed (float* scorePointer = allScores)
            fixed (float* outputPointer = output)
                for (int g = 0; g < heads; g += 2)
                    for (int d0 = 0; d0 < headDim; d0 += 64)
                        WeightedSumPair(prefixValues, ownValues, split, positions, stride, offset + d0, scorePointer + g * positions,
                            g + 1 < heads ? scorePointer + (g + 1) * positions : null, outputPointer + g * headDim + d0,
                            g + 1 < heads ? outputPointer + (g + 1) * headDim + d0 : null);
            return;
        }
        for (int g = 0; g < heads; g++)
        {
            Span<float> scores = allScores.Slice(g * positions, positions);
            Softmax(scores);
            ref float o = ref MemoryMarshal.GetReference(output.Slice(g * headDim, headDim));
            // 64 numbers of the output in eight registers across all positions (heads of 64 and 128 in whole passes);
            // what is left of a head, eight at a time.
            int d0 = 0;
            for (; d0 + 64 <= headDim; d0 += 64)
            {
                Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default, a4 = default, a5 = default, a6 = default, a7 = default;
                // The shared beginning's rows, then the own ones, into the same sums (the order of one contiguous cache).
                for (int run = split > 0 ? 0 : 1; run < 2; run++)
                {
                    var values = run == 0 ? prefixValues : ownValues;
                    for (int p = run == 0 ? 0 : split, from = p, to = run == 0 ? split : positions; p < to; p++)
                    {
                        nint v = (nint)(p - from) * stride + offset + d0;
                        var w = Vector256.Create(scores[p]);
                        a0 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(values.Load(v), w, a0);
                        a1 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(values.Load(v + 8), w, a1);
                        a2 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(values.Load(v + 16), w, a2);
                        a3 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(values.Load(v + 24), w, a3);
                        a4 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(values.Load(v + 32), w, a4);
                        a5 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(values.Load(v + 40), w, a5);
                        a6 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(values.Load(v + 48), w, a6);
                        a7 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(values.Load(v + 56), w, a7);
                    }
                }
                a0.StoreUnsafe(ref o, (nuint)d0);
                a1.StoreUnsafe(ref o, (nuint)(d0 + 8));
                a2.StoreUnsafe(ref o, (nuint)(d0 + 16));
                a3.StoreUnsafe(ref o, (nuint)(d0 + 24));
                a4.StoreUnsafe(ref o, (nuint)(d0 + 32));
                a5.StoreUnsafe(ref o, (nuint)(d0 + 40));
                a6.StoreUnsafe(ref o, (nuint)(d0 + 48));
                a7.StoreUnsafe(ref o, (nuint)(d0 + 56));
            }
            for (; d0 < headDim; d0 += 8)
            {
                var a = Vector256<float>.Zero;
                for (int p = 0; p < split; p++)
                    a = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(prefixValues.Load((nint)p * stride + offset + d0), Vector256.Create(scores[p]), a);
                for (int p = split; p < positions; p++)
                    a = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(ownValues.Load((nint)(p - split) * stride + offset + d0), Vector256.Create(scores[p]), a);
                a.StoreUnsafe(ref o, (nuint)d0);
            }
        }
    }

    /// <summary>
    /// Σ_p a_p·v_p of two query heads at once (<paramref name="scoresB"/> and <paramref name="outputB"/> null: one),
    /// 64 numbers of each (from <paramref name="offset"/>) in four 512-bit registers a head: each position's value row
    /// read once for both heads, eight independent chains of multiply-adds. Each output number is still one chain over
    /// the positions in order (the shared beginning's, then the own), from 0, so the same bits as the 256-bit loop of
    /// one head at a time, which read every value row once per head (a quarter of a 16-sequence step's attention; the
    /// twenty-ninth session).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe void WeightedSumPair<TRows>(TRows prefixValues, TRows ownValues, int split, int positions, int stride, int offset,
        float* scoresA, float* scoresB, float* outputA, float* outputB) where TRows : struct, IRows
    {
        bool pair = scoresB != null;
        if (!pair) scoresB = scoresA;
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default, b0 = default, b1 = default, b2 = default, b3 = default;
        for (int run = split > 0 ? 0 : 1; run < 2; run++)
        {
            var values = run == 0 ? prefixValues : ownValues;
            for (int p = run == 0 ? 0 : split, from = p, to = run == 0 ? split : positions; p < to; p++)
            {
                nint v = (nint)(p - from) * stride + offset;
                var v0 = values.Load512(v);
                var v1 = values.Load512(v + 16);
                var v2 = values.Load512(v + 32);
                var v3 = values.Load512(v + 48);
                var wa = Vector512.Create(scoresA[p]);
                var wb = Vector512.Create(scoresB[p]);
                a0 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(v0, wa, a0);
                b0 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(v0, wb, b0);
                a1 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(v1, wa, a1);
                b1 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(v1, wb, b1);
                a2 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(v2, wa, a2);
                b2 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(v2, wb, b2);
                a3 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(v3, wa, a3);
                b3 = System.Runtime.Intrinsics.X86.Avx512F.FusedMultiplyAdd(v3, wb, b3);
            }
        }
        a0.Store(outputA);
        a1.Store(outputA + 16);
        a2.Store(outputA + 32);
        a3.Store(outputA + 48);
        if (!pair) return;
        b0.Store(outputB);
        b1.Store(outputB + 16);
        b2.Store(outputB + 32);
        b3.Store(outputB + 48);
    }

    /// <summary>Positions ahead of the score loop whose keys <see cref="AttendRows{TRows}"/> asks for.</summary>
    private const int PrefetchAhead = 16;

    /// <summary>Asks for <paramref name="count"/> rows' <paramref name="width"/> numbers from <paramref name="first"/> on,
    /// <paramref name="stride"/> apart, a cache line (<paramref name="line"/> numbers) at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void PrefetchRows<TRows>(TRows rows, nint first, int count, nint stride, int width, int line) where TRows : struct, IRows
    {
        for (int r = 0; r < count; r++)
            for (int d = 0; d < width; d += line) rows.Prefetch(first + r * stride + d);
    }

    /// <summary>A 512-bit register's two halves added: lane i + lane i + 8.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Fold(Vector512<float> a) => a.GetLower() + a.GetUpper();

    /// <summary>The eight sums of eight vectors' lanes, in order: horizontal adds pair lanes within each 128-bit half
    /// (a0 a1 → a2 a3 … → one vector of each input's two half-sums), then the halves are added.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> SumEach(Vector256<float> a0, Vector256<float> a1, Vector256<float> a2, Vector256<float> a3,
        Vector256<float> a4, Vector256<float> a5, Vector256<float> a6, Vector256<float> a7)
    {
        var low = System.Runtime.Intrinsics.X86.Avx.HorizontalAdd(
            System.Runtime.Intrinsics.X86.Avx.HorizontalAdd(a0, a1), System.Runtime.Intrinsics.X86.Avx.HorizontalAdd(a2, a3));
        var high = System.Runtime.Intrinsics.X86.Avx.HorizontalAdd(
            System.Runtime.Intrinsics.X86.Avx.HorizontalAdd(a4, a5), System.Runtime.Intrinsics.X86.Avx.HorizontalAdd(a6, a7));
        return System.Runtime.Intrinsics.X86.Avx.Permute2x128(low, high, 0x20) + System.Runtime.Intrinsics.X86.Avx.Permute2x128(low, high, 0x31);
    }

    /// <summary>llama2.c / Meta RoPE: pair j is (2j, 2j + 1).</summary>
    public static void RopeInterleaved(Span<float> head, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        for (int j = 0; j < cos.Length; j++)
        {
            float v0 = head[2 * j], v1 = head[2 * j + 1];
            head[2 * j] = v0 * cos[j] - v1 * sin[j];
            head[2 * j + 1] = v0 * sin[j] + v1 * cos[j];
        }
    }

    /// <summary>Hugging Face RoPE (<c>rotate_half</c>): pair j is (j, j + headDim/2).</summary>
    public static void RopeHalves(Span<float> head, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        int half = cos.Length;
        for (int j = 0; j < half; j++)
        {
            float v0 = head[j], v1 = head[j + half];
            head[j] = v0 * cos[j] - v1 * sin[j];
            head[j + half] = v0 * sin[j] + v1 * cos[j];
        }
    }

    /// <summary>
    /// SwiGLU's gating in place: <c>gate[i] ← gate[i] / (1 + e^(−gate[i])) · up[i]</c> (SiLU of the gate times up),
    /// 256 at a time through TensorPrimitives' vectorised operations: the same float operations in the same order as
    /// <see cref="SwiGluReference"/> except the exponential, TensorPrimitives' instead of the C library's (they differ
    /// by an ulp at most, <c>KernelsTests.SwiGluEqualsItsReferenceTwin</c>). A step of 16 sequences of a SmolLM2-shaped
    /// model takes ~740,000 of them; one at a time through <c>expf</c> they were ~8% of the step.
    /// </summary>
    public static void SwiGlu(Span<float> gate, ReadOnlySpan<float> up)
    {
        if (up.Length < gate.Length) throw new ArgumentException($"{up.Length} up values for {gate.Length} gates", nameof(up));
        Span<float> e = stackalloc float[256];
        for (int i = 0; i < gate.Length; i += e.Length)
        {
            int n = Math.Min(e.Length, gate.Length - i);
            Span<float> g = gate.Slice(i, n), d = e[..n];
            TensorPrimitives.Negate(g, d);
            TensorPrimitives.Exp(d, d);
            TensorPrimitives.Add(d, 1f, d);
            TensorPrimitives.Divide(g, d, g);
            TensorPrimitives.Multiply(g, up.Slice(i, n), g);
        }
    }

    /// <summary>The element-by-element twin of <see cref="SwiGlu"/> (tests).</summary>
    public static void SwiGluReference(Span<float> gate, ReadOnlySpan<float> up)
    {
        for (int i = 0; i < gate.Length; i++)
        {
            float g = gate[i];
            gate[i] = g / (1f + MathF.Exp(-g)) * up[i];
        }
    }

    /// <summary>
    /// −log softmax(logits)[target], computed stably: max-shifted, exponentials summed in double.
    /// </summary>
    public static double NegativeLogLikelihood(ReadOnlySpan<float> logits, int target)
    {
        var sum = new LogSumExp();
        sum.Add(logits);
        return sum.NegativeLogLikelihood(logits[target]);
    }

    /// <summary>
    /// log Σ exp over a row's logits given a slice at a time (<see cref="Add"/>): the exponentials summed in double
    /// against the largest logit so far (the sum rescaled when a later slice holds a larger one). Given the whole row in
    /// one slice it is <see cref="Kernels.NegativeLogLikelihood(ReadOnlySpan{float}, int)"/>, which is built on it.
    /// </summary>
    public struct LogSumExp
    {
        private float _max;
        private double _sum;
        private bool _any;

        public void Add(ReadOnlySpan<float> logits)
        {
            if (logits.IsEmpty) return;
            float max = TensorPrimitives.Max(logits);
            if (!_any || max > _max)
            {
                if (_any) _sum *= Math.Exp((double)_max - max);
                _max = max;
                _any = true;
            }
            double sum = 0;
            for (int i = 0; i < logits.Length; i++) sum += Math.Exp(logits[i] - _max);
            _sum += sum;
        }

        /// <summary>−log softmax[target] from the target's logit: log Σ exp − logit.</summary>
        public readonly double NegativeLogLikelihood(float targetLogit) => Math.Log(_sum) - (targetLogit - (double)_max);
    }

    public static int ArgMax(ReadOnlySpan<float> x) => TensorPrimitives.IndexOfMax(x);
}
