using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Nanoscale.Formats.Mx;

namespace Nanoscale.Formats.Ggml;

/// <summary>
/// One token's product on ggml's blocks without decoding rows, as llama.cpp's own <c>vec_dot_q8_0_q8_0</c> and
/// <c>vec_dot_q4_0_q8_0</c> do it: the activations are quantized once per product to int8 per 32 (scale amax/127,
/// in natural element order, because ggml's nibbles hold elements j and j + 16), the block's codes become int8
/// (Q8_0 as stored; Q4_0's nibbles minus 8 and ggml-MXFP4's doubled E2M1 values through a 16-entry table), the 32
/// products are summed in integers (vpmaddubsw, vpmaddwd), and the block's scale times the activations' scale is
/// applied once per block. AVX2 and whole blocks only. Q4_0 and ggml-MXFP4 products run through the shared unsigned
/// two-blocks-a-step kernel (<see cref="NibbleDot"/>); this file's sign-trick loop (<see cref="DotRows"/>) serves
/// Q8_0 and stays the 4-bit layouts' twin (<c>FusedDotTests.GgmlNibbleKernelEqualsTheSignTrickTwin</c>).
/// </summary>
/// <remarks>Exact in the weights; the activations carry int8 rounding — the bound <c>FusedDotTests</c> states for
/// MXFP4 holds here too (each activation off by at most amax/254 of its block).</remarks>
internal static class GgmlDot
{
    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Q4_0's codes as int8: q − 8.</summary>
    private static readonly sbyte[] Q4Table = [-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7];

    /// <summary>ggml's <c>kvalues_mxfp4</c>: E2M1 doubled.</summary>
    private static readonly sbyte[] Mxfp4Table = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

    /// <summary>The kinds of block this kernel reads.</summary>
    public enum Layout { Q8_0, Q4_0, Mxfp4 }

    /// <summary>y[r] = Σ_j d_w(j) · d_x(j) · Σ_i w_i · q_i over the rows of <paramref name="blocks"/>.</summary>
    public static void DotRows(Layout layout, ReadOnlySpan<byte> blocks, int rowCount, int blocksPerRow,
        ReadOnlySpan<sbyte> q, ReadOnlySpan<float> qScales, Span<float> y)
    {
        switch (layout)
        {
            case Layout.Q8_0: DotRows<Q8Block>(blocks, rowCount, blocksPerRow, q, qScales, y); break;
            case Layout.Q4_0: DotRows<Q4Block>(blocks, rowCount, blocksPerRow, q, qScales, y); break;
            default: DotRows<Mxfp4Block>(blocks, rowCount, blocksPerRow, q, qScales, y); break;
        }
    }

    /// <summary>One ggml block as 32 int8 weights and its scale (specialised per layout by the JIT).</summary>
    private interface IBlock
    {
        static abstract int Bytes { get; }
        static abstract Vector256<sbyte> Weights(ref byte block, Vector128<sbyte> lut);
        static abstract float Scale(ref byte block);
    }

    private readonly struct Q8Block : IBlock
    {
        public static int Bytes => 34;
        public static Vector256<sbyte> Weights(ref byte block, Vector128<sbyte> lut) => Vector256.LoadUnsafe(ref Unsafe.Add(ref block, 2)).AsSByte();
        public static float Scale(ref byte block) => HalfToSingle(Unsafe.ReadUnaligned<ushort>(ref block));
    }

    private readonly struct Q4Block : IBlock
    {
        public static int Bytes => 18;
        public static Vector256<sbyte> Weights(ref byte block, Vector128<sbyte> lut) => Nibbles(Vector128.LoadUnsafe(ref Unsafe.Add(ref block, 2)), lut);
        public static float Scale(ref byte block) => HalfToSingle(Unsafe.ReadUnaligned<ushort>(ref block));
    }

    private readonly struct Mxfp4Block : IBlock
    {
        public static int Bytes => 17;
        public static Vector256<sbyte> Weights(ref byte block, Vector128<sbyte> lut) => Nibbles(Vector128.LoadUnsafe(ref Unsafe.Add(ref block, 1)), lut);
        public static float Scale(ref byte block) => HalfE8M0(block);
    }

