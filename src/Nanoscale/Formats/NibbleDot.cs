using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats;

/// <summary>
/// The one-token product on 4-bit codes (AVX2), shared by MXFP4 in our layout and by ggml's
/// Q4_0 and MXFP4 blocks. The activations are int8 per 32-element block, as in the AVX2 kernels (<c>MxDot</c>,
/// <c>GgmlDot</c>), but arranged so that two blocks fill one register; the weights stay unsigned — Q4_0's nibble
/// itself, or an E2M1 code's doubled value plus 12 through a 16-entry table — so <c>vpmaddubsw</c> multiplies them
/// with the activations directly (no sign trick), and the bias times the block's activation sum is subtracted from
/// the block's integer total, exactly. Per two blocks: two 16-byte loads, three ops to split the nibbles, one table
/// lookup, <c>vpmaddubsw</c>, <c>vpmaddwd</c>, the bias subtraction, one conversion and one multiply-add with the two
/// blocks' scales (weight scale × activation scale, computed for the row beforehand).
/// </summary>
/// <remarks>Each block's integer total equals the AVX2 kernels' (Σ w·q, exact), so the result differs from theirs only
/// in float summation order; <c>NibbleDotTests</c> checks both agree and that the quantizer here equals the scalar one
/// byte for byte.</remarks>
internal static unsafe class NibbleDot
{
    /// <summary>How far ahead of the codes being multiplied the one-token loops ask for the next ones (a line or two per
    /// step of eight blocks): 2 KB. At 512 bytes the two-thread generation of the 506M Llama-3.2-shaped model (its head
    /// alone 128256 rows of 1 KB) ran at medians of 84 (MXFP4) and 72 (NxFP4) tokens/s; at 2 KB 91 and 78, at 4 KB 92
    /// and 76, at 8 KB 84 and 78 (five runs each, alternated). The float kernels (BF16, MXFP8, MXFP6) gained nothing
    /// from it and keep 512.</summary>
    private const int PrefetchAhead = 2048;

    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>One product's activations: int8 codes (pairs of blocks interleaved by 16-byte halves: block 2p's first
    /// half, block 2p+1's first half, then both second halves; an odd last block as it is), each block's scale, and per
    /// pair of blocks the bias times each block's code sum, placed in the int32 lane the block's total starts at.</summary>
    public sealed class Activations
    {
        public sbyte[] Q = [];
        public float[] Scales = [];
        public int[] Sums = [];
        public int[] Bias = [];
        public int Blocks;

        /// <summary>With <c>halves</c>: each block's code sums over the elements of its two 16-element weight blocks
        /// (NVFP4), [2j] the first, [2j + 1] the second.</summary>
        public int[] HalfSums = [];

        /// <summary>With <c>halves</c>: each 16-element half's activation scale, <c>[2j] = [2j + 1] = Scales[j]</c>
        /// (NVFP4's per-16 factors multiply it in without spreading the scales every row).</summary>
        public float[] HalfScales = [];

        /// <summary>The bias times each block's code sum (or each half's, with halves) in the order of
        /// <see cref="Row{TMode}"/>'s reduced steps: per eight blocks from j (whole blocks) j, j+2, j+4, j+6, j+1, j+3,
        /// j+5, j+7; per four blocks from j (halves) j's two halves, j+2's, j+1's, j+3's. Whole steps only.</summary>
        public int[] Reduced = [];

        /// <summary>Per pair of blocks (j even), the activation scales as the pair's int32 lanes need them:
        /// <c>[4j..4j+3] = Scales[j]</c>, <c>[4j+4..4j+7] = Scales[j+1]</c> (for <see cref="RowMany{TMode}"/>).</summary>
        public float[] Spread = [];

        private readonly KeptActivations _kept = new();

        /// <summary>Quantizes <paramref name="x"/> (a multiple of 32 floats). <paramref name="evensThenOdds"/>: each
        /// block's entries in the order of OCP-packed nibbles (even elements in low nibbles) instead of ggml's (elements
        /// j and j + 16 share a byte). Keeps the last results when the same activations (bit for bit) come again with
        /// the same parameters (<see cref="KeptActivations"/>: a one-token product's 16 tiles share one input).</summary>
        public void Set(ReadOnlySpan<float> x, bool evensThenOdds, int bias, bool halves = false)
        {
            if (_kept.Same(x, (1, x.Length, evensThenOdds, bias, halves))) return;
            Quantize(x, evensThenOdds, bias, halves);
            _kept.Complete();
        }

