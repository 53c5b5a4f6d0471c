using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Tensors;

/// <summary>Small in-register transposes shared by the kernels that lay activations or factors across lanes.</summary>
internal static unsafe class Transposes
{
    /// <summary>
    /// Rows <paramref name="r0"/>..<paramref name="r7"/> (eight floats each) as columns: column j (element j of every
    /// row, row order) goes to <c>destination + j·<paramref name="stride"/></c>, eight floats. Eight unpacks, eight
    /// shuffles and eight lane permutes (AVX) instead of 64 scattered stores; the same floats, moved.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Eight(Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7, float* destination, nint stride)
    {
        var t0 = Avx.UnpackLow(r0, r1);
        var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3);
        var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5);
        var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7);
        var t7 = Avx.UnpackHigh(r6, r7);
        var s0 = Avx.Shuffle(t0, t2, 0x44);   // columns 0 and 4 of rows 0–3
        var s1 = Avx.Shuffle(t0, t2, 0xEE);   // 1 and 5
        var s2 = Avx.Shuffle(t1, t3, 0x44);   // 2 and 6
        var s3 = Avx.Shuffle(t1, t3, 0xEE);   // 3 and 7
        var s4 = Avx.Shuffle(t4, t6, 0x44);   // the same of rows 4–7
        var s5 = Avx.Shuffle(t4, t6, 0xEE);
        var s6 = Avx.Shuffle(t5, t7, 0x44);
        var s7 = Avx.Shuffle(t5, t7, 0xEE);
        Avx.Permute2x128(s0, s4, 0x20).Store(destination);
        Avx.Permute2x128(s1, s5, 0x20).Store(destination + stride);
        Avx.Permute2x128(s2, s6, 0x20).Store(destination + 2 * stride);
        Avx.Permute2x128(s3, s7, 0x20).Store(destination + 3 * stride);
        Avx.Permute2x128(s0, s4, 0x31).Store(destination + 4 * stride);
        Avx.Permute2x128(s1, s5, 0x31).Store(destination + 5 * stride);
        Avx.Permute2x128(s2, s6, 0x31).Store(destination + 6 * stride);
        Avx.Permute2x128(s3, s7, 0x31).Store(destination + 7 * stride);
    }
}