    /// <summary>Low nibbles (elements 0–15) then high nibbles (16–31), each through the 16-entry table.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<sbyte> Nibbles(Vector128<byte> packed, Vector128<sbyte> lut)
    {
        Vector128<byte> nibble = Vector128.Create((byte)0x0F);
        Vector128<byte> lo = packed & nibble;
        Vector128<byte> hi = Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & nibble;
        return Vector256.Create(Ssse3.Shuffle(lut, lo.AsSByte()), Ssse3.Shuffle(lut, hi.AsSByte()));
    }

    private static void DotRows<TBlock>(ReadOnlySpan<byte> blocks, int rowCount, int blocksPerRow,
        ReadOnlySpan<sbyte> q, ReadOnlySpan<float> qScales, Span<float> y) where TBlock : struct, IBlock
    {
        if (qScales.Length < blocksPerRow || q.Length < blocksPerRow * 32 || y.Length < rowCount
            || blocks.Length < (long)rowCount * blocksPerRow * TBlock.Bytes)
            throw new ArgumentException("spans shorter than the rows");
        Vector128<sbyte> lut = Vector128.Create(typeof(TBlock) == typeof(Mxfp4Block) ? Mxfp4Table : Q4Table);
        Vector256<short> ones = Vector256.Create((short)1);
        ref byte b0 = ref MemoryMarshal.GetReference(blocks);
        ref sbyte q0 = ref MemoryMarshal.GetReference(q);
        ref float s0 = ref MemoryMarshal.GetReference(qScales);
        for (int r = 0; r < rowCount; r++)
        {
            // Two accumulators: consecutive blocks do not wait on each other's multiply-add.
            Vector256<float> even = Vector256<float>.Zero, odd = Vector256<float>.Zero;
            ref byte row = ref Unsafe.Add(ref b0, (nint)r * blocksPerRow * TBlock.Bytes);
            int j = 0;
            for (; j + 1 < blocksPerRow; j += 2)
            {
                ref byte a = ref Unsafe.Add(ref row, (nint)j * TBlock.Bytes);
                ref byte b = ref Unsafe.Add(ref a, TBlock.Bytes);
                even = Fma.MultiplyAdd(Int8Dot.BlockSum(TBlock.Weights(ref a, lut), ref Unsafe.Add(ref q0, j * 32), ones),
                    Vector256.Create(TBlock.Scale(ref a) * Unsafe.Add(ref s0, j)), even);
                odd = Fma.MultiplyAdd(Int8Dot.BlockSum(TBlock.Weights(ref b, lut), ref Unsafe.Add(ref q0, j * 32 + 32), ones),
                    Vector256.Create(TBlock.Scale(ref b) * Unsafe.Add(ref s0, j + 1)), odd);
            }
            if (j < blocksPerRow)
            {
                ref byte a = ref Unsafe.Add(ref row, (nint)j * TBlock.Bytes);
                even = Fma.MultiplyAdd(Int8Dot.BlockSum(TBlock.Weights(ref a, lut), ref Unsafe.Add(ref q0, j * 32), ones),
                    Vector256.Create(TBlock.Scale(ref a) * Unsafe.Add(ref s0, j)), even);
            }
            y[r] = Vector256.Sum(even + odd);
        }
    }