        private void Quantize(ReadOnlySpan<float> x, bool evensThenOdds, int bias, bool halves)
        {
            int nb = x.Length / 32;
            Blocks = nb;
            // Pinned, so the many-vector kernel can hold raw pointers to several sets at once.
            if (Q.Length < x.Length) Q = GC.AllocateArray<sbyte>(x.Length, pinned: true);
            if (Scales.Length < nb)
            {
                Scales = GC.AllocateArray<float>(nb, pinned: true);
                Sums = new int[nb];
                HalfSums = new int[2 * nb];
                HalfScales = GC.AllocateArray<float>(2 * nb + 8, pinned: true);
                Spread = GC.AllocateArray<float>(nb * 4 + 8, pinned: true);
            }
            if (Bias.Length < nb * 4) Bias = GC.AllocateArray<int>(nb * 4, pinned: true);
            if (Reduced.Length < nb * 2) Reduced = GC.AllocateArray<int>(nb * 2, pinned: true);
            Span<sbyte> block = stackalloc sbyte[32];
            for (int j = 0; j < nb; j++)
            {
                Sums[j] = QuantizeBlock(x.Slice(j * 32, 32), evensThenOdds, block, out Scales[j]);
                if (halves)
                {
                    // Evens then odds: q[0..7] and q[16..23] are elements 0–15, q[8..15] and q[24..31] elements 16–31.
                    int first = 0;
                    for (int i = 0; i < 8; i++) first += block[i] + block[16 + i];
                    HalfSums[2 * j] = first;
                    HalfSums[2 * j + 1] = Sums[j] - first;
                }
                int pair = j & ~1;
                if (j + 1 == nb && (nb & 1) == 1) block.CopyTo(Q.AsSpan(j * 32, 32));
                else
                {
                    int half = j & 1;
                    block[..16].CopyTo(Q.AsSpan(pair * 32 + half * 16, 16));
                    block[16..].CopyTo(Q.AsSpan(pair * 32 + 32 + half * 16, 16));
                }
            }
            for (int j = 0; j < nb; j++) Spread.AsSpan(4 * j, 4).Fill(Scales[j]);
            if (halves)
                for (int j = 0; j < nb; j++) HalfScales[2 * j] = HalfScales[2 * j + 1] = Scales[j];
            Array.Clear(Bias, 0, nb * 4);
            for (int p = 0; p + 1 < nb; p += 2)
            {
                if (halves)
                {
                    // A pair's int32 lanes: 0–1 and 2–3 the first block's two halves, 4–5 and 6–7 the second's.
                    Bias[p * 4] = bias * HalfSums[2 * p];
                    Bias[p * 4 + 2] = bias * HalfSums[2 * p + 1];
                    Bias[p * 4 + 4] = bias * HalfSums[2 * p + 2];
                    Bias[p * 4 + 6] = bias * HalfSums[2 * p + 3];
                }
                else
                {
                    Bias[p * 4] = bias * Sums[p];
                    Bias[p * 4 + 4] = bias * Sums[p + 1];
                }
            }
            if (halves)
                for (int j = 0; j + ReducedStep(true) <= nb; j += ReducedStep(true))
                    for (int l = 0; l < 8; l++) Reduced[2 * j + l] = bias * HalfSums[2 * (j + HalvesOrder[l / 2]) + l % 2];
            else
                for (int j = 0; j + ReducedStep(false) <= nb; j += ReducedStep(false))
                    for (int l = 0; l < 8; l++) Reduced[j + l] = bias * Sums[j + WholeOrder[l]];
        }
    }

    [ThreadStatic] private static Activations? _cached;

    /// <summary>This thread's scratch (one product at a time per thread).</summary>
    public static Activations Scratch => _cached ??= new Activations();

    /// <summary>
    /// 32 floats as int8 codes with scale amax/127, rounded to nearest even (vectorised; <see cref="QuantizeBlockReference"/>
    /// is its scalar twin), in natural order or evens then odds; returns the codes' sum.
    /// </summary>
    public static int QuantizeBlock(ReadOnlySpan<float> x, bool evensThenOdds, Span<sbyte> q, out float scale)
    {
        if (!Avx2.IsSupported) return QuantizeBlockReference(x, evensThenOdds, q, out scale);
        ref float x0 = ref MemoryMarshal.GetReference(x);
        var v0 = Vector256.LoadUnsafe(ref x0);
        var v1 = Vector256.LoadUnsafe(ref x0, 8);
        var v2 = Vector256.LoadUnsafe(ref x0, 16);
        var v3 = Vector256.LoadUnsafe(ref x0, 24);
        var m = MagnitudeMax(MagnitudeMax(Vector256.Abs(v0), Vector256.Abs(v1)), MagnitudeMax(Vector256.Abs(v2), Vector256.Abs(v3)));
        var m4 = Sse41.Max(m.GetLower().AsInt32(), m.GetUpper().AsInt32());
        m4 = Sse41.Max(m4, Sse2.Shuffle(m4, 0b01_00_11_10));
        m4 = Sse41.Max(m4, Sse2.Shuffle(m4, 0b10_11_00_01));
        float amax = m4.AsSingle().ToScalar();
        if (!float.IsFinite(amax)) return QuantizeBlockReference(x, evensThenOdds, q, out scale);
        float d = amax / 127f, inverse = d == 0 ? 0 : 1f / d;
        if (!float.IsFinite(inverse)) return QuantizeBlockReference(x, evensThenOdds, q, out scale);
        scale = d;
        var k = Vector256.Create(inverse);
        var i0 = Avx.ConvertToVector256Int32(v0 * k);
        var i1 = Avx.ConvertToVector256Int32(v1 * k);
        var i2 = Avx.ConvertToVector256Int32(v2 * k);
        var i3 = Avx.ConvertToVector256Int32(v3 * k);
        int sum = Vector256.Sum(i0 + i1 + i2 + i3);
        PackBlock(i0, i1, i2, i3, evensThenOdds).StoreUnsafe(ref MemoryMarshal.GetReference(q));
        return sum;
    }

