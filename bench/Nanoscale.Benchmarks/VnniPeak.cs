using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Benchmarks;

/// <summary>
/// <c>-- vnni-peak [threads]</c>: the most int8 multiply-adds a second this machine's AVX-VNNI instruction
/// (<c>vpdpbusd</c> on 256-bit vectors, the one the lane kernels use) gives: eight independent accumulators, operands in
/// registers, nothing else in the loop. The ceiling a many-sequence step's products can approach, to compare with
/// <c>dot-kernels FORMAT rows cols threads 16</c>. Then the same for float32 multiply-adds on 512-bit vectors (ten
/// accumulators, <c>vfmadd231ps zmm</c>), the ceiling of the BF16 and float kernels. Without VNNI (AVX2), the lane
/// kernel's <c>vpmaddubsw</c>/<c>vpmaddwd</c> mix and Q8_0's sign-trick chain per block instead.
/// </summary>
internal static class VnniPeak
{
    public static int Run(string[] args)
    {
        int threads = args.Length > 0 ? int.Parse(args[0]) : 1;
        if (Avx2.IsSupported)
        {
            double widened = Best(threads, i => WidenedLoop(i), 16 * 32);
            Console.WriteLine($"vpmaddubsw + vpmaddwd ymm (four words a widening, as the lane kernel without VNNI), {threads} thread(s): " +
                              $"{widened / 1e9:0.0} G int8 multiply-adds/s");
            double pair = Best(threads, i => PairLoop(i, false), 32 * 32);
            Console.WriteLine($"the same in the lane kernel's pair loop (two eights of rows × two vectors a word; codes loaded and activation " +
                              $"words broadcast from the first-level cache), {threads} thread(s): {pair / 1e9:0.0} G int8 multiply-adds/s");
            double scaled = Best(threads, i => PairLoop(i, true), 32 * 32);
            Console.WriteLine($"  and each block's totals converted and multiply-added into float sums: {scaled / 1e9:0.0} G int8 multiply-adds/s");
            double signed = Best(threads, i => SignTrickLoop(i), 8 * 32);
            Console.WriteLine($"vpsignb + vpmaddubsw + vpmaddwd + convert + FMA ymm (Q8_0's sign trick per block, Int8Dot.RowsMany), {threads} thread(s): " +
                              $"{signed / 1e9:0.0} G int8 multiply-adds/s ({signed / 32 / 1e9 / threads:0.00} G blocks a thread)");
        }
        if (!AvxVnni.IsSupported)
        {
            Console.Error.WriteLine("this machine has no AVX-VNNI");
            return 0;
        }
        double best = Best(threads, i => Loop(i), 8 * 32);
        Console.WriteLine($"vpdpbusd ymm, {threads} thread(s): {best / 1e9:0.0} G int8 multiply-adds/s " +
                          $"({best / 32 / 1e9 / threads:0.00} G instructions/s a thread)");
        if (!Vector512.IsHardwareAccelerated) return 0;
        best = Best(threads, i => FloatLoop(i), 10 * 16);
        Console.WriteLine($"vfmadd231ps zmm, {threads} thread(s): {best / 1e9:0.0} G float32 multiply-adds/s " +
                          $"({best / 16 / 1e9 / threads:0.00} G instructions/s a thread)");
        return 0;
    }

