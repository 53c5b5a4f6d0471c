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

    /// <summary>Vectors one <see cref="RowsMany"/> call is given at most by the runtime (any number works; sixteen, as
    /// the lane kernels, so a step's tokens are one call).</summary>
    public const int MaxVectors = 16;

    /// <summary>
    /// Several vectors' products on rows of int8 blocks (Q8_0, MXINT8: a token-factory step of a few sequences; windows
    /// and larger steps decode tiles, which the panel kernel multiplies faster):
    /// <c>y[v·yStride + r] = Σ_j weightScales[r·nb + j] · d_x(v, j) · Σ_i code_i · q_i</c>, row r's block j's 32 codes at
    /// <c>codes + r·rowStride + j·blockStride</c>. Two rows × four vectors a pass, their eight sums in registers: each
    /// block's codes loaded (and made |w|) once for four vectors, each vector's block once for two rows, the sign trick
    /// per pair (<see cref="BlockProducts"/>), and the pair's two scales multiplied once per block for all eight (a small
    /// table per pass) instead of in the loop. Each output is one chain over the blocks (lane sums converted to float
    /// and multiplied-added in block order, then the lanes summed as <see cref="SumLanes"/> does), so
    /// <see cref="RowsManyReference"/> gives the same bits; an odd last row or a partial last quad of vectors runs
    /// with a repeated row/vector whose results are dropped.
    /// </summary>
    /// <remarks>One float accumulator per output in a pass (eight) rather than the one-vector kernel's two: eight
    /// independent chains already hide the multiply-add's latency. The activations are <see cref="Vectors"/>' (natural
    /// order, scale amax/127 per 32).</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once, as the other several-vector kernels
    public static void RowsMany(byte* codes, nint rowStride, int blockStride, float* weightScales, int rowCount, int nb,
        Vectors activations, float* y, int yStride)
    {
        int vectors = activations.Count, cols = nb * 32;
        if (activations.Blocks != nb) throw new ArgumentException($"activations of {activations.Blocks} blocks for rows of {nb}", nameof(activations));
        var ones = Vector256.Create((short)1);
        bool vnni = AvxVnni.IsSupported;
        int quads = (vectors + 3) / 4;
        if (activations.Factors.Length < (8 + 4 * quads) * nb) activations.Factors = GC.AllocateArray<float>((8 + 4 * quads) * nb, pinned: true);
        fixed (sbyte* q0 = activations.Q)
        fixed (float* s0 = activations.Scales)
        fixed (float* f0 = activations.Factors)
        {
            float* c = f0;            // block j: the pair's first row × the quad's vectors, then its second row's
            float* qsT = f0 + 8 * nb; // quad k, block j: its four vectors' activation scales (a partial quad repeats its last)
            for (int k = 0; k < quads; k++)
                for (int j = 0; j < nb; j++)
                    for (int i = 0; i < 4; i++)
                        qsT[(k * nb + j) * 4 + i] = s0[Math.Min(4 * k + i, vectors - 1) * nb + j];
            // Row pairs outside, quads inside: a pair's codes stay in the first-level cache for every quad.
            for (int r = 0; r < rowCount; r += 2)
            {
                int r1 = Math.Min(r + 1, rowCount - 1);
                byte* w0 = codes + r * rowStride, w1 = codes + r1 * rowStride;
                float* ws0 = weightScales + (nint)r * nb, ws1 = weightScales + (nint)r1 * nb;
                for (int k = 0; k < quads; k++)
                {
                    int v0 = 4 * k;
                    sbyte* qa = q0 + (nint)v0 * cols, qb = q0 + (nint)Math.Min(v0 + 1, vectors - 1) * cols;
                    sbyte* qc = q0 + (nint)Math.Min(v0 + 2, vectors - 1) * cols, qd = q0 + (nint)Math.Min(v0 + 3, vectors - 1) * cols;
                    float* quadScales = qsT + (nint)k * nb * 4;
                    for (int j = 0; j < nb; j++)
                    {
                        var t = Vector128.Load(quadScales + 4 * j);
                        (Vector128.Create(ws0[j]) * t).Store(c + 8 * j);
                        (Vector128.Create(ws1[j]) * t).Store(c + 8 * j + 4);
                    }
                    Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                    Vector256<float> b0 = default, b1 = default, b2 = default, b3 = default;
                    for (int j = 0; j < nb; j++)
                    {
                        var wa = Vector256.Load((sbyte*)w0 + (nint)j * blockStride);
                        var wb = Vector256.Load((sbyte*)w1 + (nint)j * blockStride);
                        var ma = Avx2.Abs(wa);
                        var mb = Avx2.Abs(wb);
                        float* cj = c + 8 * j;
                        int o = j * 32;
                        var x = Vector256.Load(qa + o);
                        a0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(BlockProducts(ma, Avx2.Sign(x, wa), vnni, ones)), Vector256.Create(cj[0]), a0);
                        b0 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(BlockProducts(mb, Avx2.Sign(x, wb), vnni, ones)), Vector256.Create(cj[4]), b0);
                        x = Vector256.Load(qb + o);
                        a1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(BlockProducts(ma, Avx2.Sign(x, wa), vnni, ones)), Vector256.Create(cj[1]), a1);
                        b1 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(BlockProducts(mb, Avx2.Sign(x, wb), vnni, ones)), Vector256.Create(cj[5]), b1);
                        x = Vector256.Load(qc + o);
                        a2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(BlockProducts(ma, Avx2.Sign(x, wa), vnni, ones)), Vector256.Create(cj[2]), a2);
                        b2 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(BlockProducts(mb, Avx2.Sign(x, wb), vnni, ones)), Vector256.Create(cj[6]), b2);
                        x = Vector256.Load(qd + o);
                        a3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(BlockProducts(ma, Avx2.Sign(x, wa), vnni, ones)), Vector256.Create(cj[3]), a3);
                        b3 = Fma.MultiplyAdd(Avx.ConvertToVector256Single(BlockProducts(mb, Avx2.Sign(x, wb), vnni, ones)), Vector256.Create(cj[7]), b3);
                    }
                    // Only the quad's real vectors and the pair's real rows are written.
                    int n = Math.Min(4, vectors - v0);
                    float* out0 = y + (nint)v0 * yStride + r;
                    out0[0] = SumLanes(a0);
                    if (n > 1) out0[yStride] = SumLanes(a1);
                    if (n > 2) out0[2 * yStride] = SumLanes(a2);
                    if (n > 3) out0[3 * yStride] = SumLanes(a3);
                    if (r + 1 < rowCount)
                    {
                        out0[1] = SumLanes(b0);
                        if (n > 1) out0[yStride + 1] = SumLanes(b1);
                        if (n > 2) out0[2 * yStride + 1] = SumLanes(b2);
                        if (n > 3) out0[3 * yStride + 1] = SumLanes(b3);
                    }
                }
            }
        }
    }

    /// <summary>One block's 32 int8 codes as floats, each converted (exact) and multiplied once by
    /// <paramref name="factor"/> — how Q8_0 (× its f16 scale) and MXINT8 (× step · E8M0 scale) decode a tile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void DecodeBlock(sbyte* codes, float factor, float* destination)
    {
        var f = Vector256.Create(factor);
        (Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(codes)) * f).Store(destination);
        (Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(codes + 8)) * f).Store(destination + 8);
        (Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(codes + 16)) * f).Store(destination + 16);
        (Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(codes + 24)) * f).Store(destination + 24);
    }

    /// <summary>The eight lanes' sum in a fixed order: (l0 + l4) + (l2 + l6), plus (l1 + l5) + (l3 + l7).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float SumLanes(Vector256<float> v)
    {
        var s = v.GetLower() + v.GetUpper();
        s += Sse.MoveHighToLow(s, s);
        return s.ToScalar() + s.GetElement(1);
    }

    /// <summary>Scalar twin of <see cref="RowsMany"/>: the same integers, the same float operations in the same order.</summary>
    public static void RowsManyReference(ReadOnlySpan<byte> codes, int rowStride, int blockStride, ReadOnlySpan<float> weightScales,
        int rowCount, int nb, Vectors activations, Span<float> y, int yStride)
    {
        int cols = nb * 32;
        Span<float> lanes = stackalloc float[8];
        for (int v = 0; v < activations.Count; v++)
            for (int r = 0; r < rowCount; r++)
            {
                lanes.Clear();
                for (int j = 0; j < nb; j++)
                {
                    float c = weightScales[r * nb + j] * activations.Scales[v * nb + j];
                    for (int l = 0; l < 8; l++)
                    {
                        int sum = 0;
                        for (int i = 0; i < 4; i++)
                            sum += (sbyte)codes[r * rowStride + j * blockStride + 4 * l + i] * activations.Q[v * cols + j * 32 + 4 * l + i];
                        lanes[l] = MathF.FusedMultiplyAdd(sum, c, lanes[l]);
                    }
                }
                float low = (lanes[0] + lanes[4]) + (lanes[2] + lanes[6]), high = (lanes[1] + lanes[5]) + (lanes[3] + lanes[7]);
                y[v * yStride + r] = low + high;
            }
    }

    /// <summary>Several vectors' activations for <see cref="RowsMany"/> (and one for NxFP4's signed-table kernel): int8
    /// codes per 32 in natural order or evens then odds (<see cref="NibbleDot.QuantizeBlock"/>), vector after vector,
    /// and each block's scale.</summary>
    public sealed class Vectors
    {
        public sbyte[] Q = [];
        public float[] Scales = [];
        public int Count;
        public int Blocks;

        /// <summary><see cref="RowsMany"/>'s per-pass table of scale products (12 floats a block).</summary>
        internal float[] Factors = [];

        private readonly KeptActivations _kept = new();

        /// <summary>Quantizes <paramref name="vectors"/> rows of <paramref name="x"/> (<paramref name="cols"/> a multiple
        /// of 32), or keeps the last results when the same activations come again (<see cref="KeptActivations"/>: q, k
        /// and v, gate and up, and a thread's tiles share one input). <paramref name="evensThenOdds"/>: each block's
        /// even elements first, as 4-bit codes packed two a byte meet them (<c>Nx/NxfpSignedDot</c>).</summary>
        public void Set(ReadOnlySpan<float> x, int vectors, int cols, bool evensThenOdds = false)
        {
            if (cols % 32 != 0 || x.Length < vectors * cols) throw new ArgumentException($"{vectors} vectors of {cols} columns need {vectors * cols} activations in whole blocks", nameof(x));
            if (_kept.Same(x[..(vectors * cols)], (vectors, cols, evensThenOdds, 0, false))) return;
            int nb = cols / 32;
            Count = vectors;
            Blocks = nb;
            if (Q.Length < vectors * cols) Q = new sbyte[vectors * cols];
            if (Scales.Length < vectors * nb) Scales = new float[vectors * nb];
            for (int i = 0; i < vectors * nb; i++)
                NibbleDot.QuantizeBlock(x.Slice(i * 32, 32), evensThenOdds, Q.AsSpan(i * 32, 32), out Scales[i]);
            _kept.Complete();
        }
    }

    [ThreadStatic] private static Vectors? t_vectors;

    /// <summary>This thread's activation set (one product at a time per thread).</summary>
    public static Vectors Scratch => t_vectors ??= new Vectors();

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