    /// <summary>The lane-wise maximum of two vectors of magnitudes (sign bits clear) as one integer maximum of their bits:
    /// for such floats the bits order as the values do, an infinity above every finite value and a NaN above that, so a
    /// finite result is the larger magnitude exactly and a block with a NaN or an infinity gives a result that is not
    /// finite (<see cref="Vector256.Max{T}"/> takes eight instructions a lane for NaN and −0; this takes one).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> MagnitudeMax(Vector256<float> a, Vector256<float> b) => Avx2.Max(a.AsInt32(), b.AsInt32()).AsSingle();

    /// <summary>A block's 32 rounded codes (four vectors of int32, in element order) as bytes in natural order, or evens
    /// then odds.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<sbyte> PackBlock(Vector256<int> i0, Vector256<int> i1, Vector256<int> i2, Vector256<int> i3, bool evensThenOdds)
    {
        // Packing works within 128-bit lanes; one permutation restores the order.
        var bytes = Avx2.PackSignedSaturate(Avx2.PackSignedSaturate(i0, i1), Avx2.PackSignedSaturate(i2, i3));
        var ordered = Avx2.PermuteVar8x32(bytes.AsInt32(), Vector256.Create(0, 4, 1, 5, 2, 6, 3, 7)).AsSByte();
        if (!evensThenOdds) return ordered;
        var split = Avx2.Shuffle(ordered, Vector256.Create((sbyte)0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
            0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15));
        return Avx2.Permute4x64(split.AsInt64(), 0b11_01_10_00).AsSByte();
    }

    /// <summary>Scalar twin of <see cref="QuantizeBlock"/> (also its path for non-finite blocks, and for blocks so small
    /// that the inverse scale overflows, which count as zero).</summary>
    public static int QuantizeBlockReference(ReadOnlySpan<float> x, bool evensThenOdds, Span<sbyte> q, out float scale)
    {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = float.IsNaN(x[i]) || float.IsNaN(amax) ? float.NaN : Math.Max(amax, Math.Abs(x[i]));
        float d = amax / 127f, inverse = d == 0 ? 0 : 1f / d;
        if (!float.IsFinite(inverse) && float.IsFinite(amax))
        {
            // A block so small that 127/amax overflows (amax below ~2^−120): it counts as zero.
            q[..32].Clear();
            scale = 0;
            return 0;
        }
        scale = d;
        int sum = 0;
        for (int i = 0; i < 32; i++)
        {
            int source = evensThenOdds ? (i < 16 ? 2 * i : 2 * (i - 16) + 1) : i;
            q[i] = (sbyte)MathF.Round(x[source] * inverse, MidpointRounding.ToEven);
            sum += q[i];
        }
        return sum;
    }

    /// <summary>How a kernel turns a nibble into its unsigned weight u (specialised per mode by the JIT).</summary>
    public interface IMode
    {
        /// <summary>u = table[nibble] (else u = nibble).</summary>
        static abstract bool UseTable { get; }

        /// <summary>Each pair of blocks j, j + 1 (j even) has its own pair of tables (<c>pairTables + pairIndex[j]</c>, a byte offset: the first block's
        /// table in the low 16 bytes, the second's in the high), else one table for all.</summary>
        static abstract bool PerPair { get; }

        /// <summary>u up to 127: the low and high nibbles' products are widened to int32 separately (up to 64 they are
        /// added in int16 first, which saves an instruction).</summary>
        static abstract bool Wide { get; }

        /// <summary>A weight scale per 16 elements (NVFP4): c holds two factors per block, its halves' (each block's
        /// elements 0–15 and 16–31, in int32 lanes 0–1 and 2–3 of its four).</summary>
        static abstract bool HalfBlocks { get; }
    }

    /// <summary>Q4_0: u is the nibble.</summary>
    public readonly struct Nibbles : IMode { public static bool UseTable => false; public static bool PerPair => false; public static bool Wide => false; public static bool HalfBlocks => false; }

    /// <summary>MXFP4 and ggml-MXFP4: one table.</summary>
    public readonly struct OneTable : IMode { public static bool UseTable => true; public static bool PerPair => false; public static bool Wide => false; public static bool HalfBlocks => false; }

    /// <summary>NVFP4: one table, a scale per 16 elements.</summary>
    public readonly struct OneTableHalfBlocks : IMode { public static bool UseTable => true; public static bool PerPair => false; public static bool Wide => false; public static bool HalfBlocks => true; }

    /// <summary>NxFP4: a table per block (format × recycled level), values up to 64.</summary>
    public readonly struct PairTables : IMode { public static bool UseTable => true; public static bool PerPair => true; public static bool Wide => false; public static bool HalfBlocks => false; }

    /// <summary>NxFP4 with values up to 127.</summary>
    public readonly struct WidePairTables : IMode { public static bool UseTable => true; public static bool PerPair => true; public static bool Wide => true; public static bool HalfBlocks => false; }