    /// <summary>The best of five rounds of <paramref name="loop"/> on every thread, in multiply-adds a second
    /// (<paramref name="perIteration"/> of them an iteration), after a short run that compiles and warms it.</summary>
    private static double Best<T>(int threads, Func<long, T> loop, long perIteration)
    {
        const long Iterations = 50_000_000;
        loop(1000);
        double best = 0;
        for (int round = 0; round < 5; round++)
        {
            var clock = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ => loop(Iterations));
            best = Math.Max(best, threads * Iterations * perIteration / clock.Elapsed.TotalSeconds);
        }
        return best;
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float FloatLoop(long iterations)
    {
        var m = Vector512.Create(0.999f);
        var c = Vector512.Create(0.001f);
        Vector512<float> a0 = Vector512<float>.One, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector512.FusedMultiplyAdd(a0, m, c);
            a1 = Vector512.FusedMultiplyAdd(a1, m, c);
            a2 = Vector512.FusedMultiplyAdd(a2, m, c);
            a3 = Vector512.FusedMultiplyAdd(a3, m, c);
            a4 = Vector512.FusedMultiplyAdd(a4, m, c);
            a5 = Vector512.FusedMultiplyAdd(a5, m, c);
            a6 = Vector512.FusedMultiplyAdd(a6, m, c);
            a7 = Vector512.FusedMultiplyAdd(a7, m, c);
            a8 = Vector512.FusedMultiplyAdd(a8, m, c);
            a9 = Vector512.FusedMultiplyAdd(a9, m, c);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9);
    }

    /// <summary>The lane kernel's arithmetic without VNNI: four chains, each four <c>vpmaddubsw</c> summed in int16, one
    /// <c>vpmaddwd</c> and an int32 add (16 distinct operand pairs an iteration, so nothing is computed once for all).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int WidenedLoop(long iterations)
    {
        Vector256<byte> w0 = Vector256.Create((byte)3), w1 = Vector256.Create((byte)5), w2 = Vector256.Create((byte)7), w3 = Vector256.Create((byte)9);
        Vector256<sbyte> a0 = Vector256.Create((sbyte)-2), a1 = Vector256.Create((sbyte)1), a2 = Vector256.Create((sbyte)4), a3 = Vector256.Create((sbyte)-3);
        var ones = Vector256.Create((short)1);
        Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default;
        for (long i = 0; i < iterations; i++)
        {
            s0 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(w0, a0) + Avx2.MultiplyAddAdjacent(w1, a1) + (Avx2.MultiplyAddAdjacent(w2, a2) + Avx2.MultiplyAddAdjacent(w3, a3)), ones);
            s1 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(w0, a1) + Avx2.MultiplyAddAdjacent(w1, a2) + (Avx2.MultiplyAddAdjacent(w2, a3) + Avx2.MultiplyAddAdjacent(w3, a0)), ones);
            s2 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(w0, a2) + Avx2.MultiplyAddAdjacent(w1, a3) + (Avx2.MultiplyAddAdjacent(w2, a0) + Avx2.MultiplyAddAdjacent(w3, a1)), ones);
            s3 += Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(w0, a3) + Avx2.MultiplyAddAdjacent(w1, a0) + (Avx2.MultiplyAddAdjacent(w2, a1) + Avx2.MultiplyAddAdjacent(w3, a2)), ones);
            (a0, a1, a2, a3) = (a1, a2, a3, a0); // not loop-invariant, so not hoisted (register moves, nearly free)
        }
        return Vector256.Sum(s0 + s1 + s2 + s3);
    }

    /// <summary>
    /// What <c>NibbleLanes.Widened</c> does for a block, two vectors and sixteen rows, with nothing around it: per word
    /// two rows' eights of unpacked codes loaded and two vectors' activation words broadcast from memory, four
    /// <c>vpmaddubsw</c> into int16 sums widened every four words; with <paramref name="epilogue"/> each block's four
    /// totals converted and multiply-added into float sums in memory (the kernel's accumulators). The ceiling of the
    /// kernel's loop as written, beside the bare instructions' (<see cref="WidenedLoop"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static unsafe int PairLoop(long iterations, bool epilogue)
    {
        var codes = GC.AllocateArray<Vector256<byte>>(16, pinned: true);
        var xs = GC.AllocateArray<int>(16 * 8, pinned: true);
        var ys = GC.AllocateArray<Vector256<float>>(32, pinned: true);
        for (int i = 0; i < 16; i++) codes[i] = Vector256.Create((byte)(3 + i));
        for (int i = 0; i < xs.Length; i++) xs[i] = i * 0x01010101;
        fixed (Vector256<byte>* c = codes)
        fixed (int* x = xs)
        fixed (Vector256<float>* y = ys)
        {
            var ones = Vector256.Create((short)1);
            var f = Vector256.Create(0.5f);
            Vector256<int> total = default;
            for (long i = 0; i < iterations; i++)
            {
                int* x0 = x + (i & 7) * 16, x1 = x0 + 8;
                Vector256<byte>* wa = c, wb = c + 8;
                Vector256<int> sa0 = default, sb0 = default, sa1 = default, sb1 = default;
                for (int half = 0; half < 2; half++)
                {
                    Vector256<short> ta0 = default, tb0 = default, ta1 = default, tb1 = default;
                    for (int m = 4 * half; m < 4 * half + 4; m++)
                    {
                        var a = wa[m];
                        var b = wb[m];
                        var u = Vector256.Create(x0[m]).AsSByte();
                        var w = Vector256.Create(x1[m]).AsSByte();
                        ta0 += Avx2.MultiplyAddAdjacent(a, u);
                        tb0 += Avx2.MultiplyAddAdjacent(b, u);
                        ta1 += Avx2.MultiplyAddAdjacent(a, w);
                        tb1 += Avx2.MultiplyAddAdjacent(b, w);
                    }
                    sa0 += Avx2.MultiplyAddAdjacent(ta0, ones);
                    sb0 += Avx2.MultiplyAddAdjacent(tb0, ones);
                    sa1 += Avx2.MultiplyAddAdjacent(ta1, ones);
                    sb1 += Avx2.MultiplyAddAdjacent(tb1, ones);
                }
                if (epilogue)
                {
                    var scale0 = Vector256.Create(*(float*)(x0 + 3));
                    var scale1 = Vector256.Create(*(float*)(x1 + 3));
                    nint v = (nint)(i & 15);
                    y[v] = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sa0), f * scale0, y[v]);
                    y[16 + v] = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sb0), f * scale0, y[16 + v]);
                    y[v + 1] = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sa1), f * scale1, y[v + 1]);
                    y[17 + v] = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sb1), f * scale1, y[17 + v]);
                }
                else total += sa0 + sb0 + sa1 + sb1;
            }
            return Vector256.Sum(total) + (int)Vector256.Sum(y[0]);
        }
    }

    /// <summary>Eight independent chains of what <c>Int8Dot.RowsMany</c> does per block and output: the sign trick on
    /// |w| and sign(x, w), the int16 pairs widened, converted and multiply-added with a scale (operands rotate, so nothing
    /// is computed once for all).</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static float SignTrickLoop(long iterations)
    {
        Vector256<sbyte> w0 = Vector256.Create((sbyte)-3), w1 = Vector256.Create((sbyte)5);
        Vector256<byte> m0 = Avx2.Abs(w0), m1 = Avx2.Abs(w1);
        Vector256<sbyte> a0 = Vector256.Create((sbyte)-2), a1 = Vector256.Create((sbyte)1), a2 = Vector256.Create((sbyte)4), a3 = Vector256.Create((sbyte)-3);
        var ones = Vector256.Create((short)1);
        var c = Vector256.Create(0.5f);
        Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
        for (long i = 0; i < iterations; i++)
        {
            s0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(m0, Avx2.Sign(a0, w0)), ones)), c, s0);
            s1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(m0, Avx2.Sign(a1, w0)), ones)), c, s1);
            s2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(m0, Avx2.Sign(a2, w0)), ones)), c, s2);
            s3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(m0, Avx2.Sign(a3, w0)), ones)), c, s3);
            s4 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(m1, Avx2.Sign(a0, w1)), ones)), c, s4);
            s5 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(m1, Avx2.Sign(a1, w1)), ones)), c, s5);
            s6 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(m1, Avx2.Sign(a2, w1)), ones)), c, s6);
            s7 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(m1, Avx2.Sign(a3, w1)), ones)), c, s7);
            (a0, a1, a2, a3) = (a1, a2, a3, a0); // not loop-invariant, so not hoisted
        }
        return Vector256.Sum(s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7);
    }

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    private static int Loop(long iterations)
    {
        var w = Vector256.Create((byte)3);
        var a = Vector256.Create((sbyte)-2);
        Vector256<int> s0 = default, s1 = default, s2 = default, s3 = default, s4 = default, s5 = default, s6 = default, s7 = default;
        for (long i = 0; i < iterations; i++)
        {
            s0 = AvxVnni.MultiplyWideningAndAdd(s0, w, a);
            s1 = AvxVnni.MultiplyWideningAndAdd(s1, w, a);
            s2 = AvxVnni.MultiplyWideningAndAdd(s2, w, a);
            s3 = AvxVnni.MultiplyWideningAndAdd(s3, w, a);
            s4 = AvxVnni.MultiplyWideningAndAdd(s4, w, a);
            s5 = AvxVnni.MultiplyWideningAndAdd(s5, w, a);
            s6 = AvxVnni.MultiplyWideningAndAdd(s6, w, a);
            s7 = AvxVnni.MultiplyWideningAndAdd(s7, w, a);
        }
        return Vector256.Sum(s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7);
    }
}
