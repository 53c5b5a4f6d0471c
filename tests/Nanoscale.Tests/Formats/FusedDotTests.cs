using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Formats;

/// <summary>
/// The generation step's products on stored codes (issue 14's first kernel, MXFP4) against their reference twin:
/// decode the rows with the reference kernel, then multiply in double.
/// </summary>
public class FusedDotTests
{
    [Theory]
    [InlineData(1, 32, 1)]
    [InlineData(7, 256, 2)]
    [InlineData(64, 2048, 3)]
    [InlineData(5, 448, 17)]   // 14 blocks: a step of eight (vphaddd), then three pairs
    public void Mxfp4DotOnTheCodesEqualsDecodeThenMultiply(int rows, int cols, int seed) => Int8DotEqualsDecodeThenMultiply("mxfp4", rows, cols, seed);

    /// <summary>MXINT8 as llama.cpp's Q8_0 (<see cref="Nanoscale.Formats.Int8Dot"/>): int8 codes × int8 activations, the
    /// same bound; rows not whole blocks of 32 decode.</summary>
    [Theory]
    [InlineData(16, 512, 5)]
    [InlineData(3, 96, 6)]     // an odd number of blocks: the last one alone
    public void Mxint8IntegerDotEqualsDecodeThenMultiply(int rows, int cols, int seed) => Int8DotEqualsDecodeThenMultiply("mxint8", rows, cols, seed);

    /// <summary>MXINT8's most negative code (−128, which decoders accept and the encoder never writes) and a NaN block
    /// scale: the int8 kernel gives what decoding gives.</summary>
    [Fact]
    public void Mxint8ExtremeCodeAndNaNScale()
    {
        var codec = CodecRegistry.CreateBlockCodec("mxint8");
        var blocks = new byte[2 * 64];
        for (int i = 0; i < blocks.Length; i++) blocks[i] = (byte)(i * 37 + 11);
        blocks[5] = 0x80;                                   // −128
        byte[] scales = [127, 130, 0xFF, 120];              // row 1's first block: NaN
        float[] x = [.. Enumerable.Range(0, 64).Select(i => (float)Math.Sin(i) + 0.1f)];
        var y = new float[2];
        if (!codec.TryDotRows(blocks, scales, [], 2, 64, x, y)) return;
        var decoded = new float[128];
        codec.Dequantize(blocks, scales, [], 2, 64, new CodecOptions { Kernel = CodecKernel.Reference }, decoded);
        Assert.Equal(-2f * 1f, decoded[5]);                 // −128 · 2^−6 · 2^(127−127)
        double exact = Enumerable.Range(0, 64).Sum(i => (double)decoded[i] * x[i]);
        double magnitude = Enumerable.Range(0, 64).Sum(i => Math.Abs((double)decoded[i] * x[i]));
        Assert.True(Math.Abs(y[0] - exact) <= 0.01 * magnitude, $"{y[0]} vs {exact}");
        Assert.True(float.IsNaN(decoded[64]) && float.IsNaN(y[1]), $"{y[1]}");
    }

    /// <summary>llama.cpp's formats on their own blocks (int8 activations, as ggml's vec_dot): the same bound.</summary>
    [Theory]
    [InlineData("q8_0", 7, 256, 4)]
    [InlineData("q4_0", 64, 2048, 5)]
    [InlineData("ggml-mxfp4", 7, 256, 6)]
    [InlineData("q8_0", 1, 32, 7)]
    [InlineData("q4_0", 5, 352, 8)]        // 11 blocks: pairs and an odd last block
    [InlineData("ggml-mxfp4", 3, 96, 9)]
    [InlineData("ggml-mxfp4", 4, 416, 18)] // 13 blocks apart (strided): a step of eight, two pairs, an odd last block
    [InlineData("q4_0", 3, 1024, 19)]      // 32 blocks: four steps of eight
    public void GgmlDotOnTheBlocksEqualsDecodeThenMultiply(string spec, int rows, int cols, int seed) => Int8DotEqualsDecodeThenMultiply(spec, rows, cols, seed);

    /// <summary>NVFP4 in integers (<c>NvFp4Dot</c>): a scale per 16 elements inside each int8 group of 32, both global
    /// conventions, an odd last group (11 groups).</summary>
    [Theory]
    [InlineData("nvfp4", 16, 512, 14)]
    [InlineData("nvfp4", 5, 352, 15)]
    [InlineData("nvfp4:global=divisor", 4, 96, 16)]
    [InlineData("nvfp4", 3, 448, 20)]   // 14 groups: three steps of four (vphaddd on half blocks), then a pair
    public void NvFp4IntegerDotEqualsDecodeThenMultiply(string spec, int rows, int cols, int seed) => Int8DotEqualsDecodeThenMultiply(spec, rows, cols, seed);

    /// <summary>MXFP6-E2M3 in integers (<see cref="Nanoscale.Formats.Mx.Mx6IntDot"/>: values ×8 are int8, int8
    /// activations): the int8 bound against decoding, one block, odd block counts, and a row whose last block ends the
    /// buffer (read through a copy).</summary>
    [Theory]
    [InlineData(16, 512, 22)]
    [InlineData(3, 32, 23)]
    [InlineData(7, 352, 24)]
    public void Mxfp6IntegerDotEqualsDecodeThenMultiply(int rows, int cols, int seed) => Int8DotEqualsDecodeThenMultiply("mxfp6", rows, cols, seed);

