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

    /// <summary>Whether <see cref="AttendRow"/> takes heads of this width (whole 256-bit vectors, with AVX2 and FMA).</summary>
    public static bool AttendRowApplies(int headDim) =>
        headDim % 8 == 0 && System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported;

    /// <summary>
    /// One query row's attention over the first <c>scores.Length</c> cached positions of one head: scores
    /// <c>q·k_p × scale</c>, softmax, then <c>o = Σ_p a_p·v_p</c> — what the generic loops of
    /// <c>InferenceSession.Attend</c> compute, without a library call per position: the scores' products in one
    /// register per position, and <paramref name="output"/> kept in registers 32 floats at a time across all positions.
    /// Equal to the generic loops up to float summation order (<c>KernelsTests</c>).
    /// </summary>
    public static void AttendRow(ReadOnlySpan<float> query, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int stride, int offset,
        float scale, Span<float> scores, Span<float> output) =>
        AttendRow<FloatRows, float>(query, keys, values, stride, offset, scale, scores, output);

    /// <summary><see cref="AttendRow(ReadOnlySpan{float}, ReadOnlySpan{float}, ReadOnlySpan{float}, int, int, float, Span{float}, Span{float})"/>
    /// over a 16-bit cache (IEEE halves, or bfloat16 with <paramref name="bfloat16"/>), each group of eight numbers
    /// widened exactly to float32 as it is read: the same operations on the same floats as widening the rows first.</summary>
    public static void AttendRowHalves(ReadOnlySpan<float> query, ReadOnlySpan<ushort> keys, ReadOnlySpan<ushort> values, bool bfloat16, int stride,
        int offset, float scale, Span<float> scores, Span<float> output)
    {
        if (bfloat16) AttendRow<BFloat16Rows, ushort>(query, keys, values, stride, offset, scale, scores, output);
        else AttendRow<HalfRows, ushort>(query, keys, values, stride, offset, scale, scores, output);
    }

    /// <summary>How a cache's numbers become eight floats.</summary>
    private interface IRows<T>
    {
        static abstract Vector256<float> Load(ref T source, nuint index);
    }

    private readonly struct FloatRows : IRows<float>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(ref float source, nuint index) => Vector256.LoadUnsafe(ref source, index);
    }

    private readonly struct BFloat16Rows : IRows<ushort>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(ref ushort source, nuint index) =>
            System.Runtime.Intrinsics.X86.Avx2.ShiftLeftLogical(
                System.Runtime.Intrinsics.X86.Avx2.ConvertToVector256Int32(Vector128.LoadUnsafe(ref source, index)), 16).AsSingle();
    }

    private readonly struct HalfRows : IRows<ushort>
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Load(ref ushort source, nuint index) => Tensors.TensorData.WidenHalf(Vector128.LoadUnsafe(ref source, index));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once: a prompt pass alone may call it too rarely to leave tier 0
    private static void AttendRow<TRows, T>(ReadOnlySpan<float> query, ReadOnlySpan<T> keys, ReadOnlySpan<T> values, int stride, int offset,
        float scale, Span<float> scores, Span<float> output) where TRows : struct, IRows<T>
    {
        int headDim = query.Length, positions = scores.Length;
        if (!AttendRowApplies(headDim) || (long)(positions - 1) * stride + offset + headDim > Math.Min(keys.Length, values.Length) || output.Length < headDim)
            throw new ArgumentException("spans shorter than the positions or heads not whole vectors");
        ref float q = ref MemoryMarshal.GetReference(query);
        ref T k0 = ref MemoryMarshal.GetReference(keys);
        for (int p = 0; p < positions; p++)
        {
            ref T k = ref Unsafe.Add(ref k0, p * stride + offset);
            var acc = Vector256<float>.Zero;
            for (int d = 0; d < headDim; d += 8)
                acc = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(Vector256.LoadUnsafe(ref q, (nuint)d), TRows.Load(ref k, (nuint)d), acc);
            scores[p] = Vector256.Sum(acc) * scale;
        }
        Softmax(scores);
        ref T v0 = ref MemoryMarshal.GetReference(values);
        ref float o = ref MemoryMarshal.GetReference(output);
        int d0 = 0;
        for (; d0 + 32 <= headDim; d0 += 32)
        {
            Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
            for (int p = 0; p < positions; p++)
            {
                ref T v = ref Unsafe.Add(ref v0, p * stride + offset + d0);
                var w = Vector256.Create(scores[p]);
                a0 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(TRows.Load(ref v, 0), w, a0);
                a1 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(TRows.Load(ref v, 8), w, a1);
                a2 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(TRows.Load(ref v, 16), w, a2);
                a3 = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(TRows.Load(ref v, 24), w, a3);
            }
            a0.StoreUnsafe(ref o, (nuint)d0);
            a1.StoreUnsafe(ref o, (nuint)(d0 + 8));
            a2.StoreUnsafe(ref o, (nuint)(d0 + 16));
            a3.StoreUnsafe(ref o, (nuint)(d0 + 24));
        }
        for (; d0 < headDim; d0 += 8)
        {
            var a = Vector256<float>.Zero;
            for (int p = 0; p < positions; p++)
                a = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(TRows.Load(ref Unsafe.Add(ref v0, p * stride + offset + d0), 0), Vector256.Create(scores[p]), a);
            a.StoreUnsafe(ref o, (nuint)d0);
        }
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
    /// −log softmax(logits)[target], computed stably: max-shifted, exponentials summed in double.
    /// </summary>
    public static double NegativeLogLikelihood(ReadOnlySpan<float> logits, int target)
    {
        float max = TensorPrimitives.Max(logits);
        double sum = 0;
        for (int i = 0; i < logits.Length; i++) sum += Math.Exp(logits[i] - max);
        return Math.Log(sum) - (logits[target] - (double)max);
    }

    public static int ArgMax(ReadOnlySpan<float> x) => TensorPrimitives.IndexOfMax(x);
}
