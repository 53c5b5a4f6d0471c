using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.Formats.Mx;

namespace Nanoscale.Tests.Formats;

/// <summary>
/// The several-vector 4-bit kernel with eight rows in the lanes (<see cref="NibbleLanes"/>) against its scalar twin,
/// bit for bit, and MXFP4's use of it against the row-at-a-time kernel (<see cref="MxDot.DotRowsMany"/>).
/// </summary>
public unsafe class NibbleLanesTests
{
    /// <summary>Random code bytes (every nibble), factors and activations; 29 rows (whole groups of eight and of sixteen,
    /// then a partial one of each), 11 blocks, 1–7 vectors (whole and partial fours), both nibble orders, table entries up
    /// to 24 (MXFP4's), 64 and 128: each result equals <see cref="NibbleLanes.RowReference"/> exactly, in groups of
    /// eight rows and of sixteen, with and (where the CPU has it) without AVX-VNNI.</summary>
    [Theory]
    [InlineData(1, true, 24)]
    [InlineData(3, false, 24)]
    [InlineData(4, true, 24)]
    [InlineData(6, false, 24)]
    [InlineData(5, true, 64)]   // two words a widening without VNNI
    [InlineData(7, false, 128)] // one
    public void GroupsEqualTheScalarTwinBitForBit(int vectors, bool evensThenOdds, int largest)
    {
        if (!NibbleLanes.IsSupported) return; // no AVX2 here: MXFP4 keeps the scalar path
        const int rows = 29, blocks = 11, cols = blocks * 32;
        var random = new Random(vectors);
        byte[] codes = [.. Enumerable.Range(0, rows * blocks * 16).Select(_ => (byte)random.Next(256))];
        sbyte[] table = [.. Enumerable.Range(0, 16).Select(_ => (sbyte)(byte)random.Next(0, largest + 1))];
        float[] rowFactors = [.. Enumerable.Range(0, rows * blocks).Select(_ => (float)Math.Exp(random.NextDouble() * 8 - 4))];
        float[] x = [.. Enumerable.Range(0, vectors * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var a = new NibbleLanes.Vectors();
        a.Set(x, vectors, cols, evensThenOdds, bias: 12);
        foreach (var (groupRows, arithmetic) in Runs())
            AssertEqualsTheTwin(codes, rows, blocks, rowFactors, table, null, a, RunGroups(codes, rows, blocks, rowFactors, a, NibbleDot.Broadcast(table), null, null, groupRows, arithmetic));
    }

    /// <summary>The activations in the kernel's order are <see cref="NibbleDot.QuantizeBlock"/>'s bytes: word 2m the
    /// block's code-order bytes 4m..4m+3, word 2m + 1 bytes 16 + 4m..; scale and −bias × sum as it returns them.</summary>
    [Fact]
    public void ActivationsAreTheBlockQuantizersBytes()
    {
        var random = new Random(3);
        float[] x = [.. Enumerable.Range(0, 2 * 64).Select(_ => (float)(random.NextDouble() * 4 - 2))];
        var a = new NibbleLanes.Vectors();
        a.Set(x, 2, 64, evensThenOdds: true, bias: 12);
        var q = new sbyte[32];
        for (int v = 0; v < 2; v++)
            for (int j = 0; j < 2; j++)
            {
                int sum = NibbleDot.QuantizeBlockReference(x.AsSpan(v * 64 + j * 32, 32), true, q, out float scale);
                Assert.Equal(scale, a.Scales[v * 2 + j]);
                Assert.Equal(-12 * sum, a.Bias[v * 2 + j]);
                for (int m = 0; m < 8; m++)
                {
                    int start = (m & 1) == 0 ? 4 * (m / 2) : 16 + 4 * (m / 2);
                    int word = a.Q[(v * 2 + j) * 8 + m];
                    for (int t = 0; t < 4; t++) Assert.Equal(q[start + t], (sbyte)(word >> (8 * t)));
                }
            }
    }

    /// <summary>Eight blocks quantized at once (their maxima reduced together, as integers) give each block what the
    /// scalar twin gives it — scale, codes in the kernel's word order, −bias × sum and the half-block sums — for rows of
    /// whole eights and tails, in both element orders, with blocks of zeros, exact ties, subnormals, values near the top
    /// of float, blocks too small for an inverse scale, and a NaN or an infinity in a group (which then goes block by
    /// block).</summary>
    [Theory]
    [InlineData(576, true, false)]
    [InlineData(576, false, false)]
    [InlineData(1536, true, true)]
    [InlineData(288, true, true)]
    public void EightBlocksAtOnceEqualTheScalarTwin(int cols, bool evensThenOdds, bool halves)
    {
        var random = new Random(cols + (evensThenOdds ? 1 : 0) + (halves ? 2 : 0));
        const int Vectors = 3;
        int blocks = cols / 32;
        float[] x = new float[Vectors * cols];
        for (int b = 0; b < Vectors * blocks; b++)
        {
            // Mostly blocks the eight-at-once path takes; in each vector one block of a kind that sends its group of
            // eight block by block (subnormals or a tiny block: an inverse scale that overflows; a NaN; an infinity).
            int kind = b % blocks == 9 ? new[] { 2, 4, 7, 8 }[(b / blocks + (halves ? 1 : 0)) % 4] : new[] { 0, 1, 1, 3, 5, 5, 5, 5, 6, 6 }[random.Next(10)];
            for (int i = 0; i < 32; i++)
                x[b * 32 + i] = kind switch
                {
                    0 => 0f,
                    1 => (float)((random.Next(255) - 127) / 127.0 * 3.0),
                    2 => (float)((random.NextDouble() - 0.5) * 1e-40),
                    3 => (float)((random.NextDouble() - 0.5) * 3e38),
                    4 => (float)((random.NextDouble() - 0.5) * 1e-37),
                    _ => (float)((random.NextDouble() - 0.5) * Math.Exp(random.Next(-20, 20))),
                };
            if (kind == 1) x[b * 32 + random.Next(32)] = -3f;
            if (kind == 7) x[b * 32 + random.Next(32)] = float.NaN;
            if (kind == 8) x[b * 32 + random.Next(32)] = float.NegativeInfinity;
            if (kind == 6) x[b * 32 + random.Next(32)] = -0f;
        }
        var a = new NibbleLanes.Vectors();
        a.Set(x, Vectors, cols, evensThenOdds, bias: 12, halves);
        var q = new sbyte[32];
        for (int v = 0; v < Vectors; v++)
            for (int j = 0; j < blocks; j++)
            {
                int i = v * blocks + j;
                int sum = NibbleDot.QuantizeBlockReference(x.AsSpan(v * cols + j * 32, 32), evensThenOdds, q, out float scale);
                Assert.Equal(BitConverter.SingleToInt32Bits(scale), BitConverter.SingleToInt32Bits(a.Scales[i]));
                Assert.Equal(-12 * sum, a.Bias[i]);
                if (halves)
                {
                    int first = 0;
                    for (int t = 0; t < 8; t++) first += q[t] + q[16 + t];
                    Assert.Equal(-12 * first, a.HalfBias[2 * i]);
                    Assert.Equal(-12 * (sum - first), a.HalfBias[2 * i + 1]);
                }
                for (int m = 0; m < 8; m++)
                {
                    int start = (m & 1) == 0 ? 4 * (m / 2) : 16 + 4 * (m / 2);
                    int word = a.Q[i * 8 + m];
                    for (int t = 0; t < 4; t++) Assert.True(q[start + t] == (sbyte)(word >> (8 * t)), $"vector {v} block {j} word {m} byte {t}");
                }
            }
    }

    /// <summary>A set keeps its results only for the same activations bit for bit and the same parameters: an element
    /// changed in place (the same array, as the runtime's scratch is), −0 for +0, another bias or the half-block sums
    /// asked for each give what a fresh set computes.</summary>
    [Fact]
    public void ASetIsKeptOnlyForTheSameActivations()
    {
        var random = new Random(5);
        float[] x = [.. Enumerable.Range(0, 3 * 64).Select(_ => (float)(random.NextDouble() * 4 - 2))];
        var kept = new NibbleLanes.Vectors();
        void Check(bool halves, int bias)
        {
            kept.Set(x, 3, 64, evensThenOdds: true, bias, halves);
            var fresh = new NibbleLanes.Vectors();
            fresh.Set(x, 3, 64, evensThenOdds: true, bias, halves);
            Assert.Equal(fresh.Q.AsSpan(0, 3 * 2 * 8).ToArray(), kept.Q.AsSpan(0, 3 * 2 * 8).ToArray());
            Assert.Equal(fresh.Scales.AsSpan(0, 6).ToArray(), kept.Scales.AsSpan(0, 6).ToArray());
            Assert.Equal(fresh.Bias.AsSpan(0, 6).ToArray(), kept.Bias.AsSpan(0, 6).ToArray());
            if (halves) Assert.Equal(fresh.HalfBias.AsSpan(0, 12).ToArray(), kept.HalfBias.AsSpan(0, 12).ToArray());
            Assert.Equal(halves, kept.Halves);
        }
        Check(false, 12);
        Check(false, 12);            // the same: kept
        x[100] = -x[100];            // changed in place
        Check(false, 12);
        x[7] = 0f;
        Check(false, 12);
        x[7] = -0f;                  // equal as floats, another bit pattern: still recomputed (same codes either way)
        Check(false, 12);
        Check(false, 6);             // another bias
        Check(true, 6);              // half-block sums asked for
        x[191] = 1e30f;              // the last element of the last vector
        Check(true, 6);
    }

    /// <summary>Within one product (<c>KeptActivations.Product</c>) a set made from an address is kept for the same
    /// address without comparing (a product's input does not change while it runs); under another product, or none, the
    /// activations are compared again, so one changed in place is quantized afresh.</summary>
    [Fact]
    public void WithinAProductASetIsKeptByItsAddress()
    {
        var random = new Random(8);
        float[] x = [.. Enumerable.Range(0, 2 * 64).Select(_ => (float)(random.NextDouble() * 4 - 2))];
        long outer = KeptActivations.Product;
        try
        {
            var kept = new NibbleLanes.Vectors();
            int[] Codes(float[] from)
            {
                var fresh = new NibbleLanes.Vectors();
                fresh.Set(from, 2, 64, evensThenOdds: true, 12);
                return fresh.Q.AsSpan(0, 2 * 2 * 8).ToArray();
            }
            KeptActivations.Product = KeptActivations.NewProduct();
            kept.Set(x, 2, 64, evensThenOdds: true, 12);
            var before = Codes(x);
            Assert.Equal(before, kept.Q.AsSpan(0, 32).ToArray());
            x[3] = 40f; // changed within the product: by contract it does not happen, and the set is kept
            kept.Set(x, 2, 64, evensThenOdds: true, 12);
            Assert.Equal(before, kept.Q.AsSpan(0, 32).ToArray());
            KeptActivations.Product = KeptActivations.NewProduct(); // the next product compares, and quantizes afresh
            kept.Set(x, 2, 64, evensThenOdds: true, 12);
            Assert.Equal(Codes(x), kept.Q.AsSpan(0, 32).ToArray());
            Assert.NotEqual(before, kept.Q.AsSpan(0, 32).ToArray());
            KeptActivations.Product = 0; // outside any product: compared
            x[3] = -40f;
            kept.Set(x, 2, 64, evensThenOdds: true, 12);
            Assert.Equal(Codes(x), kept.Q.AsSpan(0, 32).ToArray());
        }
        finally
        {
            KeptActivations.Product = outer;
        }
    }

    /// <summary>The int16 sums without VNNI at their bound: every code the table's largest entry (32, 64 and 128: the
    /// most four, two and one words' <c>vpmaddubsw</c> results may be summed), every activation ±127 (all ones or all
    /// minus ones), whole and half blocks — each result still equals the scalar twin exactly (a saturated sum would
    /// not).</summary>
    [Theory]
    [InlineData(32, 1f, false)]
    [InlineData(32, -1f, true)]
    [InlineData(64, -1f, false)]
    [InlineData(128, 1f, true)]
    [InlineData(128, -1f, false)]
    public void WideningAtItsBoundIsExact(int largest, float sign, bool halves)
    {
        if (!NibbleLanes.IsSupported) return;
        const int rows = 16, blocks = 3, cols = blocks * 32, vectors = 4;
        Assert.Equal(largest switch { 32 => 4, 64 => 2, _ => 1 }, NibbleLanes.WordsPerWidening(largest));
        byte[] codes = [.. Enumerable.Range(0, rows * blocks * 16).Select(i => (byte)(i * 37))];
        sbyte[] table = [.. Enumerable.Repeat(unchecked((sbyte)(byte)largest), 16)];
        float[] rowFactors = [.. Enumerable.Range(0, rows * blocks * (halves ? 2 : 1)).Select(i => 1f + i % 5)];
        float[] x = [.. Enumerable.Repeat(sign, vectors * cols)];
        var a = new NibbleLanes.Vectors();
        a.Set(x, vectors, cols, evensThenOdds: true, bias: 0, halves);
        Assert.All(a.Q.AsSpan(0, vectors * blocks * 8).ToArray(), word => Assert.Equal(sign > 0 ? 0x7F7F7F7F : unchecked((int)0x81818181), word));
        foreach (var (groupRows, arithmetic) in Runs())
        {
            var y = RunGroups(codes, rows, blocks, rowFactors, a, NibbleDot.Broadcast(table), null, null, groupRows, arithmetic);
            AssertEqualsTheTwin(codes, rows, blocks, rowFactors, table, null, a, y);
            // Row 0, vector 0: each (half) block sums largest × 127 × its elements, times its factor and the scale 1/127.
            int perRow = rowFactors.Length / rows;
            Assert.Equal(sign * largest * (halves ? 16 : 32) * rowFactors.AsSpan(0, perRow).ToArray().Sum(), y[0]);
        }
    }

    /// <summary>Without VNNI, tables with an entry above 128 (one word's pair of products could saturate int16) are
    /// refused with a clear error rather than summed wrongly.</summary>
    [Fact]
    public void TablesTooWideForInt16AreRefusedWithoutVnni()
    {
        if (!NibbleLanes.IsSupported) return;
        Assert.Equal(0, NibbleLanes.WordsPerWidening(129));
        var a = new NibbleLanes.Vectors();
        a.Set(new float[32], 1, 32, evensThenOdds: true, bias: 0);
        sbyte[] table = [.. Enumerable.Repeat(unchecked((sbyte)200), 16)];
        var error = Assert.Throws<ArgumentException>(() => RunGroups(new byte[16], 1, 1, [1f], a, NibbleDot.Broadcast(table), null, null, 8, NibbleLanes.Arithmetic.Widened));
        Assert.Contains("200", error.Message);
    }

    /// <summary>MXFP4 on the lanes equals the row-at-a-time kernel (same block totals, other summation order) on 21 rows,
    /// 11 blocks (a last gather of scales overlapping the one before), 4 (one gather) and 3 (the table alone), with the E8M0 codes the exponent trick leaves to the table
    /// (0, 1, 255 = NaN) in some blocks. (Tolerance 1e-4: the blocks' terms are larger than their sum.)</summary>
    [Theory]
    [InlineData(2, 11)]
    [InlineData(5, 11)]
    [InlineData(8, 11)]
    [InlineData(5, 3)]
    [InlineData(3, 4)]
    public void Mxfp4LanesEqualTheRowKernel(int vectors, int blocks)
    {
        if (!NibbleLanes.IsSupported || !MxDot.IsSupported) return;
        const int rows = 21;
        int cols = blocks * 32;
        var random = new Random(vectors + 40);
        byte[] codes = [.. Enumerable.Range(0, rows * blocks * 16).Select(_ => (byte)random.Next(256))];
        byte[] scales = [.. Enumerable.Range(0, rows * blocks).Select(_ => (byte)random.Next(122, 132))];
        scales[3] = 0;
        scales[blocks + 5] = 1;
        scales[4 * blocks + 9] = 255;
        scales[9 * blocks + 2] = 2;
        float[] x = [.. Enumerable.Range(0, vectors * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var doubled = MxDot.DoubledTable(ElementFormat.E2M1)!;
        var biased = MxDot.Biased(doubled)!.Value;
        var lanes = new float[vectors * rows];
        var rowWise = new float[vectors * rows];
        MxDot.DotRowsLanes(biased, ScaleFormat.E8M0.DecodeTable, codes, scales, rows, blocks, vectors, x, lanes, rows);
        MxDot.DotRowsMany(biased, ScaleFormat.E8M0.DecodeTable, codes, scales, rows, blocks, vectors, x, rowWise, rows);
        for (int i = 0; i < lanes.Length; i++)
        {
            if (float.IsNaN(rowWise[i])) { Assert.True(float.IsNaN(lanes[i]), $"entry {i}"); continue; }
            Assert.True(Math.Abs(lanes[i] - rowWise[i]) <= 1e-4 * (Math.Abs(rowWise[i]) + 1), $"entry {i}: {lanes[i]} vs {rowWise[i]}");
        }
        Assert.Contains(lanes, float.IsNaN);
    }

    /// <summary>Per-block tables (NxFP4's two or four): random tables with values up to 127, a random table per row and
    /// block; each result equals the scalar twin exactly.</summary>
    [Theory]
    [InlineData(3, 4)]
    [InlineData(9, 4)]
    [InlineData(6, 2)]
    [InlineData(16, 2)]
    public void SelectedTablesEqualTheScalarTwinBitForBit(int vectors, int tableCount)
    {
        if (!NibbleLanes.IsSupported || !NibbleLanes.Tables.SelectedSupported) return;
        const int rows = 27, blocks = 6, cols = blocks * 32;
        var random = new Random(vectors + 7);
        byte[] codes = [.. Enumerable.Range(0, rows * blocks * 16).Select(_ => (byte)random.Next(256))];
        byte[] four = [.. Enumerable.Range(0, 16 * tableCount).Select(_ => (byte)random.Next(0, 128))];
        int[] rowTables = [.. Enumerable.Range(0, rows * blocks).Select(_ => random.Next(tableCount))];
        float[] rowFactors = [.. Enumerable.Range(0, rows * blocks).Select(_ => (float)Math.Exp(random.NextDouble() * 4 - 2))];
        float[] x = [.. Enumerable.Range(0, vectors * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var a = new NibbleLanes.Vectors();
        a.Set(x, vectors, cols, evensThenOdds: true, bias: 5);
        foreach (var (groupRows, arithmetic) in Runs())
            AssertEqualsTheTwin(codes, rows, blocks, rowFactors, [.. four.Select(b => (sbyte)b)], rowTables, a,
                RunGroups(codes, rows, blocks, rowFactors, a, default, four, rowTables, groupRows, arithmetic));
    }

    /// <summary>The default NxFP4 runs on the lanes where the CPU allows (its four tables fit one 64-byte lookup), and
    /// its lane product equals the row-at-a-time kernel, NaN blocks included.</summary>
    [Theory]
    [InlineData(19, 11, 6)]
    [InlineData(64, 2, 12)]
    [InlineData(172, 2, 12)]
    [InlineData(43, 2, 4)]
    [InlineData(37, 18, 16)] // a SmolLM2 row's 18 blocks: the selectors' last gather overlaps the one before
    public void NxfpLanesEqualTheRowKernel(int rows, int blocks, int vectors)
    {
        var codec = (Nanoscale.Formats.Nx.NxfpCodec)CodecRegistry.CreateBlockCodec("nxfp4");
        var dot = Nanoscale.Formats.Nx.NxfpDot.For(codec);
        if (dot is null || !NibbleLanes.IsSupported || !NibbleLanes.Tables.SelectedSupported) return;
        Assert.True(dot.HasLanes);
        int cols = blocks * 32;
        var random = new Random(12);
        float[] w = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)((random.NextDouble() * 2 - 1) * Math.Exp(random.NextDouble() * 4 - 2)))];
        for (int i = 0; i < 32; i++) w[3 * cols + 32 + i] = float.NaN; // row 3, block 1 passed through as NaN
        float[] x = [.. Enumerable.Range(0, vectors * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var encoded = CodecHarness.Quantize(codec, w, rows, cols, new CodecOptions { NonFinite = NonFinitePolicy.PassThrough });
        var lanes = new float[vectors * rows];
        var rowWise = new float[vectors * rows];
        dot.DotRowsLanes(encoded.Blocks, encoded.Scales, rows, cols, vectors, x, lanes, rows);
        for (int v = 0; v < vectors; v += 8) // the row kernel takes eight at a time
            dot.DotRowsMany(encoded.Blocks, encoded.Scales, rows, cols, Math.Min(8, vectors - v), x.AsSpan(v * cols), rowWise.AsSpan(v * rows), rows);
        for (int i = 0; i < lanes.Length; i++)
        {
            if (float.IsNaN(rowWise[i])) { Assert.True(float.IsNaN(lanes[i]), $"entry {i}"); continue; }
            Assert.True(Math.Abs(lanes[i] - rowWise[i]) <= 1e-4 * (Math.Abs(rowWise[i]) + 1), $"entry {i}: {lanes[i]} vs {rowWise[i]}");
        }
        Assert.True(float.IsNaN(lanes[3]), "row 3 has a NaN block");
    }

    /// <summary>Half blocks (NVFP4: a weight factor per 16): two biases and two factors per block, each result equal to
    /// the scalar twin exactly; the half biases are −bias × each half's code sum.</summary>
    [Theory]
    [InlineData(3)]
    [InlineData(6)]
    public void HalfBlocksEqualTheScalarTwinBitForBit(int vectors)
    {
        if (!NibbleLanes.IsSupported) return;
        const int rows = 26, blocks = 5, cols = blocks * 32;
        var random = new Random(vectors + 21);
        byte[] codes = [.. Enumerable.Range(0, rows * blocks * 16).Select(_ => (byte)random.Next(256))];
        sbyte[] table = [.. Enumerable.Range(0, 16).Select(_ => (sbyte)random.Next(0, 25))];
        float[] rowFactors = [.. Enumerable.Range(0, rows * 2 * blocks).Select(_ => (float)Math.Exp(random.NextDouble() * 6 - 3))];
        float[] x = [.. Enumerable.Range(0, vectors * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var a = new NibbleLanes.Vectors();
        a.Set(x, vectors, cols, evensThenOdds: true, bias: 12, halves: true);
        for (int i = 0; i < vectors * blocks; i++) Assert.Equal(a.Bias[i], a.HalfBias[2 * i] + a.HalfBias[2 * i + 1]);
        foreach (var (groupRows, arithmetic) in Runs())
            AssertEqualsTheTwin(codes, rows, blocks, rowFactors, table, null, a, RunGroups(codes, rows, blocks, rowFactors, a, NibbleDot.Broadcast(table), null, null, groupRows, arithmetic));
    }

    /// <summary>NVFP4 on the lanes equals its row-at-a-time kernel (tensor scale and UE4M3 block scales applied per 16).</summary>
    [Theory]
    [InlineData(21, 11, 6)]
    [InlineData(64, 2, 16)]
    public void Nvfp4LanesEqualTheRowKernel(int rows, int groups, int vectors)
    {
        if (!NibbleLanes.IsSupported) return;
        var codec = CodecRegistry.CreateBlockCodec("nvfp4");
        int cols = groups * 32;
        var random = new Random(rows + vectors);
        float[] w = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)((random.NextDouble() * 2 - 1) * Math.Exp(random.NextDouble() * 4 - 2)))];
        float[] x = [.. Enumerable.Range(0, vectors * cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var encoded = CodecHarness.Quantize(codec, w, rows, cols);
        var lanes = new float[vectors * rows];
        Assert.True(codec.TryDotRowsMany(encoded.Blocks, encoded.Scales, encoded.TensorData, rows, cols, vectors, x, lanes, rows));
        for (int v = 0; v < vectors; v++)
        {
            var one = new float[rows];
            Assert.True(codec.TryDotRows(encoded.Blocks, encoded.Scales, encoded.TensorData, rows, cols, x.AsSpan(v * cols, cols), one));
            for (int r = 0; r < rows; r++)
                Assert.True(Math.Abs(lanes[v * rows + r] - one[r]) <= 1e-4 * (Math.Abs(one[r]) + 1), $"vector {v} row {r}: {lanes[v * rows + r]} vs {one[r]}");
        }
    }

    /// <summary>Eight rows' factors moved into the lanes at once (<see cref="NibbleLanes.PlaceRows"/>: 8 × 8 transposes)
    /// equal each row placed alone (<see cref="NibbleLanes.Place"/>), the missing rows of a partial eight repeating its
    /// first, for counts with and without a tail after the transposes.</summary>
    [Theory]
    [InlineData(8, 19)]
    [InlineData(8, 64)]
    [InlineData(5, 24)]
    [InlineData(1, 7)]
    [InlineData(3, 0)]
    public unsafe void PlaceRowsEqualsEachRowPlaced(int rows, int count)
    {
        const int stride = 70;
        var random = new Random(rows * 31 + count);
        float[] source = [.. Enumerable.Range(0, 8 * stride).Select(_ => (float)random.NextDouble())];
        var expected = new float[Math.Max(1, count * NibbleLanes.Lanes)];
        var actual = new float[expected.Length];
        fixed (float* s = source)
        fixed (float* e = expected)
        fixed (float* a = actual)
        {
            for (int i = 0; i < NibbleLanes.Lanes; i++) NibbleLanes.Place(s + NibbleLanes.SourceRow(i, rows) * stride, count, i, e);
            NibbleLanes.PlaceRows(s, stride, rows, count, a);
        }
        Assert.Equal(expected, actual);
    }

    /// <summary>NVFP4's lane factors, eight rows' UE4M3 block scales decoded at once from gathered words
    /// (<see cref="Nanoscale.Formats.Nv.NvFp4Dot.LaneFactors"/>), equal the scalar formula placed lane by lane bit for bit:
    /// every one of the 256 codes (subnormal, NaN and the codes above UE4M3's range included), a tensor scale multiplied
    /// or divided, fewer than eight rows (the missing ones repeat row 0) and block counts that leave one to three
    /// blocks for the scalar tail.</summary>
    [Theory]
    [InlineData(8, 64, false)]
    [InlineData(8, 64, true)]
    [InlineData(5, 38, false)]
    [InlineData(3, 3, true)]
    public unsafe void Nvfp4LaneFactorsEqualTheScalarFormula(int rows, int count, bool divisor)
    {
        var random = new Random(rows * 100 + count);
        var codes = new byte[rows * count];
        for (int i = 0; i < codes.Length; i++) codes[i] = (byte)(i < 256 ? i : random.Next(256));
        float tensorScale = divisor ? 3.7f : 0.0123f;
        var table = Nanoscale.Formats.ScaleFormat.UE4M3.DecodeTable;
        var actual = new float[count * NibbleLanes.Lanes];
        fixed (byte* c = codes)
        fixed (float* t = table)
        fixed (float* f = actual)
            Nanoscale.Formats.Nv.NvFp4Dot.LaneFactors(c, count, rows, t, tensorScale, divisor, f);
        for (int k = 0; k < count; k++)
            for (int i = 0; i < NibbleLanes.Lanes; i++)
            {
                int row = i < rows ? i : 0;
                float expected = Nanoscale.Formats.Nv.NvFp4Codec.BlockScale(table[codes[row * count + k]], tensorScale, divisor) * 0.5f;
                float got = actual[k * NibbleLanes.Lanes + i];
                Assert.True(float.IsNaN(expected) ? float.IsNaN(got) : BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(got),
                    $"block {k} lane {i} (code {codes[row * count + k]}): {got} vs {expected}");
            }
    }

    /// <summary>Groups of a kernel call's rows (eight: one register's lanes; sixteen: two, sharing each activation broadcast).</summary>
    private static readonly int[] GroupSizes = [NibbleLanes.Lanes, NibbleLanes.GroupRows];

    /// <summary>The multiply-adds this CPU can run: <c>vpmaddubsw</c> + <c>vpmaddwd</c> on 256 bits always (AVX2),
    /// <c>vpdpbusd</c> where it has AVX-VNNI, the 512-bit pair where it has AVX-512 BW — so such a machine checks every path.</summary>
    private static readonly NibbleLanes.Arithmetic[] Arithmetics =
    [
        NibbleLanes.Arithmetic.Widened,
        .. System.Runtime.Intrinsics.X86.AvxVnni.IsSupported ? [NibbleLanes.Arithmetic.Vnni] : Array.Empty<NibbleLanes.Arithmetic>(),
        .. NibbleLanes.WideSupported ? [NibbleLanes.Arithmetic.Wide] : Array.Empty<NibbleLanes.Arithmetic>(),
    ];

    /// <summary>Every group size on every arithmetic (the wide one also with its sixteen rows unpacked as two eights,
    /// the path of AVX-512 machines without VBMI for per-block tables: <see cref="NibbleLanes.SixteenAtOnce"/> off while
    /// such a run is taken).</summary>
    private static IEnumerable<(int GroupRows, NibbleLanes.Arithmetic Arithmetic)> Runs()
    {
        foreach (int g in GroupSizes)
            foreach (var arithmetic in Arithmetics)
            {
                yield return (g, arithmetic);
                if (arithmetic != NibbleLanes.Arithmetic.Wide) continue;
                NibbleLanes.SixteenAtOnce = false;
                try { yield return (g, arithmetic); }
                finally { NibbleLanes.SixteenAtOnce = true; }
            }
    }

    /// <summary>Runs every group of <paramref name="groupRows"/> rows (eight or sixteen) through <see cref="NibbleLanes.Group(byte*, nint, int, int, float*, NibbleLanes.Vectors, NibbleLanes.Tables, System.Runtime.Intrinsics.Vector256{byte}*, float*, int)"/>:
    /// each row's factors (<c>rowFactors.Length / rows</c> of them: one per block, or two with half blocks) placed in its
    /// lane, each eight rows' after the previous eight's, NaN in the missing lanes of a last partial group (their results
    /// must not leak); with <paramref name="rowTables"/>, each block's table number from <paramref name="four"/>, else
    /// the one <paramref name="table"/>. Returns <c>y[v·rows + r]</c>.</summary>
    private static float[] RunGroups(byte[] codes, int rows, int blocks, float[] rowFactors, NibbleLanes.Vectors a,
        System.Runtime.Intrinsics.Vector256<sbyte> table, byte[]? four, int[]? rowTables, int groupRows, NibbleLanes.Arithmetic arithmetic)
    {
        const int L = NibbleLanes.Lanes;
        int perRow = rowFactors.Length / rows;
        var y = new float[a.Count * rows];
        var lanes = new float[perRow * groupRows];
        var selectors = new int[blocks * groupRows];
        var unpacked = NibbleLanes.Unpacked(blocks);
        fixed (byte* c = codes)
        fixed (float* f = lanes)
        fixed (int* s = selectors)
        fixed (float* y0 = y)
        {
            var tables = four is null ? new NibbleLanes.Tables(table) : new NibbleLanes.Tables(four, s);
            for (int r = 0; r < rows; r += groupRows)
            {
                int n = Math.Min(groupRows, rows - r);
                for (int g = 0; g < groupRows; g++)
                {
                    int half = g / L, i = g % L; // the eight rows' block of factors and the lane in it
                    for (int k = 0; k < perRow; k++) lanes[half * perRow * L + k * L + i] = g < n ? rowFactors[(r + g) * perRow + k] : float.NaN;
                    if (rowTables is not null)
                        for (int j = 0; j < blocks; j++) selectors[half * blocks * L + j * L + i] = g < n ? rowTables[(r + g) * blocks + j] * 0x10101010 : 0;
                }
                NibbleLanes.Group(c + r * blocks * 16, blocks * 16, n, blocks, f, a, tables, unpacked, y0 + r, rows, arithmetic);
            }
        }
        return y;
    }

    /// <summary>Every result equals <see cref="NibbleLanes.RowReference(ReadOnlySpan{byte}, ReadOnlySpan{float}, ReadOnlySpan{sbyte}, int[], NibbleLanes.Vectors, int)"/> exactly.</summary>
    private static void AssertEqualsTheTwin(byte[] codes, int rows, int blocks, float[] rowFactors, sbyte[] tables, int[]? rowTables,
        NibbleLanes.Vectors a, float[] y)
    {
        int perRow = rowFactors.Length / rows;
        for (int v = 0; v < a.Count; v++)
            for (int r = 0; r < rows; r++)
                Assert.Equal(NibbleLanes.RowReference(codes.AsSpan(r * blocks * 16, blocks * 16), rowFactors.AsSpan(r * perRow, perRow), tables,
                    rowTables?[(r * blocks)..((r + 1) * blocks)], a, v), y[v * rows + r]);
    }
}