    /// <summary>
    /// Σ_j c[j] · (Σ_i u_ij · q_ij − bias · Σ_i q_ij) over one row of <paramref name="blocks"/> 4-bit blocks whose 16
    /// code bytes start every <paramref name="blockStride"/> bytes at <paramref name="codes"/> (low nibbles are the
    /// block's first 16 activations of <see cref="Activations"/>, high nibbles its second 16); u comes from the nibble as
    /// <typeparamref name="TMode"/> says (<paramref name="table"/> when one table serves all blocks,
    /// <paramref name="pairTables"/> and <paramref name="pairIndex"/> when each pair has its own); c holds each block's
    /// weight scale × activation scale. Two blocks a register: their low nibbles (one register) meet both blocks' first
    /// halves of activations, their high nibbles both second halves, and the two vpmaddubsw results are added in int16
    /// before vpmaddwd (no overflow while u ≤ 64: |u·q| ≤ 64·127, four per lane; wider tables widen each separately),
    /// so each block's total lands in its own four int32 lanes. Eight blocks a step (four with
    /// <see cref="IMode.HalfBlocks"/>): the four (two) pairs' lanes are summed (<see cref="SumFour"/>, <see cref="SumTwo"/>)
    /// into one register of eight block (half-block) totals, so the bias, the conversion and the multiply-add by the factors (read in that
    /// order with one permutation) are done once per eight blocks instead of once per pair (one Zen 3 thread, MXFP4: 25.4
    /// → 28.1 G weights/s). Integer totals are exact either way; only the float summation order differs.
    /// </summary>
    public static float Row<TMode>(byte* codes, int blockStride, int blocks, float* c, Activations a, Vector256<sbyte> table,
        byte* pairTables, int* pairIndex, int bias) where TMode : struct, IMode =>
        blockStride == 16
            ? RowContiguous<TMode>(codes, blocks, c, a, Q(a), B(a), R(a), table, pairTables, pairIndex, bias)
            : RowStrided<TMode>(codes, blockStride, blocks, c, a, Q(a), B(a), R(a), table, pairTables, pairIndex, bias);

    /// <summary>How <see cref="Rows{TMode, TFactors}"/> gets each row's factors (and pair offsets, for per-pair modes)
    /// just before its product: a format's per-row (or per-chunk of rows) preparation.</summary>
    public interface IRowFactors
    {
        /// <summary>Row <paramref name="row"/>'s c (<see cref="Row{TMode}"/>), and its pair offsets or null.</summary>
        float* Prepare(int row, out int* pairIndex);
    }