    /// <summary>Every IEEE half as float (256 KiB): one load per block instead of a conversion.</summary>
    private static readonly float[] Halves = [.. Enumerable.Range(0, 65536).Select(h => (float)BitConverter.UInt16BitsToHalf((ushort)h))];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HalfToSingle(ushort h) => Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(Halves), h);

    /// <summary>An IEEE half as float in a few integer operations (its magnitude bits under an f32's, × 2^112, the sign
    /// back; ±Inf and NaN from the table): per-block scales gathered before a row, where the 256 KiB table of every half
    /// would compete with the codes for the cache.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float HalfBits(ushort h)
    {
        if ((h & 0x7C00) == 0x7C00) return HalfToSingle(h);
        float magnitude = BitConverter.UInt32BitsToSingle((uint)(h & 0x7FFF) << 13) * 5.192296858534828e33f; // × 2^112
        return BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(magnitude) | (uint)(h & 0x8000) << 16);
    }

    /// <summary>
    /// Q8_0 or Q4_0 blocks decoded eight values at a time, as ggml's <c>dequantize_row</c> and the codec's scalar
    /// kernel do it: each code (q, or q − 8) converted exactly and multiplied once by the block's f16 scale (its bits
    /// widened by <see cref="HalfBits"/>), so the same floats. The codec's scalar loop had made the tiles of a GGUF Q8_0
    /// prompt slower than the products on them (docs/runtime.md, eighteenth session). False for other kinds or
    /// without AVX2.
    /// </summary>
    public static unsafe bool TryDequantize(GgmlKind kind, ReadOnlySpan<byte> blocks, int blockCount, Span<float> destination)
    {
        if (!Avx2.IsSupported || kind is not (GgmlKind.Q8_0 or GgmlKind.Q4_0)) return false;
        int bytes = GgmlCodec.BytesOf(kind);
        if (blocks.Length < (long)blockCount * bytes || destination.Length < (long)blockCount * 32)
            throw new ArgumentException("spans shorter than the blocks");
        fixed (byte* b0 = blocks)
        fixed (float* d0 = destination)
        {
            var nibble = Vector128.Create((byte)0x0F);
            var eight = Vector256.Create(8);
            for (int j = 0; j < blockCount; j++)
            {
                byte* b = b0 + (nint)j * bytes;
                float* y = d0 + (nint)j * 32;
                float scale = HalfBits(*(ushort*)b);
                if (kind == GgmlKind.Q8_0) Int8Dot.DecodeBlock((sbyte*)(b + 2), scale, y);
                else
                {
                    var d = Vector256.Create(scale);
                    // Element i in the low nibble of code byte i, element i + 16 in its high nibble.
                    var packed = Vector128.Load(b + 2);
                    var low = packed & nibble;
                    var high = Vector128.ShiftRightLogical(packed.AsUInt16(), 4).AsByte() & nibble;
                    (Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(low) - eight) * d).Store(y);
                    (Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(low, 8)) - eight) * d).Store(y + 8);
                    (Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(high) - eight) * d).Store(y + 16);
                    (Avx.ConvertToVector256Single(Avx2.ConvertToVector256Int32(Sse2.ShiftRightLogical128BitLane(high, 8)) - eight) * d).Store(y + 24);
                }
            }
        }
        return true;
    }

    /// <summary>2^(e − 128), ggml's E8M0 half (the table's values are doubled).</summary>
    private static float HalfE8M0(byte e) =>
        e < 2 ? BitConverter.UInt32BitsToSingle(0x0020_0000u << e) : BitConverter.UInt32BitsToSingle((uint)(e - 1) << 23);

    /// <summary>y[v·yStride + r] for <paramref name="vectors"/> activation vectors: each block's weights are unpacked
    /// once and multiplied with every vector's int8 block (the token factory's step on ggml's blocks).</summary>
    public static bool TryDotRowsMany(Layout layout, ReadOnlySpan<byte> blocks, int rowCount, int cols, int vectors,
        ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        if (!IsSupported || cols % 32 != 0 || vectors < 1 || vectors > MaxDotVectors(layout)) return false;
        int nb = cols / 32;
        if (layout == Layout.Q8_0)
        {
            Q8RowsMany(blocks, rowCount, nb, vectors, x, y, yStride);
            return true;
        }
        // Q4_0 and ggml-MXFP4: NibbleDot's unsigned kernel (IsSupported implies it).
        DotRowsNibblesMany(layout, blocks, rowCount, nb, vectors, x, y, yStride);
        return true;
    }

    /// <summary>Vectors of one several-vector product on the 4-bit layouts at most (<see cref="NibbleDot.MaxVectors"/>).</summary>
    public const int MaxVectors = NibbleDot.MaxVectors;

    /// <summary>The most vectors one <see cref="TryDotRowsMany"/> call takes: Q8_0's two-rows × four-vectors kernel
    /// takes any number (sixteen, as the lane kernels), the others <see cref="MaxVectors"/>.</summary>
    public static int MaxDotVectors(Layout layout) => layout == Layout.Q8_0 ? Int8Dot.MaxVectors : MaxVectors;

    /// <summary>Q8_0 rows for several vectors (<see cref="Int8Dot.RowsMany"/>): the rows' f16 block scales as floats
    /// first, then the codes where they lie in the blocks (34 bytes apart, after each block's scale).</summary>
    private static unsafe void Q8RowsMany(ReadOnlySpan<byte> blocks, int rowCount, int nb, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        int cols = nb * 32, bytes = Q8Block.Bytes;
        if (blocks.Length < (long)rowCount * nb * bytes || x.Length < vectors * cols || y.Length < (vectors - 1) * yStride + rowCount)
            throw new ArgumentException("spans shorter than the rows");
        var a = Int8Dot.Scratch;
        a.Set(x, vectors, cols);
        float[] scales = System.Buffers.ArrayPool<float>.Shared.Rent(rowCount * nb);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (float* ws = scales)
            fixed (float* y0 = y)
            {
                for (long i = 0; i < (long)rowCount * nb; i++) ws[i] = HalfBits(Unsafe.ReadUnaligned<ushort>(b0 + i * bytes));
                Int8Dot.RowsMany(b0 + 2, (nint)nb * bytes, bytes, ws, rowCount, nb, a, y0, yStride);
            }
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(scales); }
    }

    /// <summary>Q4_0's nibbles as they are (bias 8) and ggml-MXFP4's doubled E2M1 values plus 12, for <see cref="NibbleDot"/>.</summary>
    private static readonly sbyte[] Mxfp4Biased = [.. Mxfp4Table.Select(v => (sbyte)(v + 12))];

    /// <summary>
    /// Q4_0 and ggml-MXFP4 rows two blocks a step (<see cref="NibbleDot.Row{TMode}"/>): the activations quantized in natural
    /// order (low nibbles hold a block's first 16 elements), each row's block scales × activation scales gathered first.
    /// </summary>
    private static unsafe void DotRowsNibbles(Layout layout, ReadOnlySpan<byte> blocks, int rowCount, int blocksPerRow, ReadOnlySpan<float> x, Span<float> y)
    {
        bool q4 = layout == Layout.Q4_0;
        int bytes = q4 ? Q4Block.Bytes : Mxfp4Block.Bytes, bias = q4 ? 8 : 12;
        if (blocks.Length < (long)rowCount * blocksPerRow * bytes || y.Length < rowCount)
            throw new ArgumentException("spans shorter than the rows");
        var a = NibbleDot.Scratch;
        a.Set(x, evensThenOdds: false, bias);
        var table = NibbleDot.Broadcast(Mxfp4Biased);
        float[] c = System.Buffers.ArrayPool<float>.Shared.Rent(blocksPerRow);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (float* c0 = c)
            fixed (float* xs = a.Scales)
            {
                var factors = new StoredRowFactors(b0, (nint)blocksPerRow * bytes, q4, blocksPerRow, xs, c0);
                if (q4) NibbleDot.Rows<NibbleDot.Nibbles, StoredRowFactors>(b0 + 2, (nint)blocksPerRow * bytes, bytes, rowCount, blocksPerRow, a, table, null, bias, ref factors, y);
                else NibbleDot.Rows<NibbleDot.OneTable, StoredRowFactors>(b0 + 1, (nint)blocksPerRow * bytes, bytes, rowCount, blocksPerRow, a, table, null, bias, ref factors, y);
            }
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(c); }
    }

    /// <summary>Each stored row's factors for <see cref="NibbleDot.Rows{TMode, TFactors}"/> (<see cref="BlockScales"/>).</summary>
    /// <summary>Each repacked row's factors for <see cref="NibbleDot.Rows{TMode, TFactors}"/>: its float block scales
    /// × the activation scales.</summary>
    private readonly unsafe struct RepackedRowFactors(float* scales, int blocksPerRow, float* xs, float* c) : NibbleDot.IRowFactors
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* Prepare(int row, out int* pairIndex)
        {
            pairIndex = null;
            System.Numerics.Tensors.TensorPrimitives.Multiply(new ReadOnlySpan<float>(scales + (nint)row * blocksPerRow, blocksPerRow),
                new ReadOnlySpan<float>(xs, blocksPerRow), new Span<float>(c, blocksPerRow));
            return c;
        }
    }

    private readonly unsafe struct StoredRowFactors(byte* blocks, nint rowBytes, bool q4, int blocksPerRow, float* xs, float* c) : NibbleDot.IRowFactors
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* Prepare(int row, out int* pairIndex)
        {
            pairIndex = null;
            BlockScales(blocks + row * rowBytes, q4, blocksPerRow, xs, c);
            return c;
        }
    }

    /// <summary>c[j] = block j's scale × xs[j] over a row of Q4_0 (f16 scale) or ggml-MXFP4 (E8M0 half) blocks; xs
    /// all ones gives the weight scales alone.</summary>
    /// <remarks>Q4_0's f16 scales eight blocks at a time (<see cref="HalfScales8"/>), the rest and every ggml-MXFP4
    /// scale one by one: converting 256 halves one at a time cost more than the row's product.</remarks>
    internal static unsafe void BlockScales(byte* row, bool q4, int count, float* xs, float* c)
    {
        int j = 0;
        if (q4)
        {
            if (Avx2.IsSupported)
                for (; j + 8 <= count; j += 8)
                    Avx.Store(c + j, HalfScales8(row + (nint)j * Q4Block.Bytes, c + j) * Avx.LoadVector256(xs + j));
            for (; j < count; j++) c[j] = HalfBits(Unsafe.ReadUnaligned<ushort>(row + j * Q4Block.Bytes)) * xs[j];
        }
        else
        {
            if (Avx2.IsSupported)
                for (; j + 8 <= count; j += 8)
                    Avx.Store(c + j, E8M0Scales8(row + (nint)j * Mxfp4Block.Bytes) * Avx.LoadVector256(xs + j));
            for (; j < count; j++) c[j] = HalfE8M0(row[j * Mxfp4Block.Bytes]) * xs[j];
        }
    }

    /// <summary>The E8M0 halves of eight consecutive ggml-MXFP4 blocks (<see cref="HalfE8M0"/> each): one gather of 4
    /// bytes from each block's start (inside its 17 bytes), then 2^(e − 128) built in the exponent field, or for
    /// e &lt; 2 in the mantissa.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<float> E8M0Scales8(byte* blocks)
    {
        var offsets = Vector256.Create(0, 17, 34, 51, 68, 85, 102, 119);
        Vector256<int> e = Avx2.GatherVector256((int*)blocks, offsets, 1) & Vector256.Create(0xFF);
        Vector256<int> normal = Vector256.ShiftLeft(e - Vector256.Create(1), 23);
        Vector256<int> tiny = Avx2.ShiftLeftLogicalVariable(Vector256.Create(0x0020_0000), (e & Vector256.Create(1)).AsUInt32());
        return Avx2.BlendVariable(normal.AsByte(), tiny.AsByte(), Avx2.CompareGreaterThan(Vector256.Create(2), e).AsByte()).AsSingle();
    }

    /// <summary>The scalar twin of <see cref="BlockScales"/> (tests).</summary>
    internal static unsafe void BlockScalesReference(byte* row, bool q4, int count, float* xs, float* c)
    {
        for (int j = 0; j < count; j++)
            c[j] = (q4 ? HalfBits(Unsafe.ReadUnaligned<ushort>(row + j * Q4Block.Bytes)) : HalfE8M0(row[j * Mxfp4Block.Bytes])) * xs[j];
    }

    /// <summary>The f16 scales of eight consecutive Q4_0 blocks as floats, as <see cref="HalfBits"/> computes each: one
    /// gather (4 bytes from each block's start: its scale and two code bytes, inside the block), magnitude bits under an
    /// f32's × 2^112, the sign back; a lane holding ±Inf or NaN is redone by the table (<paramref name="spill"/> is
    /// scratch for that).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<float> HalfScales8(byte* blocks, float* spill)
    {
        var offsets = Vector256.Create(0, 18, 36, 54, 72, 90, 108, 126);
        Vector256<int> h = Avx2.GatherVector256((int*)blocks, offsets, 1) & Vector256.Create(0xFFFF);
        Vector256<int> magnitude = h & Vector256.Create(0x7FFF);
        Vector256<float> value = Vector256.ShiftLeft(magnitude, 13).AsSingle() * Vector256.Create(5.192296858534828e33f); // × 2^112
        value = (value.AsInt32() | Vector256.ShiftLeft(h & Vector256.Create(0x8000), 16)).AsSingle();
        Vector256<int> special = Avx2.CompareGreaterThan(magnitude, Vector256.Create(0x7BFF));
        if (special == Vector256<int>.Zero) return value;
        Avx.Store(spill, value);
        for (int i = 0; i < 8; i++)
            if (special.GetElement(i) != 0) spill[i] = HalfToSingle(Unsafe.ReadUnaligned<ushort>(blocks + i * Q4Block.Bytes));
        return Avx.LoadVector256(spill);
    }

    /// <summary>Q4_0 and ggml-MXFP4 rows for several vectors, each row unpacked once (<see cref="NibbleDot.RowMany{TMode}"/>).</summary>
    private static unsafe void DotRowsNibblesMany(Layout layout, ReadOnlySpan<byte> blocks, int rowCount, int blocksPerRow, int vectors,
        ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        bool q4 = layout == Layout.Q4_0;
        int bytes = q4 ? Q4Block.Bytes : Mxfp4Block.Bytes, bias = q4 ? 8 : 12, cols = blocksPerRow * 32;
        if (blocks.Length < (long)rowCount * blocksPerRow * bytes || x.Length < vectors * cols || y.Length < (vectors - 1) * yStride + rowCount)
            throw new ArgumentException("spans shorter than the rows");
        var sets = NibbleDot.QuantizeMany(x, vectors, cols, evensThenOdds: false, bias);
        var table = NibbleDot.Broadcast(Mxfp4Biased);
        float* ones = NibbleDot.Ones(blocksPerRow);
        float[] c = System.Buffers.ArrayPool<float>.Shared.Rent(blocksPerRow);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (float* c0 = c)
            fixed (float* y0 = y)
            {
                for (int r = 0; r < rowCount; r++)
                {
                    byte* row = b0 + (nint)r * blocksPerRow * bytes;
                    BlockScales(row, q4, blocksPerRow, ones, c0);
                    if (q4) NibbleDot.RowMany<NibbleDot.Nibbles>(row + 2, bytes, blocksPerRow, c0, sets, vectors, table, null, null, bias, y0 + r, yStride);
                    else NibbleDot.RowMany<NibbleDot.OneTable>(row + 1, bytes, blocksPerRow, c0, sets, vectors, table, null, null, bias, y0 + r, yStride);
                }
            }
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(c); }
    }

    /// <summary>
    /// A Q4_0 or ggml-MXFP4 tensor repacked once for products, as llama.cpp repacks its Q4_0: each block's 16 code bytes
    /// contiguous (stride 16, the layout our own MXFP4 runs at) and its scale decoded to a float beside them, so a
    /// product neither straddles cache lines with 17/18-byte blocks nor converts a scale per block. The same
    /// <see cref="NibbleDot"/> kernel and the same scale arithmetic as the stored layout: the results are equal bit
    /// for bit (<c>FusedDotTests.RepackedGgmlRowsEqualTheStoredLayout</c>). Costs memory: 20 bytes per 32 weights
    /// beside the mapped file (whose pages are then clean and reclaimable). <c>NANOSCALE_REPACK=0</c> turns it off.
    /// </summary>
    internal sealed unsafe class Repacked
    {
        private readonly byte[] _codes;
        private readonly float[] _scales;
        private readonly int _blocksPerRow;
        private readonly bool _q4;

        private Repacked(byte[] codes, float[] scales, int blocksPerRow, bool q4)
        {
            _codes = codes;
            _scales = scales;
            _blocksPerRow = blocksPerRow;
            _q4 = q4;
        }

        /// <summary>Whether a codec's tensors are repacked (Q4_0 and ggml-MXFP4 on a CPU with the kernel).</summary>
        public static bool Applies(IBlockCodec codec, int cols) =>
            (codec is GgmlCodec { Kind: GgmlKind.Q4_0 } || codec is GgmlMxfp4Codec) && cols % 32 == 0 && NibbleDot.IsSupported
            && Environment.GetEnvironmentVariable("NANOSCALE_REPACK") != "0";

        /// <summary>Repacks <paramref name="rows"/> rows of stored blocks; null when the tensor is too large for one
        /// array (it then runs on the stored layout).</summary>
        public static Repacked? Create(IBlockCodec codec, ReadOnlySpan<byte> blocks, long rows, int cols)
        {
            bool q4 = codec is GgmlCodec;
            int nb = cols / 32, bytes = q4 ? Q4Block.Bytes : Mxfp4Block.Bytes, codeOffset = q4 ? 2 : 1;
            if (rows * nb * 16 > Array.MaxLength || blocks.Length < rows * nb * bytes) return null;
            var codes = new byte[rows * nb * 16];
            var scales = new float[rows * nb];
            float* ones = NibbleDot.Ones(nb);
            fixed (byte* b0 = blocks)
            fixed (byte* c0 = codes)
            fixed (float* s0 = scales)
            {
                for (long r = 0; r < rows; r++)
                {
                    byte* row = b0 + r * nb * bytes;
                    BlockScales(row, q4, nb, ones, s0 + r * nb);
                    for (int j = 0; j < nb; j++)
                        Buffer.MemoryCopy(row + j * bytes + codeOffset, c0 + (r * nb + j) * 16, 16, 16);
                }
            }
            return new Repacked(codes, scales, nb, q4);
        }

        /// <summary>y[i] = row (firstRow + i) · x, as <see cref="TryDotRows"/> computes it on the stored layout.</summary>
        public void DotRows(long firstRow, int count, ReadOnlySpan<float> x, Span<float> y)
        {
            int nb = _blocksPerRow, bias = _q4 ? 8 : 12;
            if (firstRow < 0 || count < 0 || (firstRow + count) * nb > _scales.Length || y.Length < count)
                throw new ArgumentOutOfRangeException(nameof(firstRow), $"rows {firstRow}..{firstRow + count} of {_scales.Length / Math.Max(nb, 1)}");
            var a = NibbleDot.Scratch;
            a.Set(x[..(nb * 32)], evensThenOdds: false, bias);
            var table = NibbleDot.Broadcast(Mxfp4Biased);
            float[] c = System.Buffers.ArrayPool<float>.Shared.Rent(nb);
            try
            {
                fixed (byte* b0 = _codes)
                fixed (float* s0 = _scales)
                fixed (float* xs = a.Scales)
                fixed (float* c0 = c)
                {
                    var factors = new RepackedRowFactors(s0 + firstRow * nb, nb, xs, c0);
                    byte* rows = b0 + firstRow * nb * 16;
                    if (_q4) NibbleDot.Rows<NibbleDot.Nibbles, RepackedRowFactors>(rows, (nint)nb * 16, 16, count, nb, a, table, null, bias, ref factors, y);
                    else NibbleDot.Rows<NibbleDot.OneTable, RepackedRowFactors>(rows, (nint)nb * 16, 16, count, nb, a, table, null, bias, ref factors, y);
                }
            }
            finally { System.Buffers.ArrayPool<float>.Shared.Return(c); }
        }

        /// <summary>The most vectors one <see cref="TryDotRowsMany"/> call takes: sixteen on the lanes, else eight.</summary>
        public static int MaxDotVectors => NibbleLanes.IsSupported ? NibbleLanes.MaxVectors : MaxVectors;

        /// <summary>Several vectors (<c>y[v·yStride + i]</c>), each row unpacked once, as <see cref="TryDotRowsMany"/>;
        /// from <see cref="NibbleLanes.MinVectors"/> vectors on eight rows at a time in a register's lanes (<see cref="NibbleLanes"/>: the
        /// repacked codes are at stride 16 as the lane kernel reads them, Q4_0's nibble is its own unsigned value).</summary>
        public bool TryDotRowsMany(long firstRow, int count, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
        {
            int nb = _blocksPerRow, bias = _q4 ? 8 : 12, cols = nb * 32;
            if (vectors < 1 || vectors > MaxDotVectors) return false;
            if (x.Length < vectors * cols || y.Length < (vectors - 1) * yStride + count) throw new ArgumentException("spans shorter than the rows");
            if (NibbleLanes.IsSupported && vectors >= NibbleLanes.MinVectors)
            {
                Lanes(firstRow, count, vectors, x, y, yStride);
                return true;
            }
            var sets = NibbleDot.QuantizeMany(x, vectors, cols, evensThenOdds: false, bias);
            var table = NibbleDot.Broadcast(Mxfp4Biased);
            fixed (byte* b0 = _codes)
            fixed (float* s0 = _scales)
            fixed (float* y0 = y)
            {
                for (int i = 0; i < count; i++)
                {
                    long r = firstRow + i;
                    byte* row = b0 + r * nb * 16;
                    if (_q4) NibbleDot.RowMany<NibbleDot.Nibbles>(row, 16, nb, s0 + r * nb, sets, vectors, table, null, null, bias, y0 + i, yStride);
                    else NibbleDot.RowMany<NibbleDot.OneTable>(row, 16, nb, s0 + r * nb, sets, vectors, table, null, null, bias, y0 + i, yStride);
                }
            }
            return true;
        }

        private static readonly sbyte[] Identity = [.. Enumerable.Range(0, 16).Select(i => (sbyte)i)];

        [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once: a prompt pass alone may call it too rarely to leave tier 0
        private void Lanes(long firstRow, int count, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
        {
            const int Lanes = NibbleLanes.Lanes, GroupRows = NibbleLanes.GroupRows;
            int nb = _blocksPerRow, bias = _q4 ? 8 : 12;
            var a = NibbleLanes.Scratch;
            a.Set(x, vectors, nb * 32, evensThenOdds: false, bias);
            var table = new NibbleLanes.Tables(NibbleDot.Broadcast(_q4 ? Identity : Mxfp4Biased));
            var unpacked = NibbleLanes.Unpacked(nb);
            float[] factors = System.Buffers.ArrayPool<float>.Shared.Rent(nb * GroupRows);
            try
            {
                fixed (byte* b0 = _codes)
                fixed (float* s0 = _scales)
                fixed (float* f0 = factors)
                fixed (float* y0 = y)
                {
                    for (int r = 0; r < count; r += GroupRows)
                    {
                        int n = Math.Min(GroupRows, count - r);
                        long first = firstRow + r;
                        // The group's block scales, eight rows per block, each eight rows' after the previous eight's
                        // (missing rows of a partial eight repeat its first).
                        for (int half = 0; half * Lanes < n; half++)
                            NibbleLanes.PlaceRows(s0 + (first + half * Lanes) * nb, nb, Math.Min(Lanes, n - half * Lanes), nb, f0 + half * nb * Lanes);
                        NibbleLanes.Group(b0 + first * nb * 16, nb * 16, n, nb, f0, a, table, unpacked, y0 + r, yStride);
                    }
                }
            }
            finally { System.Buffers.ArrayPool<float>.Shared.Return(factors); }
        }
    }

    /// <summary>Runs the product with pooled scratch for the quantized activations; false when the CPU or the row
    /// length does not allow it.</summary>
    public static bool TryDotRows(Layout layout, ReadOnlySpan<byte> blocks, int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        if (!IsSupported || cols % 32 != 0) return false;
        int nb = cols / 32;
        if (layout != Layout.Q8_0 && NibbleDot.IsSupported)
        {
            DotRowsNibbles(layout, blocks, rowCount, nb, x[..cols], y);
            return true;
        }
        var scratch = MxDot.Rent(cols);
        try
        {
            Int8Dot.QuantizeActivations(x[..cols], scratch.Q.AsSpan(0, cols), scratch.Scales.AsSpan(0, nb));
            DotRows(layout, blocks, rowCount, nb, scratch.Q.AsSpan(0, cols), scratch.Scales.AsSpan(0, nb), y);
        }
        finally { MxDot.Return(scratch); }
        return true;
    }
}