    /// <summary>The MXFP6-E2M3 integer kernel equals its scalar twin (the same integers code by code, summed in double)
    /// to float summation order, on every code (both signs, zeros and subnormals) and random scales; E3M2, whose values
    /// need more than int8, has no integer kernel.</summary>
    [Fact]
    public void Mxfp6IntegerKernelEqualsItsScalarTwin()
    {
        Assert.Null(Nanoscale.Formats.Mx.Mx6IntDot.For(ElementFormat.E3M2));
        var dot = Nanoscale.Formats.Mx.Mx6IntDot.For(ElementFormat.E2M3);
        if (dot is null) return; // no AVX2 here
        const int rows = 5, blocks = 11, cols = blocks * 32, bytesPerRow = blocks * 24;
        var random = new Random(6);
        byte[] packed = SixBitRows(rows, cols, random);
        byte[] scales = [.. Enumerable.Range(0, rows * blocks).Select(_ => (byte)random.Next(110, 140))];
        float[] x = [.. Enumerable.Range(0, cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var y = new float[rows];
        dot.DotRows(packed, scales, rows, cols, x, y);
        for (int r = 0; r < rows; r++)
        {
            double twin = dot.RowReference(packed.AsSpan(r * bytesPerRow, bytesPerRow), scales.AsSpan(r * blocks, blocks), x);
            Assert.True(Math.Abs(y[r] - twin) <= 1e-5 * (Math.Abs(twin) + 1e-3), $"row {r}: {y[r]} vs {twin}");
        }
    }

    /// <summary>Rows of packed 6-bit codes: every code in the first 256, then random ones.</summary>
    private static byte[] SixBitRows(int rows, int cols, Random random)
    {
        int bytesPerRow = cols / 32 * 24;
        var codes = new byte[rows * cols];
        for (int i = 0; i < codes.Length; i++) codes[i] = (byte)(i < 256 ? i % 64 : random.Next(64));
        var packed = new byte[rows * bytesPerRow];
        for (int r = 0; r < rows; r++)
            BlockPacking.Pack(codes.AsSpan(r * cols, cols), 6, packed.AsSpan(r * bytesPerRow, bytesPerRow));
        return packed;
    }

    /// <summary>MXFP6-E2M3's several-vector kernel on the lanes against its scalar twin, bit for bit: every code, groups of
    /// sixteen rows, a partial eight and a partial group (19 and 5 rows), 6 and 16 vectors, and one NaN scale (E8M0
    /// 0xFF), which makes its row NaN for every vector and leaves the others alone.</summary>
    [Theory]
    [InlineData(19, 6)]
    [InlineData(19, 16)]
    [InlineData(5, 7)]
    [InlineData(32, 16)]
    public void Mxfp6LanesEqualTheirScalarTwinBitForBit(int rows, int vectors)
    {
        var dot = Nanoscale.Formats.Mx.Mx6IntDot.For(ElementFormat.E2M3);
        if (dot is null || !NibbleLanes.IsSupported) return; // no AVX2 here
        const int blocks = 11, cols = blocks * 32, bytesPerRow = blocks * 24;
        var random = new Random(rows * 100 + vectors);
        byte[] packed = SixBitRows(rows, cols, random);
        byte[] scales = [.. Enumerable.Range(0, rows * blocks).Select(_ => (byte)random.Next(110, 140))];
        scales[2 * blocks + 3] = 0xFF;
        float[] x = [.. Enumerable.Range(0, vectors * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var y = new float[vectors * rows];
        dot.DotRowsLanes(packed, scales, rows, cols, vectors, x, y, rows);
        var a = NibbleLanes.Scratch; // the kernel's activations, kept for the twin
        for (int v = 0; v < vectors; v++)
            for (int r = 0; r < rows; r++)
            {
                float twin = dot.LanesRowReference(packed.AsSpan(r * bytesPerRow, bytesPerRow), scales.AsSpan(r * blocks, blocks), a, v);
                float got = y[v * rows + r];
                Assert.Equal(r == 2, float.IsNaN(got));
                Assert.True(float.IsNaN(twin) ? float.IsNaN(got) : BitConverter.SingleToInt32Bits(got) == BitConverter.SingleToInt32Bits(twin),
                    $"vector {v} row {r}: {got} vs {twin}");
            }
    }

    /// <summary>The int8 several-vector kernel (Q8_0, MXINT8: two rows × four vectors a pass) against its scalar twin,
    /// bit for bit: an odd last row and partial quads of vectors (their repeated row/vector must not be written), codes
    /// −128 and 127, blocks 34 bytes apart after a 2-byte scale (Q8_0's layout) or packed (MXINT8's), one NaN weight
    /// scale (its row NaN for every vector, the others left alone), a zero activation block, and outputs at a stride with
    /// a sentinel between rows that must stay untouched.</summary>
    [Theory]
    [InlineData(5, 7, 11, 34)]
    [InlineData(1, 1, 1, 32)]
    [InlineData(4, 16, 8, 32)]
    [InlineData(3, 6, 3, 34)]
    [InlineData(2, 13, 64, 34)]
    public unsafe void Int8RowsManyEqualsItsScalarTwinBitForBit(int rows, int vectors, int nb, int blockStride)
    {
        if (!Nanoscale.Formats.Ggml.GgmlDot.IsSupported) return; // no AVX2 here
        var random = new Random(rows * 1000 + vectors * 10 + nb);
        int cols = nb * 32, rowStride = nb * blockStride;
        byte[] codes = new byte[rows * rowStride + 2];
        random.NextBytes(codes);
        codes[2] = 0x80; // −128
        codes[3] = 0x7F;
        float[] scales = [.. Enumerable.Range(0, rows * nb).Select(_ => (float)Math.ScaleB(random.NextDouble() + 0.5, random.Next(-12, 4)))];
        if (rows > 1) scales[nb + nb / 2] = float.NaN;
        float[] x = [.. Enumerable.Range(0, vectors * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        x.AsSpan(0, 32).Clear();
        var a = new Int8Dot.Vectors();
        a.Set(x, vectors, cols);
        int stride = rows + 3;
        var y = new float[(vectors - 1) * stride + rows];
        var twin = new float[y.Length];
        y.AsSpan().Fill(-7f);
        twin.AsSpan().Fill(-7f);
        fixed (byte* c0 = codes)
        fixed (float* s0 = scales)
        fixed (float* y0 = y)
            Int8Dot.RowsMany(c0 + 2, rowStride, blockStride, s0, rows, nb, a, y0, stride);
        Int8Dot.RowsManyReference(codes.AsSpan(2), rowStride, blockStride, scales, rows, nb, a, twin, stride);
        for (int v = 0; v < vectors; v++)
        {
            for (int r = 0; r < rows; r++)
            {
                float got = y[v * stride + r], expected = twin[v * stride + r];
                Assert.Equal(rows > 1 && r == 1, float.IsNaN(got));
                Assert.True(float.IsNaN(expected) ? float.IsNaN(got) : BitConverter.SingleToInt32Bits(got) == BitConverter.SingleToInt32Bits(expected),
                    $"vector {v} row {r}: {got} vs {expected}");
            }
            if (v + 1 < vectors)
                for (int gap = rows; gap < stride; gap++) Assert.Equal(-7f, y[v * stride + gap]);
        }
    }

    /// <summary>NVFP4's per-row factors decode a run of 32 normal scale codes by shift and add alone and any other run
    /// code by code: rows whose UE4M3 codes are every value from 0 to 0x7E give what decoding gives — rows 0–1 only
    /// zero, subnormals and the smallest normals (codes 0–15, all scales within 2^−9..2^−5, so a subnormal decoded as a
    /// normal would be off by far more than the bound), rows 2–4 every code in turn (runs of 32 normal codes among
    /// them), row 5 as encoded. 1536 columns: 96 codes a row, three runs of 32.</summary>
    [Fact]
    public void NvFp4FactorsTakeEveryScaleCode() => Int8DotEqualsDecodeThenMultiply("nvfp4", 6, 1536, 21, scales =>
    {
        for (int i = 0; i < 2 * 96; i++) scales[i] = (byte)(i % 16);
        for (int i = 2 * 96; i < 5 * 96; i++) scales[i] = (byte)(i % 0x7F);
    });

    /// <summary>ggml's Q4_0 and MXFP4 blocks: the unsigned two-blocks-a-step kernel the runtime uses against the
    /// sign-trick loop on the same int8 activations (the same integers per block, so float summation order only).</summary>
    [Theory]
    [InlineData("q4_0", 0)]
    [InlineData("ggml-mxfp4", 1)]
    public void GgmlNibbleKernelEqualsTheSignTrickTwin(string spec, int layout)
    {
        var codec = CodecRegistry.CreateBlockCodec(spec);
        const int rows = 9, cols = 352;
        var random = new Random(17);
        float[] w = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float[] x = [.. Enumerable.Range(0, cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var (blocks, scales, tensorData) = BlockMatrix.Encode(codec, w, rows, cols);
        var fast = new float[rows];
        if (!codec.TryDotRows(blocks, scales, tensorData, rows, cols, x, fast)) return; // no AVX2 here
        var q = new sbyte[cols];
        var qScales = new float[cols / 32];
        Nanoscale.Formats.Int8Dot.QuantizeActivations(x, q, qScales);
        var twin = new float[rows];
        Nanoscale.Formats.Ggml.GgmlDot.DotRows(layout == 0 ? Nanoscale.Formats.Ggml.GgmlDot.Layout.Q4_0 : Nanoscale.Formats.Ggml.GgmlDot.Layout.Mxfp4,
            blocks, rows, cols / 32, q, qScales, twin);
        for (int r = 0; r < rows; r++)
            Assert.True(Math.Abs(fast[r] - twin[r]) <= 1e-5 * (Math.Abs(twin[r]) + 1), $"{spec} row {r}: {fast[r]} vs {twin[r]}");
    }

    /// <summary>ggml's 4-bit tensors repacked for products (codes at stride 16, scales as floats) give the stored
    /// layout's results bit for bit for one vector (and several without AVX-VNNI; with it, on the lanes, to summation
    /// order, in groups of eight and of sixteen rows), from any first row, with an odd block count.</summary>
    [Theory]
    [InlineData("q4_0")]
    [InlineData("ggml-mxfp4")]
    public void RepackedGgmlRowsEqualTheStoredLayout(string spec)
    {
        var codec = CodecRegistry.CreateBlockCodec(spec);
        const int rows = 29, cols = 352, vectors = 3;
        if (!Nanoscale.Formats.Ggml.GgmlDot.Repacked.Applies(codec, cols)) return; // no AVX2 here
        var random = new Random(23);
        float[] w = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)(random.NextDouble() * 2 - 1) * (float)Math.Exp(random.NextDouble() * 6 - 3))];
        float[] x = [.. Enumerable.Range(0, vectors * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var (blocks, scales, tensorData) = BlockMatrix.Encode(codec, w, rows, cols);
        var repacked = Nanoscale.Formats.Ggml.GgmlDot.Repacked.Create(codec, blocks, rows, cols)!;
        int bytesPerRow = blocks.Length / rows;
        // Five rows at a time (less than one register's eight), then calls of sixteen rows and more (the lanes' groups of
        // sixteen, whole and partial).
        (int First, int Count)[] calls = [.. Enumerable.Range(0, (rows + 4) / 5).Select(i => (5 * i, Math.Min(5, rows - 5 * i))), (0, rows), (3, 19)];
        foreach (var (first, count) in calls)
        {
            var stored = new float[count];
            Assert.True(codec.TryDotRows(blocks.AsSpan(first * bytesPerRow, count * bytesPerRow), scales, tensorData, count, cols, x.AsSpan(0, cols), stored));
            var fast = new float[count];
            repacked.DotRows(first, count, x.AsSpan(0, cols), fast);
            Assert.Equal(stored, fast);

            var storedMany = new float[vectors * count];
            Assert.True(codec.TryDotRowsMany(blocks.AsSpan(first * bytesPerRow, count * bytesPerRow), scales, tensorData, count, cols, vectors, x, storedMany, count));
            var fastMany = new float[vectors * count];
            Assert.True(repacked.TryDotRowsMany(first, count, vectors, x, fastMany, count));
            // Three vectors run on the lanes where the CPU has AVX-VNNI: the same block totals, another summation order.
            if (!NibbleLanes.IsSupported) Assert.Equal(storedMany, fastMany);
            for (int i = 0; i < fastMany.Length; i++)
                Assert.True(Math.Abs(fastMany[i] - storedMany[i]) <= 1e-5 * (Math.Abs(storedMany[i]) + 1), $"{spec} entry {i}: {fastMany[i]} vs {storedMany[i]}");
        }
    }

    /// <summary>The block scales of ggml's 4-bit rows, eight at a time (gathered f16 / E8M0), equal their scalar twin
    /// bit for bit on every f16 pattern (subnormals, ±0, ±Inf, NaN included) and every E8M0 byte, with a tail that
    /// is not a whole eight.</summary>
    [Theory]
    [InlineData(true, 18)]
    [InlineData(false, 17)]
    public unsafe void VectorBlockScalesEqualTheScalarTwin(bool q4, int blockBytes)
    {
        int count = q4 ? 65536 + 5 : 256 + 5;
        var row = new byte[count * blockBytes + 4];
        var xs = new float[count];
        var random = new Random(31);
        for (int j = 0; j < count; j++)
        {
            if (q4) BitConverter.TryWriteBytes(row.AsSpan(j * blockBytes), (ushort)(j % 65536));
            else row[j * blockBytes] = (byte)(j % 256);
            row[j * blockBytes + 2] = (byte)random.Next(256); // code bytes the gather also reads
            xs[j] = (float)(random.NextDouble() * 2 - 1);
        }
        var fast = new float[count];
        var twin = new float[count];
        fixed (byte* r = row)
        fixed (float* x = xs, f = fast, t = twin)
        {
            Nanoscale.Formats.Ggml.GgmlDot.BlockScales(r, q4, count, x, f);
            Nanoscale.Formats.Ggml.GgmlDot.BlockScalesReference(r, q4, count, x, t);
        }
        for (int j = 0; j < count; j++)
            Assert.True(BitConverter.SingleToInt32Bits(fast[j]) == BitConverter.SingleToInt32Bits(twin[j]) || (float.IsNaN(fast[j]) && float.IsNaN(twin[j])),
                $"block {j}: {fast[j]} vs {twin[j]}");
    }

    /// <summary>NxFP4 whose tables are dyadic with a one-byte word takes the integer kernel (<c>NxfpDot</c>): every block
    /// its own table pair, scale/m_k from the word; 11 blocks cover the gathered groups of eight, the scalar tail and
    /// an odd last block.</summary>
    [Theory]
    [InlineData("nxfp4", 16, 512, 10)]
    [InlineData("nxfp4", 5, 352, 11)]
    [InlineData("nxfp4", 37, 576, 14)]   // rows prepared 16 at a time: two whole chunks and a partial one
    [InlineData("nxfp4:nm=2,am=e2m1|e1m2,cr=5", 5, 96, 12)]
    [InlineData("nxfp4:am=e2m1,cr=off", 3, 64, 13)]
    public void NxfpIntegerDotEqualsDecodeThenMultiply(string spec, int rows, int cols, int seed)
    {
        Assert.True(Nanoscale.Formats.Nx.NxfpDot.For((Nanoscale.Formats.Nx.NxfpCodec)CodecRegistry.CreateBlockCodec(spec)) is not null
                    || !NibbleDot.IsSupported, $"{spec} should have the integer kernel");
        Int8DotEqualsDecodeThenMultiply(spec, rows, cols, seed);
    }

    /// <summary>
    /// NxFP4's per-row preparation (each block's factor scale/m_k · d_x and each pair's table index) in registers
    /// (AVX-512 permutes, 16 blocks at a time; AVX2 shifts and <c>vpermps</c>, 8 at a time) equals the gathers from the
    /// 256-entry tables bit for bit, for scale codes of 5, 6 and 7 bits (one, two and four 32-entry lookups) and every
    /// word including the NaN word, with and without its NaN block; 53 blocks cover three groups of 16, six of 8 and a
    /// scalar, odd tail. Half the trials hold only normal scale codes and no NaN word, so whole groups take the
    /// shifted-exponent path (<c>NxfpDot.ExponentCodes</c>, found for every one of these scales); in the others a group
    /// with a subnormal scale or the NaN word falls back to the gathers.
    /// </summary>
    [Theory]
    [InlineData("nxfp4", 7)]
    [InlineData("nxfp4:se=5,nm=1", 6)]
    [InlineData("nxfp4:se=4,nm=1", 5)]
    public unsafe void NxfpPreparationsEqualTheGathers(string spec, int scaleBits)
    {
        var codec = (Nanoscale.Formats.Nx.NxfpCodec)CodecRegistry.CreateBlockCodec(spec);
        Assert.Equal(scaleBits, codec.ScaleBits);
        var dot = Nanoscale.Formats.Nx.NxfpDot.For(codec);
        if (dot is null)
        {
            Assert.False(NibbleDot.IsSupported, $"{spec} should have the integer kernel");
            return; // no AVX2: the scalar loop is the only path
        }
        var paths = new[] { Nanoscale.Formats.Nx.NxfpDot.Preparation.Permuted, Nanoscale.Formats.Nx.NxfpDot.Preparation.Shifted }.Where(dot.Allows).ToArray();
        Assert.Contains(Nanoscale.Formats.Nx.NxfpDot.Preparation.Shifted, paths); // every AVX2 machine, these scales
        const int nb = 53;
        var exponent = Nanoscale.Formats.Nx.NxfpDot.ExponentCodes.Of(codec.Scale.DecodeTable, 1 << scaleBits, codec.Scale.MantissaBits);
        Assert.True(exponent.Usable && exponent.Span >= (1 << scaleBits) / 2, $"{spec}: normal scale codes {exponent}");
        var random = new Random(scaleBits);
        for (int trial = 0; trial < 64; trial++)
        {
            var words = new byte[nb];
            var codes = new byte[nb * 16];
            random.NextBytes(codes);
            for (int j = 0; j < nb; j++)
            {
                words[j] = (byte)(trial < 8 ? (trial * nb + j) % 256 : random.Next(256));   // every word in the first trials
                if (trial >= 32)
                {
                    // Normal scale codes only (the shifted path), any selector bits.
                    words[j] = (byte)((words[j] & ~((1 << scaleBits) - 1)) | (exponent.Low + random.Next(exponent.Span + 1)));
                    continue;
                }
                if (random.Next(6) == 0) words[j] = (byte)codec.NaNWord;
                if (words[j] == codec.NaNWord && random.Next(2) == 0) Array.Fill(codes, (byte)(codec.NegativeZeroCode * 0x11), j * 16, 16);
            }
            float[] xs = [.. Enumerable.Range(0, nb).Select(_ => (float)Math.Exp(random.NextDouble() * 8 - 4))];
            foreach (var path in paths)
            {
                float[] cFast = new float[nb + 16], cGathered = new float[nb + 16];
                int[] pFast = new int[nb + 16], pGathered = new int[nb + 16];
                fixed (byte* w = words, b = codes)
                fixed (float* x = xs, c1 = cFast, c2 = cGathered)
                fixed (int* p1 = pFast, p2 = pGathered)
                {
                    dot.Prepare(w, b, nb, x, c1, p1, path);
                    dot.Prepare(w, b, nb, x, c2, p2, Nanoscale.Formats.Nx.NxfpDot.Preparation.Gathered);
                }
                for (int j = 0; j < nb; j++)
                {
                    Assert.True(BitConverter.SingleToInt32Bits(cFast[j]) == BitConverter.SingleToInt32Bits(cGathered[j]),
                        $"{path}, trial {trial}, block {j} (word {words[j]}): factor {cFast[j]} vs {cGathered[j]}");
                    if (j % 2 == 0) Assert.True(pFast[j] == pGathered[j], $"{path}, trial {trial}, block {j}: pair table {pFast[j]} vs {pGathered[j]}");
                }
            }
        }
    }

    /// <summary>NVFP4's block scales decoded by arithmetic in the step kernel equal the UE4M3 table for every one of
    /// the 256 byte values (subnormals, the largest 448, the NaN code 0x7F and the codes above it).</summary>
    [Fact]
    public void NvFp4ArithmeticScaleDecodeEqualsTheTable()
    {
        if (!NibbleDot.IsSupported) return; // the kernel exists only with AVX2
        var table = ScaleFormat.UE4M3.DecodeTable;
        for (int first = 0; first < 256; first += 8)
        {
            var decoded = Nanoscale.Formats.Nv.NvFp4Dot.DecodeScales(System.Runtime.Intrinsics.Vector256.Create(first, first + 1, first + 2,
                first + 3, first + 4, first + 5, first + 6, first + 7));
            for (int i = 0; i < 8; i++)
                Assert.True(BitConverter.SingleToInt32Bits(decoded[i]) == BitConverter.SingleToInt32Bits(table[first + i])
                            || (float.IsNaN(decoded[i]) && float.IsNaN(table[first + i])), $"code {first + i}: {decoded[i]} vs {table[first + i]}");
        }
    }

    /// <summary>Which NxFP forms the unsigned integer kernel takes: a 16-bit word with E3M0 (nxfp4-m16, the AM+CR form
    /// with three formats), whose tables × m_k span −64..96, takes the signed one (<c>NxfpSignedDot</c>) instead.</summary>
    [Theory]
    [InlineData("nxfp4-m16")]
    [InlineData("nxfp4:nm=1,am=e2m1|e1m2|e3m0,cr=auto")]
    public void NxfpWithAWideWordTakesTheSignedKernel(string spec)
    {
        var codec = (Nanoscale.Formats.Nx.NxfpCodec)CodecRegistry.CreateBlockCodec(spec);
        Assert.Null(Nanoscale.Formats.Nx.NxfpDot.For(codec));
        Assert.Equal(Nanoscale.Formats.Nx.NxfpSignedDot.IsSupported, Nanoscale.Formats.Nx.NxfpSignedDot.For(codec) is not null);
    }

    /// <summary>The signed-table kernel against the reference decoder: exact weights, int8 activations (the bound
    /// above); several binades of weights, so every table and many scales occur.</summary>
    [Theory]
    [InlineData("nxfp4-m16", 16, 512, 31)]
    [InlineData("nxfp4-m16", 3, 32, 32)]
    [InlineData("nxfp4:nm=1,am=e2m1|e1m2|e3m0,cr=auto", 16, 512, 33)]
    public void NxfpSignedIntegerDotEqualsDecodeThenMultiply(string spec, int rows, int cols, int seed) =>
        Int8DotEqualsDecodeThenMultiply(spec, rows, cols, seed);

    /// <summary>The signed-table kernel against its scalar twin, bit for bit, with a block passed through as NaN (its
    /// row NaN, the others untouched), a word whose unused top bit is set, and at least four tables in use.</summary>
    [Theory]
    [InlineData("nxfp4-m16")]
    [InlineData("nxfp4:nm=1,am=e2m1|e1m2|e3m0,cr=auto")]
    public void NxfpSignedDotEqualsItsScalarTwinBitForBit(string spec)
    {
        var codec = (Nanoscale.Formats.Nx.NxfpCodec)CodecRegistry.CreateBlockCodec(spec);
        if (Nanoscale.Formats.Nx.NxfpSignedDot.For(codec) is not { } dot) return; // no AVX2 here
        const int rows = 5, blocks = 11, cols = blocks * 32;
        var random = new Random(41);
        float[] w = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)(Math.Exp(random.NextDouble() * 8 - 4) * (random.Next(2) * 2 - 1)))];
        float[] x = [.. Enumerable.Range(0, cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var (packed, scales, _) = BlockMatrix.Encode(codec, w, rows, cols);
        int nanBlock = 2 * blocks + 4, wordBytes = codec.ScaleBytesPerBlock;
        for (int b = 0; b < wordBytes; b++) scales[nanBlock * wordBytes + b] = (byte)(codec.NaNWord >> (8 * b));
        // A word's unused top bits set (a damaged or hand-made file): ignored, as the decoder ignores them.
        if (codec.MetadataBits < 8 * wordBytes) scales[(3 * blocks + 1) * wordBytes + wordBytes - 1] |= 0x80;
        Array.Fill(packed, (byte)(codec.NegativeZeroCode * 0x11), nanBlock * 16, 16);
        var configs = new HashSet<int>();
        for (int i = 0; i < rows * blocks; i++)
        {
            int word = wordBytes == 1 ? scales[i] : scales[2 * i] | scales[2 * i + 1] << 8;
            var (_, f, l) = codec.SplitWord(word);
            configs.Add(f * codec.LevelCount + l);
        }
        Assert.True(configs.Count >= 4, $"only {configs.Count} tables in use");
        var y = new float[rows];
        var twin = new float[rows];
        dot.DotRows(packed, scales, rows, cols, x, y);
        dot.DotRowsReference(packed, scales, rows, cols, x, twin);
        for (int r = 0; r < rows; r++)
        {
            Assert.Equal(r == 2, float.IsNaN(y[r]));
            Assert.True(float.IsNaN(twin[r]) ? float.IsNaN(y[r]) : BitConverter.SingleToInt32Bits(y[r]) == BitConverter.SingleToInt32Bits(twin[r]),
                $"row {r}: {y[r]} vs {twin[r]}");
        }
    }

    /// <summary>A block passed through as NaN (NaN word, every code −0) makes its row NaN in the integer kernel, as
    /// decoding does; the other row is unaffected.</summary>
    [Theory]
    [InlineData(2, 1)]      // the scalar tail
    [InlineData(20, 5)]     // the first 16 blocks go through the vector preparation
    public void NxfpNaNBlockGivesNaN(int blocksPerRow, int nanBlock)
    {
        var codec = (Nanoscale.Formats.Nx.NxfpCodec)CodecRegistry.CreateBlockCodec("nxfp4");
        var random = new Random(3);
        int cols = 32 * blocksPerRow;
        float[] w = [.. Enumerable.Range(0, 2 * cols).Select(_ => (float)(random.NextDouble() - 0.5))];
        var (blocks, scales, tensorData) = BlockMatrix.Encode(codec, w, 2, cols);
        scales[blocksPerRow + nanBlock] = (byte)codec.NaNWord;
        Array.Fill(blocks, (byte)0x88, (blocksPerRow + nanBlock) * 16, 16);
        float[] x = [.. Enumerable.Range(0, cols).Select(i => 1f + i / (float)cols)];
        var y = new float[2];
        if (!codec.TryDotRows(blocks, scales, tensorData, 2, cols, x, y)) return;
        var decoded = new float[2 * cols];
        codec.Dequantize(blocks, scales, tensorData, 2, cols, new CodecOptions { Kernel = CodecKernel.Reference }, decoded);
        Assert.True(float.IsNaN(decoded[cols + 32 * nanBlock]), "the reference decodes the block as NaN");
        Assert.True(float.IsNaN(y[1]), $"{y[1]}");
        double first = Enumerable.Range(0, cols).Sum(i => (double)decoded[i] * x[i]);
        // int8 activations: each off by at most its block's amax/254 (x here is in [1, 2]).
        double bound = Enumerable.Range(0, cols).Sum(i => Math.Abs((double)decoded[i])) * 2 / 254 + 1e-3;
        Assert.Equal(first, y[0], bound);
    }

    private static void Int8DotEqualsDecodeThenMultiply(string spec, int rows, int cols, int seed, Action<byte[]>? editScales = null)
    {
        var c = Run(CodecRegistry.CreateBlockCodec(spec), rows, cols, seed, editScales);
        if (c.Y is null) return;
        for (int r = 0; r < rows; r++)
        {
            double exact = 0, magnitude = 0, activationRounding = 0;
            for (int j = 0; j < cols / 32; j++)
            {
                double amax = 0, weights = 0;
                for (int i = j * 32; i < j * 32 + 32; i++)
                {
                    double wi = c.Decoded[r * cols + i];
                    exact += wi * c.X[i];
                    magnitude += Math.Abs(wi * c.X[i]);
                    amax = Math.Max(amax, Math.Abs(c.X[i]));
                    weights += Math.Abs(wi);
                }
                activationRounding += amax / 254 * weights; // int8 activations: each off by at most half a step, amax/127/2
            }
            // Float accumulation: a few ulps of the sum of magnitudes, plus the activations' rounding.
            double tolerance = 1e-6 * magnitude + activationRounding + 1e-30;
            Assert.True(Math.Abs(c.Y[r] - exact) <= tolerance, $"row {r}: {c.Y[r]} vs {exact} (tolerance {tolerance})");
        }
    }

    /// <summary>The float-widening kernels (NVFP4's rows not whole 32s, MXFP8/6/5, MXINT6/4/2) against the reference
    /// decoder: float summation order only. (NxFP4's 16-bit-word forms, here before, now run in integers: the signed
    /// kernel's tests above.)</summary>
    [Theory]
    [InlineData("nvfp4", 3, 48)]           // rows not whole 32s: the float kernel
    [InlineData("mxfp8", 16, 512)]
    [InlineData("mxfp8-e5m2", 9, 256)]
    [InlineData("mxfp6-e3m2", 5, 96)]     // E2M3 (mxfp6) takes the integer kernel: Mxfp6IntegerDot… below
    [InlineData("mxfp5-e2m2", 5, 96)]
    [InlineData("mxfp5-e3m1", 3, 64)]
    [InlineData("mxint6", 5, 96)]
    [InlineData("mxint4", 5, 96)]
    [InlineData("mxint2", 3, 64)]
    [InlineData("mxfp8:zero=positive", 3, 64)]
    public void FloatLookupDotOnTheCodesEqualsDecodeThenMultiply(string spec, int rows, int cols)
    {
        var c = Run(CodecRegistry.CreateBlockCodec(spec), rows, cols, rows * cols);
        if (c.Y is null) return;
        Assert.Contains(c.Decoded, v => v != 0);
        for (int r = 0; r < rows; r++)
        {
            double exact = 0, magnitude = 0;
            for (int i = 0; i < cols; i++)
            {
                exact += (double)c.Decoded[r * cols + i] * c.X[i];
                magnitude += Math.Abs((double)c.Decoded[r * cols + i] * c.X[i]);
            }
            Assert.True(magnitude > 0, $"{spec} row {r} decodes to zeros");
            Assert.True(Math.Abs(c.Y[r] - exact) <= 1e-6 * magnitude + 1e-30, $"{spec} row {r}: {c.Y[r]} vs {exact}");
        }
    }

    /// <summary>Heavy-tailed weights over several binades (so the blocks' scales differ) encoded with
    /// <paramref name="codec"/> (its tensor data, e.g. NVFP4's tensor scale, derived from them), random activations,
    /// the kernel's product (null where the CPU has none) and the reference decoder's rows.</summary>
    private static (float[] X, float[] Decoded, float[]? Y) Run(IBlockCodec codec, int rows, int cols, int seed, Action<byte[]>? editScales = null)
    {
        var random = new Random(seed);
        float[] w = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)(Math.Exp(random.NextDouble() * 8 - 4) * (random.Next(2) * 2 - 1)))];
        float[] x = [.. Enumerable.Range(0, cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var (blocks, scales, tensorData) = BlockMatrix.Encode(codec, w, rows, cols);
        editScales?.Invoke(scales);
        var y = new float[rows];
        if (!codec.TryDotRows(blocks, scales, tensorData, rows, cols, x, y))
        {
            Assert.False(System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported, "AVX2+FMA machine without the kernel");
            return (x, [], null);
        }
        var decoded = new float[rows * cols];
        codec.Dequantize(blocks, scales, tensorData, rows, cols, new CodecOptions { Kernel = CodecKernel.Reference }, decoded);
        return (x, decoded, y);
    }

    /// <summary>The MXFP8/MXFP6 kernels with the shape's constants folded in (AVX-512, or AVX2 alone) equal the generic
    /// AVX2 kernel bit for bit: every code of the element (special ones included, in some rows) in random blocks and
    /// scales, 9 rows of 3 blocks (a 6-bit last row takes the generic path; rows with a special code are done again;
    /// rows of normal codes alone take the AVX2 kernel's all-normal widening of 8-bit blocks).</summary>
    [Theory]
    [InlineData(8, 3)]
    [InlineData(8, 2)]
    [InlineData(6, 3)]
    [InlineData(6, 2)]
    public void MxFloatShapeKernelsEqualTheGenericKernelBitForBit(int bits, int mantissaBits)
    {
        var element = (bits, mantissaBits) switch
        {
            (8, 3) => ElementFormat.E4M3, (8, 2) => ElementFormat.E5M2, (6, 3) => ElementFormat.E2M3, _ => ElementFormat.E3M2,
        };
        var dot = Nanoscale.Formats.Mx.MxFloatDot.For(element);
        if (dot is null) return; // no AVX2 here
        const int rows = 9, blocks = 3, cols = blocks * 32;
        var random = new Random(bits * 10 + mantissaBits);
        int codeCount = 1 << bits, bytesPerRow = blocks * bits * 4;
        var codes = new byte[rows * cols];
        for (int i = 0; i < codes.Length; i++) codes[i] = (byte)(i % codeCount); // every code, the specials among them
        for (int r = 0; r < rows; r += 2) // even rows: the top exponent bit clear, so no special code (their rows stay on the fast path)
            for (int i = 0; i < cols; i++) codes[r * cols + i] = (byte)(random.Next(codeCount) & ~(1 << (bits - 2)));
        for (int r = 2; r < rows; r += 3) // rows 2, 5, 8: normal codes of both signs only (8-bit blocks take the all-normal widening)
            for (int i = 0; i < cols; i++)
                codes[r * cols + i] = (byte)(random.Next(1 << mantissaBits, Math.Min(0x7B, (1 << (bits - 1)) - 1) + 1) | random.Next(2) << (bits - 1));
        var packed = new byte[rows * bytesPerRow];
        for (int r = 0; r < rows; r++)
            BlockPacking.Pack(codes.AsSpan(r * cols, cols), bits, packed.AsSpan(r * bytesPerRow, bytesPerRow));
        byte[] scales = [.. Enumerable.Range(0, rows * blocks).Select(_ => (byte)random.Next(117, 137))];
        float[] x = [.. Enumerable.Range(0, cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float[] fast = new float[rows], generic = new float[rows];
        dot.DotRows(packed, scales, rows, cols, x, fast);
        dot.DotRowsGenericOnly(packed, scales, rows, cols, x, generic);
        Assert.Equal(generic.Select(BitConverter.SingleToInt32Bits), fast.Select(BitConverter.SingleToInt32Bits));
        Assert.Contains(fast, float.IsFinite);
    }

    /// <summary>Codes the encoder never writes (E4M3's NaN, E5M2's Inf and NaN) in a hand-made block: the kernel gives
    /// what the reference decoder gives (the block takes the format's table), and the other block is unaffected.</summary>
    [Theory]
    [InlineData("mxfp8", 0x7F, double.NaN)]
    [InlineData("mxfp8-e5m2", 0x7C, double.PositiveInfinity)]
    [InlineData("mxfp8-e5m2", 0xFD, double.NaN)]
    public void CodesTheEncoderNeverWritesDecodeAsTheReferenceDoes(string spec, int code, double expected)
    {
        var codec = CodecRegistry.CreateBlockCodec(spec);
        var y = new float[2];
        var blocks = new byte[2 * 64];
        for (int i = 0; i < blocks.Length; i++) blocks[i] = (byte)(i % 7 + 0x30);
        blocks[64 + 5] = (byte)code;
        byte[] scales = [127, 127, 127, 127];
        var x = Enumerable.Range(0, 64).Select(i => 1f + i / 64f).ToArray();
        if (!codec.TryDotRows(blocks, scales, [], 2, 64, x, y)) return;
        var decoded = new float[128];
        codec.Dequantize(blocks, scales, [], 2, 64, new CodecOptions { Kernel = CodecKernel.Reference }, decoded);
        double first = Enumerable.Range(0, 64).Sum(i => (double)decoded[i] * x[i]);
        Assert.Equal(first, y[0], first * 1e-6);
        if (double.IsNaN(expected)) Assert.True(float.IsNaN(y[1]), $"{y[1]}");
        else Assert.Equal((float)expected, y[1]);
    }

    [Fact]
    public void OtherFormatsAndPartialBlocksFallBackToDecoding()
    {
        var y = new float[1];
        Assert.False(CodecRegistry.CreateBlockCodec("q4_1").TryDotRows(new byte[40], [], [], 1, 32, new float[32], y));
        Assert.False(CodecRegistry.CreateBlockCodec("mxfp8").TryDotRows(new byte[40], new byte[2], [], 1, 40, new float[40], y));
        Assert.False(CodecRegistry.CreateBlockCodec("mxfp4").TryDotRows(new byte[32], new byte[2], [], 1, 40, new float[40], y));
    }

    [Fact]
    public void GenerationOnMxfp4WeightsIsTheSameWithAndWithoutTheFusedKernel()
    {
        using var stories = new CompressedStories("mxfp4");
        var tokenizer = TokenizerLoader.Open(SharedData.Tok512, 512);
        var fused = stories.Load(new RuntimeOptions { FusedKernels = true });
        var decoded = stories.Load(new RuntimeOptions { FusedKernels = false });

        var a = Generation.Greedy(fused, tokenizer, "Once upon a time", 40);
        var b = Generation.Greedy(decoded, tokenizer, "Once upon a time", 40);
        Assert.Equal(b.Tokens, a.Tokens);

        // The step's logits agree within the int8 activations' rounding (relative to the largest logit).
        var sa = fused.CreateSession(8);
        var sb = decoded.CreateSession(8);
        sa.Forward([1], new float[512]);
        sb.Forward([1], new float[512]);
        float[] la = sa.Step(403), lb = sb.Step(403);
        double scale = lb.Max(Math.Abs);
        // Measured: 0.74% of the largest logit on this machine (dim 64: two activation blocks per row); bound 1.5%.
        double worst = Enumerable.Range(0, la.Length).Max(i => Math.Abs(la[i] - lb[i])) / scale;
        Assert.True(worst <= 1.5e-2, $"largest logit difference {worst:P2} of the largest logit");
    }

    /// <summary>A step of nine sequences on storages without a several-vector kernel (MXFP8; BF16 rows) decodes each
    /// tile once for the panel kernel instead of running the one-token kernel per sequence
    /// (<c>RowDecodedLinearWeight.Fuses</c>): each sequence's logits equal its own step alone within float summation
    /// order, step after step.</summary>
    [Theory]
    [InlineData("mxfp8")]
    [InlineData("bf16")]
    public void StepsOfNineSequencesOnTilesEqualEachAlone(string format)
    {
        using var stories = new CompressedStories(format);
        var model = stories.Load(new RuntimeOptions());
        int vocab = model.Config.VocabSize;
        const int sequences = 9;
        var together = Enumerable.Range(0, sequences).Select(_ => model.CreateSession(64)).ToList();
        var alone = Enumerable.Range(0, sequences).Select(_ => model.CreateSession(64)).ToList();
        var next = new int[sequences];
        for (int i = 0; i < sequences; i++)
        {
            int[] prompt = [1, .. Enumerable.Range(0, 2 + i).Select(k => 10 + (k * 37 + i * 11) % 400)];
            var logits = new float[prompt.Length * vocab];
            together[i].Forward(prompt, logits);
            alone[i].Forward(prompt, new float[prompt.Length * vocab]);
            next[i] = Kernels.ArgMax(logits.AsSpan((prompt.Length - 1) * vocab, vocab));
        }
        for (int step = 0; step < 4; step++)
        {
            var batch = new float[sequences * vocab];
            InferenceSession.StepMany(together, next, batch);
            for (int i = 0; i < sequences; i++)
            {
                var single = alone[i].Step(next[i]);
                var row = batch.AsSpan(i * vocab, vocab);
                double scale = single.Max(Math.Abs);
                for (int v = 0; v < vocab; v++)
                    Assert.True(Math.Abs(row[v] - single[v]) <= 1e-5 * scale, $"{format} sequence {i}, step {step}, token {v}: {row[v]} vs {single[v]}");
                next[i] = Kernels.ArgMax(row);
            }
        }
    }

    /// <summary>A generation prompt (<c>ForwardPrompt</c>: windows on the codes, one loop over the tiles, chunks of 16
    /// tokens, eight a kernel call where the kernel takes no more) gives the decoding path's hidden states within the
    /// int8 activations' rounding; a plain window (perplexity) stays on the decoding path exactly.</summary>
    [Theory]
    [InlineData("mxfp4")]
    [InlineData("nvfp4")]
    [InlineData("nxfp4")]
    [InlineData("mxfp6")]   // MXFP6-E2M3's lanes (16 tokens) and its one-token kernel (3)
    public void PromptWindowsOnTheCodesMatchDecoding(string format)
    {
        using var stories = new CompressedStories(format);
        var model = stories.Load(new RuntimeOptions());
        var reference = stories.Load(new RuntimeOptions { FusedKernels = false });
        int[] prompt = [.. Enumerable.Range(0, 19).Select(i => 1 + i * 23 % 500)]; // 19 tokens: chunks of 16 and 3 (calls of 8, 8, 3)
        int dim = model.Config.Dim;
        float[] fused = new float[prompt.Length * dim], plain = new float[prompt.Length * dim], expected = new float[prompt.Length * dim];
        model.CreateSession(32).ForwardPrompt(prompt, fused);
        model.CreateSession(32).ForwardHidden(prompt, plain);
        reference.CreateSession(32).ForwardHidden(prompt, expected);
        Assert.Equal(expected, plain); // windows outside generation: the decoding path, bit for bit
        Assert.NotEqual(expected, fused); // the prompt ran on the codes
        for (int t = 0; t < prompt.Length; t++)
        {
            var row = expected.AsSpan(t * dim, dim);
            double scale = 0;
            foreach (float v in row) scale = Math.Max(scale, Math.Abs(v));
            for (int i = 0; i < dim; i++)
                Assert.True(Math.Abs(fused[t * dim + i] - row[i]) <= 3e-2 * scale, $"{format} token {t} [{i}]: {fused[t * dim + i]} vs {row[i]}");
        }
    }

    /// <summary>The bf16 cast codec's windows — its BF16 rows widened inside the panel kernel, the next tile asked for
    /// while one computes — equal the decoded tiles' products (<c>FusedKernels</c> off) bit for bit, on two threads.</summary>
    [Fact]
    public void Bf16CastWindowsEqualDecodedTiles()
    {
        using var stories = new CompressedStories("bf16");
        var model = stories.Load(new RuntimeOptions());
        var layer = model.Layers[0];
        const int tokens = 37;
        foreach (var weight in new[] { layer.Query, layer.Gate, layer.Down })
        {
            var random = new Random(weight.Rows);
            float[] x = [.. Enumerable.Range(0, tokens * weight.Columns).Select(_ => (float)(random.NextDouble() * 2 - 1))];
            var direct = new float[tokens * weight.Rows];
            var decoded = new float[tokens * weight.Rows];
            weight.MatMul(x, direct, new RuntimeOptions { Parallelism = new Nanoscale.Tensors.Parallelism(2), MinParallelMultiplyAdds = 0 });
            weight.MatMul(x, decoded, new RuntimeOptions { FusedKernels = false, Parallelism = new Nanoscale.Tensors.Parallelism(2), MinParallelMultiplyAdds = 0 });
            Assert.Equal(decoded, direct);
        }
    }

    /// <summary>A window's product on the codes (a generation prompt: <c>FusedWindows</c>, 37 tokens in one loop over
    /// the tiles) equals the products of its chunks of sixteen tokens and fewer bit for bit (the same kernel calls per
    /// chunk), for every weight of a layer whose rows are whole blocks, on the 4-bit and MXFP6 lanes (bf16 windows decode
    /// tiles instead).</summary>
    [Theory]
    [InlineData("mxfp4")]
    [InlineData("nxfp4")]
    [InlineData("nvfp4")]
    [InlineData("mxfp6")]
    public void AWindowEqualsItsChunksOfSixteenTokens(string format)
    {
        using var stories = new CompressedStories(format);
        var model = stories.Load(new RuntimeOptions());
        var window = new RuntimeOptions { FusedWindows = true, Parallelism = new Nanoscale.Tensors.Parallelism(2) };
        var chunks = new RuntimeOptions { FusedTokens = RowDecodedLinearWeight.MaxFusedTokens, Parallelism = new Nanoscale.Tensors.Parallelism(2) };
        const int tokens = 37;
        var layer = model.Layers[0];
        foreach (var weight in new[] { layer.Query, layer.Key, layer.Output, layer.Gate, layer.Down })
        {
            var random = new Random(weight.Rows);
            float[] x = [.. Enumerable.Range(0, tokens * weight.Columns).Select(_ => (float)(random.NextDouble() * 2 - 1))];
            var whole = new float[tokens * weight.Rows];
            weight.MatMul(x, whole, window);
            for (int t0 = 0; t0 < tokens; t0 += RowDecodedLinearWeight.MaxFusedTokens)
            {
                int n = Math.Min(RowDecodedLinearWeight.MaxFusedTokens, tokens - t0);
                var part = new float[n * weight.Rows];
                weight.MatMul(x.AsSpan(t0 * weight.Columns, n * weight.Columns), part, chunks);
                var same = whole.AsSpan(t0 * weight.Rows, n * weight.Rows);
                if (weight.Columns % 32 == 0) Assert.Equal(part, same.ToArray());
                else
                    // Down (172 columns, no whole blocks, so no lanes): a window decodes tiles (the panel kernel), a chunk
                    // runs the one-token kernel per token — the same values within float rounding.
                    for (int i = 0; i < part.Length; i++)
                        Assert.True(Math.Abs(part[i] - same[i]) <= 1e-5 * (Math.Abs(part[i]) + 1), $"{format} {weight.Rows}×{weight.Columns} [{i}]: {same[i]} vs {part[i]}");
            }
        }
    }

    /// <summary>A layer's q/k/v and gate/up products in one loop over the threads (<c>MatMulShared</c>) are each weight's
    /// own product bit for bit, for one token and for several (the same tiles, the same kernels); with a pair's
    /// callback, every row of the pair is handed over exactly once, after both products wrote it.</summary>
    [Theory]
    [InlineData("mxfp4", 1)]
    [InlineData("mxfp4", 5)]
    [InlineData("nxfp4", 12)]
    [InlineData("nvfp4", 3)]
    [InlineData("bf16", 4)]
    public void SharedProductsEqualEachWeightAlone(string format, int tokens)
    {
        using var stories = new CompressedStories(format);
        var model = stories.Load(new RuntimeOptions());
        var options = new RuntimeOptions { FusedTokens = RowDecodedLinearWeight.MaxFusedTokens, Parallelism = new Nanoscale.Tensors.Parallelism(2) };
        var layer = model.Layers[1];
        int dim = model.Config.Dim, hidden = layer.Gate.Rows;
        var random = new Random(tokens);
        float[] x = [.. Enumerable.Range(0, tokens * dim).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float[] Alone(ILinearWeight w)
        {
            var y = new float[tokens * w.Rows];
            w.MatMul(x, y, options);
            return y;
        }
        float[] q = new float[tokens * layer.Query.Rows], k = new float[tokens * layer.Key.Rows], v = new float[tokens * layer.Value.Rows];
        Assert.False(RowDecodedLinearWeight.MatMulShared(x, options, layer.Query, q, layer.Key, k, layer.Value, v));
        Assert.Equal(Alone(layer.Query), q);
        Assert.Equal(Alone(layer.Key), k);
        Assert.Equal(Alone(layer.Value), v);

        float[] gate = new float[tokens * hidden], up = new float[tokens * hidden];
        float[] expectedGate = Alone(layer.Gate), expectedUp = Alone(layer.Up);
        var seen = new int[hidden];
        bool combined = RowDecodedLinearWeight.MatMulShared(x, options, layer.Gate, gate, layer.Up, up, null, default, (first, count) =>
        {
            for (int t = 0; t < tokens; t++)
                for (int i = first; i < first + count; i++)
                {
                    Assert.Equal(expectedGate[t * hidden + i], gate[t * hidden + i]);
                    Assert.Equal(expectedUp[t * hidden + i], up[t * hidden + i]);
                }
            for (int i = first; i < first + count; i++) Interlocked.Increment(ref seen[i]);
        });
        Assert.True(combined, $"{format}: the pair ran on the codes");
        Assert.All(seen, n => Assert.Equal(1, n));
        Assert.Equal(expectedGate, gate);
        Assert.Equal(expectedUp, up);
    }

    /// <summary>A step's products cut into several tiles a thread (each thread's activations quantized at its first and
    /// kept for the product's others by address, <c>KeptActivations.Product</c>) give the bits of one thread running them
    /// all; and a product on the same array after it changed in place (the runtime's scratch) is computed from the new
    /// values, as a fresh array's is — a set is never kept from one product into the next without comparing.</summary>
    [Theory]
    [InlineData("mxfp4", 16)]
    [InlineData("nxfp4", 16)]
    [InlineData("nvfp4", 9)]
    public void SeveralTokensGiveTheSameBitsOnAnyThreadsAndAfterTheirInputChanges(string format, int tokens)
    {
        using var stories = new CompressedStories(format);
        var model = stories.Load(new RuntimeOptions());
        RuntimeOptions On(int threads) => new() { FusedTokens = RowDecodedLinearWeight.MaxFusedTokens, Parallelism = new Nanoscale.Tensors.Parallelism(threads) };
        var layer = model.Layers[0];
        foreach (var weight in new[] { layer.Query, layer.Gate })
        {
            var random = new Random(weight.Rows + tokens);
            float[] x = [.. Enumerable.Range(0, tokens * weight.Columns).Select(_ => (float)(random.NextDouble() * 2 - 1))];
            float[] Product(float[] input, int threads)
            {
                var y = new float[tokens * weight.Rows];
                weight.MatMul(input, y, On(threads));
                return y;
            }
            var two = Product(x, 2);
            Assert.Equal(Product(x, 1), two);
            Assert.Equal(Product([.. x], 2), two);
            // Changed in place right after a product on it, one element (the last vector's) or all: the next product
            // sees the change on every thread.
            Product(x, 2);
            x[^1] = -3 * x[^1];
            var changed = Product(x, 2);
            Assert.Equal(Product([.. x], 1), changed);
            Product(x, 2);
            for (int i = 0; i < x.Length; i++) x[i] *= 0.5f;
            changed = Product(x, 2);
            Assert.Equal(Product([.. x], 1), changed);
        }
    }

    /// <summary>A step of twelve sequences in one pass (the token factory's; MXFP4 takes all twelve in one call of the
    /// eight-row lane kernel, NxFP4 in calls of eight and four, bf16 four at a time) gives each sequence the logits its
    /// own one-token step gives, to summation order: the same block totals for the same int8 activations. Summation
    /// order can move a later layer's activation across an int8 rounding boundary, so the bound is 1% of the largest
    /// logit (a wrong row, vector or cache is off by the logits themselves).</summary>
    /// <remarks>Also MXINT8 and Q8_0 with five and three sequences: steps of a few sequences run their int8 kernel
    /// (<c>Int8Dot.RowsMany</c>, two rows × four sequences a pass, a partial quad here); MXINT8 with nine, which decode
    /// tiles for the panel kernel (float activations there, int8 in the one-token kernel: within the same bound).</remarks>
    [Theory]
    [InlineData("mxfp4", 12)]
    [InlineData("nxfp4", 12)]
    [InlineData("nvfp4", 12)]
    [InlineData("bf16", 12)]
    [InlineData("mxint8", 5)]
    [InlineData("q8_0", 3)]
    [InlineData("mxint8", 9)]
    public void StepsOfManySequencesOnTheCodesEqualEachAlone(string format, int sequences)
    {
        using var stories = new CompressedStories(format);
        var model = stories.Load(new RuntimeOptions());
        int vocab = model.Config.VocabSize;
        var together = Enumerable.Range(0, sequences).Select(_ => model.CreateSession(8)).ToList();
        var alone = Enumerable.Range(0, sequences).Select(_ => model.CreateSession(8)).ToList();
        int[] tokens = [.. Enumerable.Range(0, sequences).Select(i => 1 + i * 37 % 500)];
        for (int step = 0; step < 2; step++)
        {
            var batch = new float[sequences * vocab];
            InferenceSession.StepMany(together, tokens, batch);
            for (int i = 0; i < sequences; i++)
            {
                var single = alone[i].Step(tokens[i]);
                double scale = single.Max(Math.Abs);
                for (int v = 0; v < vocab; v++)
                    Assert.True(Math.Abs(batch[i * vocab + v] - single[v]) <= 1e-2 * scale, $"{format} sequence {i} step {step} token {v}: {batch[i * vocab + v]} vs {single[v]}");
                tokens[i] = Kernels.ArgMax(single);
            }
        }
    }

    /// <summary>The bf16 cast codec's step multiplies its stored rows directly: the same text and, to summation order,
    /// the same logits as decoding them.</summary>
    [Fact]
    public void Bf16CastWeightsGiveTheSameStepWithAndWithoutTheFusedKernel()
    {
        using var stories = new CompressedStories("bf16");
        var fused = stories.Load(new RuntimeOptions { FusedKernels = true });
        var decoded = stories.Load(new RuntimeOptions { FusedKernels = false });
        var sa = fused.CreateSession(8);
        var sb = decoded.CreateSession(8);
        sa.Forward([1], new float[512]);
        sb.Forward([1], new float[512]);
        float[] la = sa.Step(403), lb = sb.Step(403);
        double scale = lb.Max(Math.Abs);
        Assert.NotEqual(la, lb); // the fused path ran (its summation order differs somewhere)
        for (int i = 0; i < la.Length; i++) Assert.True(Math.Abs(la[i] - lb[i]) <= 1e-5 * scale, $"logit {i}: {la[i]} vs {lb[i]}");
    }
}

/// <summary>Several tokens' products on the stored codes (the token factory's step) against one token at a time.</summary>
public class FusedDotManyTests
{
    [Theory]
    [InlineData("q4_0", 3)]
    [InlineData("q8_0", 8)]
    [InlineData("ggml-mxfp4", 2)]
    [InlineData("mxfp4", 5)]
    [InlineData("mxfp4", 8)]
    [InlineData("mxfp4", 16)]  // the lane kernel's most
    [InlineData("nvfp4", 4)]
    [InlineData("nxfp4", 7)]
    [InlineData("nxfp4:nm=2,am=e2m1|e1m2,cr=5", 1)]
    [InlineData("nvfp4:global=divisor", 3)]
    [InlineData("mxfp8", 3)]   // the default: the one-vector kernel per vector
    [InlineData("mxfp6", 3)]   // below the lanes' fewest: MXFP6-E2M3's one-vector kernel per vector
    [InlineData("mxfp6", 6)]   // its lanes (Mx6IntDot.DotRowsLanes)
    [InlineData("mxfp6", 16)]
    [InlineData("q8_0", 16)]   // Int8Dot.RowsMany: four quads
    [InlineData("q8_0", 5)]    // a partial quad
    [InlineData("mxint8", 3)]
    [InlineData("mxint8", 16)]
    public void ManyVectorsEqualOneAtATime(string spec, int vectors) => ManyEqualsOne(spec, vectors, 256);

    /// <summary>Rows of an odd number of int8 groups (11 × 32): the last group outside the pairs.</summary>
    [Theory]
    [InlineData("mxfp4", 3)]
    [InlineData("nvfp4", 2)]
    [InlineData("nxfp4", 4)]
    [InlineData("mxfp6", 9)]
    [InlineData("mxint8", 9)]
    [InlineData("q8_0", 6)]
    public void ManyVectorsWithAnOddLastGroup(string spec, int vectors) => ManyEqualsOne(spec, vectors, 352);

    /// <summary>Sixteen vectors, the lane kernels' most, on short rows (two blocks, as stories260K's).</summary>
    [Theory]
    [InlineData("mxfp4", 16)]
    [InlineData("nxfp4", 12)]
    [InlineData("nxfp4", 16)]
    [InlineData("q4_0", 16)]
    [InlineData("ggml-mxfp4", 5)]
    [InlineData("nvfp4", 16)]
    [InlineData("mxfp6", 16)]
    public void ManyVectorsOnShortRows(string spec, int vectors) => ManyEqualsOne(spec, vectors, 64);

    private static void ManyEqualsOne(string spec, int vectors, int cols)
    {
        var codec = CodecRegistry.CreateBlockCodec(spec);
        const int rows = 24;
        var random = new Random(vectors);
        float[] w = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float[] x = [.. Enumerable.Range(0, vectors * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var encoded = CodecHarness.Quantize(codec, w, rows, cols);
        var many = new float[vectors * rows];
        if (!codec.TryDotRowsMany(encoded.Blocks, encoded.Scales, encoded.TensorData, rows, cols, vectors, x, many, rows)) return; // no kernel on this CPU
        for (int v = 0; v < vectors; v++)
        {
            var one = new float[rows];
            Assert.True(codec.TryDotRows(encoded.Blocks, encoded.Scales, encoded.TensorData, rows, cols, x.AsSpan(v * cols, cols), one));
            for (int r = 0; r < rows; r++)
                Assert.True(Math.Abs(many[v * rows + r] - one[r]) <= 1e-5 * (Math.Abs(one[r]) + 1), $"{spec} vector {v} row {r}: {many[v * rows + r]} vs {one[r]}");
        }
    }

    /// <summary>Every step kernel on stored codes reads nothing outside its rows' blocks and scales: both placed right
    /// after and right before an inaccessible page (a read outside faults and aborts the run), one vector and a
    /// step of sixteen, with the results they give on managed arrays. (Prefetches past the rows are allowed: they
    /// never fault.)</summary>
    [Theory]
    [InlineData("mxfp4", 5, 96)]
    [InlineData("mxfp4", 19, 576)]
    [InlineData("nxfp4", 19, 576)]
    [InlineData("nvfp4", 17, 192)]
    [InlineData("mxfp6", 9, 256)]
    [InlineData("mxfp8", 9, 256)]
    [InlineData("mxint8", 7, 96)]
    [InlineData("q4_0", 11, 352)]
    [InlineData("q8_0", 7, 256)]
    [InlineData("ggml-mxfp4", 4, 416)]
    public unsafe void StepKernelsReadOnlyTheirRows(string spec, int rows, int cols)
    {
        if (!GuardedMemory.IsSupported) return;
        var codec = CodecRegistry.CreateBlockCodec(spec);
        var random = new Random(rows * cols);
        float[] w = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)((random.NextDouble() - 0.5) * Math.Exp(random.Next(-3, 3))))];
        var (blocks, scales, tensorData) = BlockMatrix.Encode(codec, w, rows, cols);
        foreach (int vectors in new[] { 1, 16 })
        {
            float[] x = [.. Enumerable.Range(0, vectors * cols).Select(_ => (float)random.NextDouble() - 0.5f)];
            var expected = new float[vectors * rows];
            bool Run(ReadOnlySpan<byte> b, ReadOnlySpan<byte> s, Span<float> y) => vectors == 1
                ? codec.TryDotRows(b, s, tensorData, rows, cols, x, y)
                : codec.TryDotRowsMany(b, s, tensorData, rows, cols, vectors, x, y, rows);
            if (!Run(blocks, scales, expected)) continue; // no kernel for this format here
            foreach (bool atEnd in new[] { false, true })
            {
                using var b = atEnd ? GuardedMemory.AtEnd(blocks.Length) : GuardedMemory.AtStart(blocks.Length);
                using var s = atEnd ? GuardedMemory.AtEnd(Math.Max(1, scales.Length)) : GuardedMemory.AtStart(Math.Max(1, scales.Length));
                blocks.CopyTo(b.Bytes);
                scales.CopyTo(s.Bytes);
                var actual = new float[vectors * rows];
                Assert.True(Run(new ReadOnlySpan<byte>(b.Start, blocks.Length), new ReadOnlySpan<byte>(s.Start, scales.Length), actual));
                for (int i = 0; i < expected.Length; i++)
                    Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]) || float.IsNaN(expected[i]) && float.IsNaN(actual[i]),
                        $"{spec} × {vectors}, guard {(atEnd ? "after" : "before")} [{i}]: {actual[i]} vs {expected[i]}");
            }
        }
    }
}

/// <summary>stories260K compressed to one format in a temporary folder, open as the runtime opens it.</summary>
file sealed class CompressedStories : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly LogicalCheckpoint _checkpoint;
    private readonly LogicalWeightSource _weights;

    public CompressedStories(string format)
    {
        var path = _dir.File("m.safetensors");
        CompressionRun.Run(SharedData.Stories260K, path, new CompressionRequest { Format = format, MeasureError = false });
        _checkpoint = LogicalCheckpoint.Open(path);
        _weights = new LogicalWeightSource(_checkpoint);
    }

    public LlamaModel Load(RuntimeOptions options) => LlamaModel.Load(_checkpoint.Config!, _weights, options);

    public void Dispose()
    {
        _weights.Dispose();
        _checkpoint.Dispose();
        _dir.Dispose();
    }
}
