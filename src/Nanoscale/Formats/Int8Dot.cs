using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats;

/// <summary>
/// int8 weights × int8 activations per block of 32, as llama.cpp's <c>vec_dot_q8_0_q8_0</c> does it: the activations
/// are quantized once per product to int8 per 32 (scale amax/127, natural order), each block's 32 products are summed
/// in integers with the sign trick (vpmaddubsw on |w| and sign(x, w), then vpmaddwd), and the block's weight scale
/// times its activation scale is applied once. Shared by ggml's Q8_0 (<c>Ggml/GgmlDot</c>) and MXINT8 (<see cref="Rows"/>).
/// </summary>
/// <remarks>Exact in the weights; the activations carry int8 rounding (each off by at most amax/254 of its block, the
/// bound <c>FusedDotTests</c> checks). The most negative code −128 works: |−128| is 128 as an unsigned byte.</remarks>
internal static unsafe class Int8Dot
{
    /// <summary>x as int8 per 32-element block, in order, with each block's scale.</summary>
    public static void QuantizeActivations(ReadOnlySpan<float> x, Span<sbyte> q, Span<float> scales)
    {
        for (int j = 0; j < scales.Length; j++)
        {
            var block = x.Slice(j * 32, 32);
            float amax = Math.Abs(System.Numerics.Tensors.TensorPrimitives.MaxMagnitude(block));
            float d = amax / 127f, inverse = d == 0 ? 0 : 1f / d;
            scales[j] = d;
            for (int i = 0; i < 32; i++) q[j * 32 + i] = (sbyte)MathF.Round(block[i] * inverse, MidpointRounding.ToEven);
        }
    }

    /// <summary>Σ w_i · x_i of one block of 32 as eight int32 partial sums converted to float.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> BlockSum(Vector256<sbyte> w, ref sbyte x, Vector256<short> ones)
    {
        Vector256<sbyte> activations = Vector256.LoadUnsafe(ref x);
        return Avx.ConvertToVector256Single(BlockProducts(Avx2.Abs(w), Avx2.Sign(activations, w), AvxVnni.IsSupported, ones));
    }

    /// <summary>|w| × sign(x, w) summed over each group of four bytes in int32 lanes: one <c>vpdpbusd</c> where the CPU
    /// has AVX-VNNI (<paramref name="vnni"/>, a constant to the JIT at the call above), else <c>vpmaddubsw</c> +
    /// <c>vpmaddwd</c>, whose int16 step cannot saturate (two products of at most 128·127 = 16256). The same integers
    /// either way (<c>FusedDotTests</c> compares them).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> BlockProducts(Vector256<byte> magnitudes, Vector256<sbyte> signed, bool vnni, Vector256<short> ones) =>
        vnni
            ? AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, magnitudes, signed)
            : Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(magnitudes, signed), ones);

    /// <summary>
    /// y[r] = Σ_j scaleTable[scales_j] · step · d_x(j) · Σ_i code_i · q_i over rows of 32-code blocks stored one byte per
    /// code (MXINT8: the two's-complement code times its step 2^−6, times the block's E8M0 scale); the scales one byte per
    /// block in their own array. A NaN scale (E8M0 0xFF) makes its row NaN, as decoding does.
    /// </summary>
    public static void Rows(ReadOnlySpan<byte> codes, ReadOnlySpan<byte> scales, ReadOnlySpan<float> scaleTable, float step,
        int rowCount, int blocksPerRow, ReadOnlySpan<float> x, Span<float> y)
    {
        int cols = blocksPerRow * 32;
        if (codes.Length < (long)rowCount * cols || scales.Length < (long)rowCount * blocksPerRow || x.Length < cols || y.Length < rowCount)
            throw new ArgumentException("spans shorter than the rows");
        var (q, qScales) = Quantized(x[..cols]);
        var ones = Vector256.Create((short)1);
        ref byte c0 = ref MemoryMarshal.GetReference(codes);
        ref sbyte q0 = ref MemoryMarshal.GetArrayDataReference(q);
        for (int r = 0; r < rowCount; r++)
        {
            // Two accumulators: consecutive blocks do not wait on each other's multiply-add.
            Vector256<float> even = Vector256<float>.Zero, odd = Vector256<float>.Zero;
            ref byte row = ref Unsafe.Add(ref c0, (nint)r * cols);
            var rowScales = scales.Slice(r * blocksPerRow, blocksPerRow);
            int j = 0;
            for (; j + 1 < blocksPerRow; j += 2)
            {
                Sse.Prefetch0(Unsafe.AsPointer(ref Unsafe.Add(ref row, j * 32 + 512)));
                even = Fma.MultiplyAdd(BlockSum(Vector256.LoadUnsafe(ref Unsafe.Add(ref row, j * 32)).AsSByte(), ref Unsafe.Add(ref q0, j * 32), ones),
                    Vector256.Create(scaleTable[rowScales[j]] * step * qScales[j]), even);
                odd = Fma.MultiplyAdd(BlockSum(Vector256.LoadUnsafe(ref Unsafe.Add(ref row, j * 32 + 32)).AsSByte(), ref Unsafe.Add(ref q0, j * 32 + 32), ones),
                    Vector256.Create(scaleTable[rowScales[j + 1]] * step * qScales[j + 1]), odd);
            }
            if (j < blocksPerRow)
                even = Fma.MultiplyAdd(BlockSum(Vector256.LoadUnsafe(ref Unsafe.Add(ref row, j * 32)).AsSByte(), ref Unsafe.Add(ref q0, j * 32), ones),
                    Vector256.Create(scaleTable[rowScales[j]] * step * qScales[j]), even);
            y[r] = Vector256.Sum(even + odd);
        }
    }

    /// <summary>This thread's last quantized activations: a product runs in several tiles of rows on each thread, all
    /// with the same x, which is quantized once (compared element by element, so a new x is never mistaken).</summary>
    [ThreadStatic] private static float[]? t_x;
    [ThreadStatic] private static sbyte[]? t_q;
    [ThreadStatic] private static float[]? t_scales;
    [ThreadStatic] private static int t_cols;

    internal static (sbyte[] Q, float[] Scales) Quantized(ReadOnlySpan<float> x)
    {
        int cols = x.Length;
        if (t_x is { } last && t_cols == cols && x.SequenceEqual(last.AsSpan(0, cols))) return (t_q!, t_scales!);
        if (t_x is null || t_x.Length < cols) (t_x, t_q, t_scales) = (new float[cols], new sbyte[cols], new float[cols / 32]);
        t_cols = 0; // until the new x is complete
        QuantizeActivations(x, t_q!, t_scales!.AsSpan(0, cols / 32));
        x.CopyTo(t_x);
        t_cols = cols;
        return (t_q!, t_scales!);
    }
}