    /// <summary>
    /// <see cref="Row{TMode}"/> over <paramref name="rowCount"/> rows <paramref name="rowBytes"/> apart, each row's
    /// factors from <paramref name="factors"/> just before its product: the activations' pointers and the kernel's
    /// constants are set up once, and the row kernel is inlined into this loop. A call per row cost ~45 cycles (the
    /// pinning, the constants, the call itself): a sixth of a 2048-column row on a Zen 3.
    /// </summary>
    public static void Rows<TMode, TFactors>(byte* codes, nint rowBytes, int blockStride, int rowCount, int blocks, Activations a,
        Vector256<sbyte> table, byte* pairTables, int bias, ref TFactors factors, Span<float> y)
        where TMode : struct, IMode where TFactors : struct, IRowFactors
    {
        if (y.Length < rowCount) throw new ArgumentException("fewer outputs than rows", nameof(y));
        sbyte* q = Q(a);
        int* correction = B(a), reduced = R(a);
        for (int r = 0; r < rowCount; r++)
        {
            float* c = factors.Prepare(r, out int* pairIndex);
            y[r] = blockStride == 16
                ? RowContiguous<TMode>(codes + r * rowBytes, blocks, c, a, q, correction, reduced, table, pairTables, pairIndex, bias)
                : RowStrided<TMode>(codes + r * rowBytes, blockStride, blocks, c, a, q, correction, reduced, table, pairTables, pairIndex, bias);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowStrided<TMode>(byte* codes, int blockStride, int blocks, float* c, Activations a, sbyte* q, int* correction,
        int* reduced, Vector256<sbyte> table, byte* pairTables, int* pairIndex, int bias) where TMode : struct, IMode
    {
        var nibble = Vector256.Create((byte)0x0F);
        var ones = Vector256.Create((short)1);
        var spread = Vector256.Create(0, 0, 0, 0, 1, 1, 1, 1);
        int step = ReducedStep(TMode.HalfBlocks);
        Vector256<float> total = Vector256<float>.Zero, rest = Vector256<float>.Zero;
        int j = 0;
        for (; j + step <= blocks; j += step)
        {
            var s0 = PairInts<TMode>(Codes(codes, blockStride, j), Lookup<TMode>(table, pairTables, pairIndex, j), q + j * 32, nibble, ones);
            var s1 = PairInts<TMode>(Codes(codes, blockStride, j + 2), Lookup<TMode>(table, pairTables, pairIndex, j + 2), q + j * 32 + 64, nibble, ones);
            Vector256<int> sums;
            if (TMode.HalfBlocks) sums = SumTwo(s0, s1);
            else
            {
                var s2 = PairInts<TMode>(Codes(codes, blockStride, j + 4), Lookup<TMode>(table, pairTables, pairIndex, j + 4), q + j * 32 + 128, nibble, ones);
                var s3 = PairInts<TMode>(Codes(codes, blockStride, j + 6), Lookup<TMode>(table, pairTables, pairIndex, j + 6), q + j * 32 + 192, nibble, ones);
                sums = SumFour(s0, s1, s2, s3);
            }
            total = Reduce<TMode>(sums, reduced + (TMode.HalfBlocks ? 2 * j : j), c + (TMode.HalfBlocks ? 2 * j : j), total);
        }
        for (; j + 1 < blocks; j += 2)
            rest = Pair<TMode>(codes, blockStride, j, c, q, correction, table, pairTables, pairIndex, nibble, ones, spread, rest);
        float sum = Vector256.Sum(total + rest);
        if (j < blocks) sum += OddBlock<TMode>(codes, blockStride, j, table, pairTables, pairIndex, q, c, 1f, a, bias);
        return sum;
    }

    /// <summary>Blocks per reduced step of <see cref="Row{TMode}"/>: eight, or four with half blocks (their eight
    /// half-block totals after one round of pairwise sums, <see cref="SumTwo"/>).</summary>
    private static int ReducedStep(bool halves) => halves ? 4 : 8;

    /// <summary>The block (of eight from j) in each lane of a reduced step: two rounds of pairwise sums on four pairs' lanes.</summary>
    private static readonly int[] WholeOrder = [0, 2, 4, 6, 1, 3, 5, 7];

    /// <summary><see cref="WholeOrder"/> as a permutation (a JIT constant: the static array would be read every call).</summary>
    private static Vector256<int> WholeOrderLanes => Vector256.Create(0, 2, 4, 6, 1, 3, 5, 7);

    /// <summary>The block (of four from j) whose two halves fill each pair of lanes after one round on two pairs.</summary>
    private static readonly int[] HalvesOrder = [0, 2, 1, 3];

    /// <summary>
    /// <see cref="Row{TMode}"/> for blocks laid end to end (our layouts; ggml's blocks carry their scale between them):
    /// the same operations in the same order, with pointers that advance a step at a time instead of indices multiplied
    /// by a stride the JIT cannot see, and one prefetch per line. At one token the 4-bit kernels are bound by their
    /// instruction count (NxFP4's tables add a load per pair), so the scalar address arithmetic is worth removing.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float RowContiguous<TMode>(byte* codes, int blocks, float* c, Activations a, sbyte* q0, int* correction, int* reduced,
        Vector256<sbyte> table, byte* pairTables, int* pairIndex, int bias) where TMode : struct, IMode
    {
        var nibble = Vector256.Create((byte)0x0F);
        var ones = Vector256.Create((short)1);
        var spread = Vector256.Create(0, 0, 0, 0, 1, 1, 1, 1);
        int step = ReducedStep(TMode.HalfBlocks);
        Vector256<float> total = Vector256<float>.Zero, rest = Vector256<float>.Zero;
        byte* w = codes;
        sbyte* q = q0;
        int* r = reduced;
        float* f = c;
        int* p = pairIndex;
        int steps = blocks / step;
        for (int i = 0; i < steps; i++)
        {
            Sse.Prefetch0(w + PrefetchAhead);
            var s0 = PairInts<TMode>(Vector256.Load(w), Lookup<TMode>(table, pairTables, p, 0), q, nibble, ones);
            var s1 = PairInts<TMode>(Vector256.Load(w + 32), Lookup<TMode>(table, pairTables, p, 2), q + 64, nibble, ones);
            Vector256<int> sums;
            if (TMode.HalfBlocks) sums = SumTwo(s0, s1);
            else
            {
                Sse.Prefetch0(w + PrefetchAhead + 64);
                var s2 = PairInts<TMode>(Vector256.Load(w + 64), Lookup<TMode>(table, pairTables, p, 4), q + 128, nibble, ones);
                var s3 = PairInts<TMode>(Vector256.Load(w + 96), Lookup<TMode>(table, pairTables, p, 6), q + 192, nibble, ones);
                sums = SumFour(s0, s1, s2, s3);
            }
            total = Reduce<TMode>(sums, r, f, total);
            w += step * 16;
            q += step * 32;
            r += 8;
            f += 8; // eight blocks' factors, or four blocks' two each
            p += step;
        }
        int j = steps * step;
        for (; j + 1 < blocks; j += 2)
            rest = Pair<TMode>(codes, 16, j, c, q0, correction, table, pairTables, pairIndex, nibble, ones, spread, rest);
        float sum = Vector256.Sum(total + rest);
        if (j < blocks) sum += OddBlock<TMode>(codes, 16, j, table, pairTables, pairIndex, q0, c, 1f, a, bias);
        return sum;
    }

    /// <summary>Two blocks' codes at <paramref name="j"/>: one 32-byte load when they are end to end, else two halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<byte> Codes(byte* codes, int blockStride, int j)
    {
        byte* first = codes + (nint)j * blockStride;
        Sse.Prefetch0(first + PrefetchAhead);
        return blockStride == 16 ? Vector256.Load(first) : Vector256.Create(Vector128.Load(first), Vector128.Load(first + blockStride));
    }

    /// <summary>The pair of blocks j, j + 1's lookup register: the one table, or the pair's two (per-pair modes).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> Lookup<TMode>(Vector256<sbyte> table, byte* pairTables, int* pairIndex, int j) where TMode : struct, IMode =>
        TMode.PerPair ? Vector256.Load((sbyte*)pairTables + pairIndex[j]) : table;

    /// <summary>A pair's integer totals before the bias (Σ u·q in each block's lanes), its activations at <paramref name="q"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> PairInts<TMode>(Vector256<byte> packed, Vector256<sbyte> lookup, sbyte* q, Vector256<byte> nibble, Vector256<short> ones)
        where TMode : struct, IMode
    {
        var (lo, hi) = Split<TMode>(packed, lookup, nibble);
        return UnsignedTimesSigned<TMode>(lo, hi, Vector256.Load(q), Vector256.Load(q + 32), AvxVnni.IsSupported, ones);
    }

    /// <summary>Four pairs' lanes summed per block, in <see cref="WholeOrder"/> (what two rounds of <c>vphaddd</c> give),
    /// by unpacking and adding: six in-lane shuffles (two a cycle) and three adds, where three <c>vphaddd</c> take six
    /// cycles on a Zen 3.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SumFour(Vector256<int> s0, Vector256<int> s1, Vector256<int> s2, Vector256<int> s3)
    {
        var a01 = (Avx2.UnpackLow(s0, s1) + Avx2.UnpackHigh(s0, s1)).AsInt64();
        var a23 = (Avx2.UnpackLow(s2, s3) + Avx2.UnpackHigh(s2, s3)).AsInt64();
        return Avx2.UnpackLow(a01, a23).AsInt32() + Avx2.UnpackHigh(a01, a23).AsInt32();
    }

    /// <summary>Two pairs' lanes summed two by two (what one <c>vphaddd</c> gives: each block's halves, in
    /// <see cref="HalvesOrder"/>) by two in-lane <c>vshufps</c> and an add: <c>vphaddd</c> takes two cycles on a Zen 3.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> SumTwo(Vector256<int> s0, Vector256<int> s1) =>
        Avx.Shuffle(s0.AsSingle(), s1.AsSingle(), 0b10_00_10_00).AsInt32() + Avx.Shuffle(s0.AsSingle(), s1.AsSingle(), 0b11_01_11_01).AsInt32();

    /// <summary>A reduced step's eight totals less their biases (<paramref name="reduced"/>), converted and multiplied by
    /// their factors: eight blocks' (<c>c[j..j+7]</c> permuted by <see cref="WholeOrderLanes"/>) or four blocks' two each
    /// (<c>c[2j..2j+7]</c>, the middle pairs swapped).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Reduce<TMode>(Vector256<int> sums, int* reduced, float* factors, Vector256<float> total)
        where TMode : struct, IMode
    {
        var f = TMode.HalfBlocks
            ? Avx2.Permute4x64(Vector256.Load(factors).AsDouble(), 0b11_01_10_00).AsSingle()
            : Avx2.PermuteVar8x32(Vector256.Load(factors), WholeOrderLanes);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums - Vector256.Load(reduced)), f, total);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Pair<TMode>(byte* codes, int blockStride, int j, float* c, sbyte* q, int* correction,
        Vector256<sbyte> table, byte* pairTables, int* pairIndex, Vector256<byte> nibble, Vector256<short> ones, Vector256<int> spread,
        Vector256<float> total) where TMode : struct, IMode
    {
        var (lo, hi) = Unpack<TMode>(codes, blockStride, j, table, pairTables, pairIndex, nibble);
        var sums = Products<TMode>(lo, hi, q, correction, j, ones);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), Factors<TMode>(c, j, spread), total);
    }

    /// <summary>Blocks j and j + 1 as unsigned weights: low nibbles of both in one register, high nibbles in the other,
    /// through their table(s); the codes 512 bytes ahead are asked for.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<sbyte> Low, Vector256<sbyte> High) Unpack<TMode>(byte* codes, int blockStride, int j, Vector256<sbyte> table,
        byte* pairTables, int* pairIndex, Vector256<byte> nibble) where TMode : struct, IMode
    {
        byte* first = codes + (nint)j * blockStride;
        Sse.Prefetch0(first + PrefetchAhead);
        var packed = blockStride == 16 ? Vector256.Load(first) : Vector256.Create(Vector128.Load(first), Vector128.Load(first + blockStride));
        return Split<TMode>(packed, TMode.PerPair ? Vector256.Load((sbyte*)pairTables + pairIndex[j]) : table, nibble);
    }

    /// <summary>Two blocks' code bytes as unsigned weights: low nibbles in one register, high in the other, through
    /// <paramref name="lookup"/> (the table, or the pair's two tables) where the mode has one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static (Vector256<sbyte> Low, Vector256<sbyte> High) Split<TMode>(Vector256<byte> packed, Vector256<sbyte> lookup, Vector256<byte> nibble)
        where TMode : struct, IMode
    {
        var lo = (packed & nibble).AsSByte();
        var hi = (Vector256.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & nibble).AsSByte();
        if (TMode.UseTable)
        {
            lo = Avx2.Shuffle(lookup, lo);
            hi = Avx2.Shuffle(lookup, hi);
        }
        return (lo, hi);
    }

    /// <summary>The two blocks' integer totals (Σ u·q − bias·Σq) in their int32 lanes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<int> Products<TMode>(Vector256<sbyte> lo, Vector256<sbyte> hi, sbyte* q, int* correction, int j, Vector256<short> ones)
        where TMode : struct, IMode
    {
        var sums = UnsignedTimesSigned<TMode>(lo, hi, Vector256.Load(q + j * 32), Vector256.Load(q + j * 32 + 32), AvxVnni.IsSupported, ones);
        return sums - Vector256.Load(correction + j * 4);
    }

    /// <summary>
    /// Σ over each group of four bytes of lo·qLo + hi·qHi (u unsigned, q signed) in int32 lanes: one <c>vpdpbusd</c>
    /// per half where the CPU has AVX-VNNI (<paramref name="vnni"/>: the callers pass <see cref="AvxVnni.IsSupported"/>,
    /// a constant to the JIT), else <c>vpmaddubsw</c> + <c>vpmaddwd</c>. The same integers either way: the AVX2 path's
    /// int16 step never saturates (|u| ≤ 64 with both halves added there, ≤ 127 when <see cref="IMode.Wide"/> widens them
    /// apart; |q| ≤ 127), and VNNI has no int16 step. <c>NibbleDotTests</c> compares the two.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<int> UnsignedTimesSigned<TMode>(Vector256<sbyte> lo, Vector256<sbyte> hi, Vector256<sbyte> qLo, Vector256<sbyte> qHi,
        bool vnni, Vector256<short> ones) where TMode : struct, IMode
    {
        if (vnni)
            return AvxVnni.MultiplyWideningAndAdd(AvxVnni.MultiplyWideningAndAdd(Vector256<int>.Zero, lo.AsByte(), qLo), hi.AsByte(), qHi);
        if (TMode.Wide)
            return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(lo.AsByte(), qLo), ones)
                 + Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(hi.AsByte(), qHi), ones);
        return Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(lo.AsByte(), qLo) + Avx2.MultiplyAddAdjacent(hi.AsByte(), qHi), ones);
    }

    /// <summary>The two blocks' factors spread over their int32 lanes (four per factor, two per factor with halves).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Factors<TMode>(float* c, int j, Vector256<int> spread) where TMode : struct, IMode =>
        TMode.HalfBlocks
            ? Avx2.PermuteVar8x32(Vector128.Load(c + 2 * j).ToVector256Unsafe(), Vector256.Create(0, 0, 1, 1, 2, 2, 3, 3))
            : Avx2.PermuteVar8x32(Vector128.CreateScalarUnsafe(*(double*)(c + j)).AsSingle().ToVector256Unsafe(), spread);

    /// <summary>An odd last block j (outside the pairs, its activations in their own order, its pair's tables both its
    /// own): factor(s) × <paramref name="xs"/> × (Σ u·q − bias·Σq).</summary>
    private static float OddBlock<TMode>(byte* codes, int blockStride, int j, Vector256<sbyte> table, byte* pairTables, int* pairIndex,
        sbyte* q, float* factors, float xs, Activations set, int bias) where TMode : struct, IMode
    {
        var nibble = Vector128.Create((byte)0x0F);
        var packed = Vector128.Load(codes + (nint)j * blockStride);
        var u = Vector256.Create(packed & nibble, Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & nibble).AsSByte();
        if (TMode.PerPair) u = Avx2.Shuffle(Vector256.Load((sbyte*)pairTables + pairIndex[j]), u);
        else if (TMode.UseTable) u = Avx2.Shuffle(table, u);
        var sums = Avx2.MultiplyAddAdjacent(Avx2.MultiplyAddAdjacent(u.AsByte(), Vector256.Load(q + j * 32)), Vector256.Create((short)1));
        if (!TMode.HalfBlocks) return factors[j] * xs * (Vector256.Sum(sums) - bias * set.Sums[j]);
        int first = sums[0] + sums[1] + sums[4] + sums[5], second = sums[2] + sums[3] + sums[6] + sums[7];
        return factors[2 * j] * xs * (first - bias * set.HalfSums[2 * j]) + factors[2 * j + 1] * xs * (second - bias * set.HalfSums[2 * j + 1]);
    }

    /// <summary>Activation vectors of one many-vector product at most (an accumulator register each).</summary>
    public const int MaxVectors = 8;

    [ThreadStatic] private static Activations[]? _many;

    [ThreadStatic] private static float[]? _ones;

    /// <summary>At least <paramref name="count"/> ones (pinned): the activation factors that leave a row's weight factors
    /// alone when a per-row factor routine is used for <see cref="RowMany{TMode}"/>.</summary>
    public static float* Ones(int count)
    {
        if (_ones is null || _ones.Length < count)
        {
            _ones = GC.AllocateArray<float>(Math.Max(count, 256), pinned: true);
            _ones.AsSpan().Fill(1f);
        }
        return (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_ones));
    }

    /// <summary>This thread's activation sets for the <paramref name="vectors"/> rows of <paramref name="x"/> (each
    /// <paramref name="cols"/> long), quantized as <see cref="Activations.Set"/> does.</summary>
    public static Activations[] QuantizeMany(ReadOnlySpan<float> x, int vectors, int cols, bool evensThenOdds, int bias, bool halves = false)
    {
        var sets = ScratchMany(vectors);
        for (int v = 0; v < vectors; v++) sets[v].Set(x.Slice(v * cols, cols), evensThenOdds, bias, halves);
        return sets;
    }

    /// <summary>This thread's scratch for <paramref name="vectors"/> activation vectors.</summary>
    private static Activations[] ScratchMany(int vectors)
    {
        var sets = _many ??= new Activations[MaxVectors];
        for (int v = 0; v < vectors; v++) sets[v] ??= new Activations();
        return sets;
    }

    /// <summary>
    /// <see cref="Row{TMode}"/> for several activation vectors at once (a token-factory step): each pair of blocks is
    /// unpacked (and looked up) once and multiplied with every vector's codes; <paramref name="weights"/> holds the row's
    /// weight factors alone (one per block, two with <see cref="IMode.HalfBlocks"/>), each vector's activation scales
    /// come from its <see cref="Activations.Spread"/>. <c>results[v·resultStride] = row · x_v</c>.
    /// </summary>
    public static void RowMany<TMode>(byte* codes, int blockStride, int blocks, float* weights, Activations[] sets, int vectors,
        Vector256<sbyte> table, byte* pairTables, int* pairIndex, int bias, float* results, int resultStride) where TMode : struct, IMode
    {
        // Four vectors a pass over the row, their accumulators in registers (the row's codes stay in L1 for the next pass).
        for (int first = 0; first < vectors; first += 4)
            Group<TMode>(codes, blockStride, blocks, weights, sets, first, Math.Min(4, vectors - first), table, pairTables, pairIndex, bias,
                results + (nint)first * resultStride, resultStride);
    }

    private static void Group<TMode>(byte* codes, int blockStride, int blocks, float* weights, Activations[] sets, int first, int count,
        Vector256<sbyte> table, byte* pairTables, int* pairIndex, int bias, float* results, int resultStride) where TMode : struct, IMode
    {
        var nibble = Vector256.Create((byte)0x0F);
        var ones = Vector256.Create((short)1);
        var spread = Vector256.Create(0, 0, 0, 0, 1, 1, 1, 1);
        var halves = Vector256.Create(0, 0, 1, 1, 2, 2, 3, 3);
        // Unused slots point at the first vector (their sums are computed and dropped, so the loop has no branches
        // but the one on count).
        Activations s0 = sets[first], s1 = sets[first + Math.Min(1, count - 1)], s2 = sets[first + Math.Min(2, count - 1)], s3 = sets[first + Math.Min(3, count - 1)];
        sbyte* q0 = Q(s0), q1 = Q(s1), q2 = Q(s2), q3 = Q(s3);
        int* c0 = B(s0), c1 = B(s1), c2 = B(s2), c3 = B(s3);
        float* x0 = S(s0), x1 = S(s1), x2 = S(s2), x3 = S(s3);
        Vector256<float> t0 = default, t1 = default, t2 = default, t3 = default;
        int j = 0;
        for (; j + 1 < blocks; j += 2)
        {
            var (lo, hi) = Unpack<TMode>(codes, blockStride, j, table, pairTables, pairIndex, nibble);
            var w = Factors<TMode>(weights, j, spread);
            t0 = Accumulate<TMode>(lo, hi, q0, c0, x0, j, w, ones, t0);
            if (count > 1) t1 = Accumulate<TMode>(lo, hi, q1, c1, x1, j, w, ones, t1);
            if (count > 2) t2 = Accumulate<TMode>(lo, hi, q2, c2, x2, j, w, ones, t2);
            if (count > 3) t3 = Accumulate<TMode>(lo, hi, q3, c3, x3, j, w, ones, t3);
        }
        Span<float> totals = [Vector256.Sum(t0), Vector256.Sum(t1), Vector256.Sum(t2), Vector256.Sum(t3)];
        for (int v = 0; v < count; v++)
        {
            float total = totals[v];
            if (j < blocks)
            {
                var set = sets[first + v];
                total += OddBlock<TMode>(codes, blockStride, j, table, pairTables, pairIndex, Q(set), weights, set.Scales[j], set, bias);
            }
            results[v * resultStride] = total;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> Accumulate<TMode>(Vector256<sbyte> lo, Vector256<sbyte> hi, sbyte* q, int* correction, float* scale,
        int j, Vector256<float> w, Vector256<short> ones, Vector256<float> total) where TMode : struct, IMode
    {
        var sums = Products<TMode>(lo, hi, q, correction, j, ones);
        return Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), w * Vector256.Load(scale + j * 4), total);
    }

    private static sbyte* Q(Activations a) => (sbyte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a.Q));

    private static int* B(Activations a) => (int*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a.Bias));

    private static int* R(Activations a) => (int*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a.Reduced));

    private static float* S(Activations a) => (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(a.Spread));

    /// <summary>A 16-entry int8 table in each 128-bit lane (vpshufb looks up within lanes).</summary>
    public static Vector256<sbyte> Broadcast(ReadOnlySpan<sbyte> table16) => Vector256.Create(Vector128.Create(table16));
}
