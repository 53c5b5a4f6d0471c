using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

public class LinearWeightTests
{
    /// <summary>A stand-in codec: decodes rows from a dense copy, to exercise the block-decoding product path.</summary>
    private sealed class CopyingWeight(float[] weights, int rows, int columns) : RowDecodedLinearWeight(rows, columns)
    {
        public override void ReadRows(int firstRow, int count, Span<float> destination) =>
            weights.AsSpan(firstRow * Columns, count * Columns).CopyTo(destination);
    }

    /// <summary>A matrix written to a safetensors file in <c>dtype</c> and opened as the runtime maps it.</summary>
    private sealed class StoredMatrix : IDisposable
    {
        private readonly TempDir _dir = new();
        private readonly ICheckpoint _file;
        private readonly CheckpointWeightSource _source;

        public StoredMatrix(DType dtype, int rows, int columns, byte[] raw)
        {
            var path = _dir.File("w.safetensors");
            new SafetensorsWriter(path).Add("w", dtype, [rows, columns], raw).Commit();
            _file = CheckpointLoader.Open(path);
            _source = new CheckpointWeightSource(_file);
            Weight = _source.Linear("w");
        }

        public ILinearWeight Weight { get; }

        public void Dispose()
        {
            _source.Dispose();
            _file.Dispose();
            _dir.Dispose();
        }
    }

    public static TheoryData<int, int, int> Shapes => new()
    {
        { 1, 1, 1 }, { 3, 5, 1 }, { 17, 33, 7 }, { 64, 64, 65 }, { 300, 200, 3 }, { 513, 64, 130 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void DenseAndRowDecodedMatchTheScalarReference(int rows, int columns, int tokens)
    {
        var random = new Random(rows * 1000 + columns);
        float[] w = [.. Enumerable.Range(0, rows * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        float[] x = [.. Enumerable.Range(0, tokens * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var expected = new float[tokens * rows];
        LinearKernels.MatMulReference(w, rows, columns, x, expected);
        foreach (var options in new[] { new RuntimeOptions { Parallelism = new(1) }, new RuntimeOptions { Parallelism = new(3), MinParallelMultiplyAdds = 0 } })
        {
            foreach (ILinearWeight weight in new ILinearWeight[] { new DenseLinearWeight(w, rows, columns), new CopyingWeight(w, rows, columns) })
            {
                var actual = new float[tokens * rows];
                weight.MatMul(x, actual, options);
                for (int i = 0; i < actual.Length; i++)
                    Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5f * columns, $"{weight.GetType().Name} [{i}]: {expected[i]} vs {actual[i]}");
            }
        }
    }

    /// <summary>A tile is whole calls of twelve rows and never less than one, however wide the rows: a feed-forward
    /// down projection's 8192 columns once gave tiles of two rows, each panel a quarter full (its window products took
    /// longer than gate and up together), and 1536 columns tiles of six, half of each AVX-512 call's chains idle.</summary>
    [Theory]
    [InlineData(576, 24)]
    [InlineData(1536, 12)]
    [InlineData(2048, 12)]
    [InlineData(8192, 12)]
    [InlineData(65536, 12)]
    [InlineData(7, 2340)]
    public void TilesAreWholeCallsOfAtLeastTwelveRows(int columns, int rows) => Assert.Equal(rows, LinearKernels.RowsPerTile(columns));

    /// <summary>A step's tiles (up to sixteen tokens) are, where the AVX-512 kernels run, whole calls of both the
    /// sixteen-token kernel (twelve rows) and the eight-token one (sixteen): a tile of 24 rows left the second
    /// eight-token call half empty. Elsewhere they are the windows' tiles.</summary>
    [Theory]
    [InlineData(576)]
    [InlineData(1536)]
    [InlineData(8192)]
    [InlineData(7)]
    public void AStepsTilesAreWholeCallsOfBothKernels(int columns)
    {
        int rows = LinearKernels.StepRowsPerTile(columns), window = LinearKernels.RowsPerTile(columns);
        if (!PanelGemm.Wide)
        {
            Assert.Equal(window, rows);
            return;
        }
        Assert.Equal(0, rows % PanelGemm.CallRows);
        Assert.Equal(0, rows % 16);
        Assert.InRange(rows, window, window + PanelGemm.StepTileRows - 1);
    }

    /// <summary>The packed activations of the panel kernel (eight tokens' columns transposed in registers) are the
    /// scalar packing's floats bit for bit — whole and partial groups (a half of eight missing, a few tokens of the
    /// second half), columns not a multiple of eight, NaN and −0 moved as they are — and the buffer's stale contents
    /// past the tokens are overwritten with zeros as the reference does.</summary>
    [Theory]
    [InlineData(16, 576)]
    [InlineData(1, 8)]
    [InlineData(7, 13)]
    [InlineData(8, 1536)]
    [InlineData(9, 40)]
    [InlineData(37, 203)]
    [InlineData(72, 576)]
    public void PackedActivationsEqualTheScalarPacking(int tokens, int columns)
    {
        var random = new Random(tokens * 1000 + columns);
        float[] x = [.. Enumerable.Range(0, tokens * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        x[columns / 2] = float.NaN;
        x[^1] = -0f;
        long length = PanelGemm.PackedLength(tokens, columns);
        var expected = new float[length];
        var actual = Enumerable.Repeat(123f, (int)length).ToArray(); // a reused buffer's leftovers
        PanelGemm.PackActivationsReference(x, tokens, columns, expected);
        PanelGemm.PackActivations(x, tokens, columns, actual);
        AssertSameBits(expected, actual, "packed");
    }

    /// <summary>The panel kernel of many-token products (<see cref="PanelGemm"/>) equals its scalar twin bit for bit —
    /// each output one chain of fused multiply-adds over the columns — for partial blocks (rows not a multiple of 6),
    /// both group kernels (sixteen tokens and a last group of eight or fewer), and a NaN weight (its row NaN, the others
    /// untouched); and through the dense and row-decoding weights, on any number of threads.</summary>
    [Theory]
    [InlineData(8, 64, 12)]
    [InlineData(21, 203, 37)]
    [InlineData(5, 8, 9)]
    [InlineData(64, 576, 64)]
    [InlineData(19, 40, 130)] // the dense product's token tiles of 64: packed groups from token 64 and 128 on (two tokens)
    [InlineData(24, 72, 8)] // a last group of exactly eight: whole twelve-row calls stored token by token
    [InlineData(25, 40, 24)] // sixteen and eight, and a call of one row
    public void PanelKernelEqualsItsScalarTwinBitForBit(int rows, int columns, int tokens)
    {
        if (!PanelGemm.IsSupported) return;
        var random = new Random(rows * 1000 + columns + tokens);
        float[] w = [.. Enumerable.Range(0, rows * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        w[(rows / 2) * columns + columns - 1] = float.NaN;
        float[] x = [.. Enumerable.Range(0, tokens * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var expected = new float[tokens * rows];
        PanelGemm.Reference(w, rows, columns, x, tokens, expected, rows);
        var packed = new float[PanelGemm.PackedLength(tokens, columns)];
        PanelGemm.PackActivations(x, tokens, columns, packed);
        float[] Kernel(bool narrow)
        {
            var y = new float[tokens * rows];
            unsafe
            {
                fixed (float* wp = w)
                fixed (float* xp = packed)
                fixed (float* yp = y)
                {
                    if (narrow) PanelGemm.MultiplyNarrow(wp, rows, columns, xp, tokens, yp, rows);
                    else PanelGemm.Multiply(wp, rows, columns, xp, tokens, yp, rows);
                }
            }
            return y;
        }
        var direct = Kernel(narrow: false);
        AssertSameBits(expected, direct, "kernel");
        AssertSameBits(expected, Kernel(narrow: true), "256-bit kernel"); // where the 512-bit one is what Multiply takes
        for (int t = 0; t < tokens; t++)
            for (int r = 0; r < rows; r++) Assert.Equal(r == rows / 2, float.IsNaN(direct[t * rows + r]));
        if (tokens < PanelGemm.MinTokens) return;
        foreach (var options in new[] { new RuntimeOptions { Parallelism = new(1) }, new RuntimeOptions { Parallelism = new(3), MinParallelMultiplyAdds = 0 } })
            foreach (ILinearWeight weight in new ILinearWeight[] { new DenseLinearWeight(w, rows, columns), new CopyingWeight(w, rows, columns) })
            {
                var actual = new float[tokens * rows];
                weight.MatMul(x, actual, options);
                AssertSameBits(expected, actual, weight.GetType().Name);
            }
    }

    /// <summary>The panel kernel on BF16 rows as stored (<see cref="PanelGemm.MultiplyBf16"/>, six rows at a time
    /// widened) equals the scalar twin on the widened floats bit for bit — with NaN, ±Inf, subnormal and −0 weights,
    /// partial blocks, both group kernels — and asking for bytes ahead (here the rows themselves, and a
    /// range past them) changes nothing.</summary>
    [Theory]
    [InlineData(8, 64, 12)]
    [InlineData(21, 203, 37)]
    [InlineData(5, 8, 9)]
    [InlineData(64, 576, 16)]
    [InlineData(24, 72, 8)]
    [InlineData(25, 40, 24)]
    public void PanelKernelOnBf16RowsEqualsItsScalarTwinBitForBit(int rows, int columns, int tokens)
    {
        if (!PanelGemm.IsSupported) return;
        var random = new Random(rows * 7 + columns + tokens);
        var raw = new ushort[rows * columns];
        for (int i = 0; i < raw.Length; i++) raw[i] = (ushort)(BitConverter.SingleToInt32Bits((float)random.NextDouble() * 4 - 2) >> 16);
        raw[0] = 0x8000;                       // −0
        raw[columns + 1] = 0x0001;             // the smallest subnormal
        raw[(rows / 2) * columns + 3] = 0x7F80; // +Inf
        raw[rows * columns - 1] = 0x7FC1;       // NaN
        var (_, expected, packed) = Bf16Case(raw, rows, columns, tokens, random);
        foreach (int ahead in new[] { 0, 1, 2 })
        {
            var actual = new float[tokens * rows];
            unsafe
            {
                fixed (ushort* wp = raw)
                fixed (float* xp = packed)
                fixed (float* yp = actual)
                    PanelGemm.MultiplyBf16(wp, rows, columns, xp, tokens, yp, rows,
                        ahead == 0 ? null : (byte*)wp + (ahead - 1) * raw.Length, 2 * raw.Length);
            }
            AssertSameBits(expected, actual, $"bf16 panels, prefetch {ahead}");
        }
        var narrow = new float[tokens * rows];
        unsafe
        {
            fixed (ushort* wp = raw)
            fixed (float* xp = packed)
            fixed (float* yp = narrow)
                PanelGemm.MultiplyBf16Narrow(wp, rows, columns, xp, tokens, yp, rows);
        }
        AssertSameBits(expected, narrow, "bf16 panels, 256-bit kernel");
    }

    /// <summary>The panel kernel reads nothing outside the rows it is given: BF16 weights are broadcast from the 32 bits
    /// that end at each one (its left neighbour below it), so column 0 must be read alone, and the last row must not be
    /// read past. Rows right after and right before an inaccessible page (a read outside faults), float and BF16, every
    /// group kernel, against the scalar twin.</summary>
    [Theory]
    [InlineData(6, 64, 16)]
    [InlineData(7, 33, 9)]
    [InlineData(13, 576, 5)]
    [InlineData(12, 40, 8)]   // two blocks in one call of the eight-token kernel, the last row at the guard
    [InlineData(24, 17, 27)]  // both kernels, whole blocks
    public unsafe void PanelKernelReadsOnlyItsRows(int rows, int columns, int tokens)
    {
        if (!PanelGemm.IsSupported || !GuardedMemory.IsSupported) return;
        var random = new Random(rows + columns + tokens);
        var raw = new ushort[rows * columns];
        for (int i = 0; i < raw.Length; i++) raw[i] = (ushort)(BitConverter.SingleToInt32Bits((float)random.NextDouble() * 2 - 1) >> 16);
        var (w, expected, packed) = Bf16Case(raw, rows, columns, tokens, random);
        foreach (bool atEnd in new[] { false, true })
            foreach (bool bf16 in new[] { true, false })
            {
                var bytes = bf16 ? System.Runtime.InteropServices.MemoryMarshal.AsBytes(raw.AsSpan()) : System.Runtime.InteropServices.MemoryMarshal.AsBytes(w.AsSpan());
                using var memory = atEnd ? GuardedMemory.AtEnd(bytes.Length) : GuardedMemory.AtStart(bytes.Length);
                bytes.CopyTo(memory.Bytes);
                var actual = new float[tokens * rows];
                fixed (float* xp = packed)
                fixed (float* yp = actual)
                {
                    if (bf16) PanelGemm.MultiplyBf16((ushort*)memory.Start, rows, columns, xp, tokens, yp, rows);
                    else PanelGemm.Multiply((float*)memory.Start, rows, columns, xp, tokens, yp, rows);
                }
                AssertSameBits(expected, actual, $"{(bf16 ? "bf16" : "f32")} rows, guard {(atEnd ? "after" : "before")}");
                fixed (float* xp = packed)
                fixed (float* yp = actual)
                {
                    if (bf16) PanelGemm.MultiplyBf16Narrow((ushort*)memory.Start, rows, columns, xp, tokens, yp, rows);
                    else PanelGemm.MultiplyNarrow((float*)memory.Start, rows, columns, xp, tokens, yp, rows);
                }
                AssertSameBits(expected, actual, $"{(bf16 ? "bf16" : "f32")} rows, 256-bit kernel, guard {(atEnd ? "after" : "before")}");
            }
    }

    /// <summary>The one-token and several-vector kernels on stored BF16/F16 rows read nothing outside the rows either
    /// (rows right after and right before an inaccessible page), and give there what they give on a managed array.</summary>
    [Theory]
    [InlineData(DType.BF16, 5, 33, 1)]
    [InlineData(DType.BF16, 9, 64, 4)]
    [InlineData(DType.BF16, 3, 203, 7)]
    [InlineData(DType.F16, 5, 33, 1)]
    [InlineData(DType.F16, 4, 96, 3)]
    public unsafe void StoredRowKernelsReadOnlyTheirRows(DType dtype, int rows, int columns, int vectors)
    {
        if (!GuardedMemory.IsSupported) return;
        var random = new Random(rows * columns + vectors);
        float[] values = [.. Enumerable.Range(0, rows * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var raw = new byte[values.Length * 2];
        TensorData.FromFloat(values, dtype, raw);
        float[] x = [.. Enumerable.Range(0, vectors * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var expected = new float[vectors * rows];
        bool many = vectors > 1;
        if (!(many ? TensorData.TryDotRowsMany(raw, dtype, rows, columns, vectors, x, expected, rows)
                   : TensorData.TryDotRows(raw, dtype, rows, columns, x, expected)))
            return; // no kernel on this CPU
        foreach (bool atEnd in new[] { false, true })
        {
            using var memory = atEnd ? GuardedMemory.AtEnd(raw.Length) : GuardedMemory.AtStart(raw.Length);
            raw.CopyTo(memory.Bytes);
            var actual = new float[vectors * rows];
            var stored = new ReadOnlySpan<byte>(memory.Start, raw.Length);
            Assert.True(many ? TensorData.TryDotRowsMany(stored, dtype, rows, columns, vectors, x, actual, rows)
                             : TensorData.TryDotRows(stored, dtype, rows, columns, x, actual));
            AssertSameBits(expected, actual, $"{dtype}, guard {(atEnd ? "after" : "before")}");
        }
    }

    /// <summary>BF16 rows widened (exact), random tokens, the scalar twin's products and the tokens packed for the kernel.</summary>
    private static (float[] Widened, float[] Expected, float[] Packed) Bf16Case(ushort[] raw, int rows, int columns, int tokens, Random random)
    {
        float[] w = [.. raw.Select(b => BitConverter.Int32BitsToSingle(b << 16))];
        float[] x = [.. Enumerable.Range(0, tokens * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var expected = new float[tokens * rows];
        PanelGemm.Reference(w, rows, columns, x, tokens, expected, rows);
        var packed = new float[PanelGemm.PackedLength(tokens, columns)];
        PanelGemm.PackActivations(x, tokens, columns, packed);
        return (w, expected, packed);
    }

    private static void AssertSameBits(float[] expected, float[] actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
            Assert.True(float.IsNaN(expected[i]) ? float.IsNaN(actual[i]) : BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                $"{what} [{i}]: {actual[i]} vs {expected[i]}");
    }

    /// <summary>Weights computed on in their stored dtype, from the mapped file, against the same values widened to
    /// float32 up front (the reference twin): identical products, F32 through the dense kernel, BF16 and F16 through the
    /// row-widening one.</summary>
    [Theory]
    [InlineData(DType.F32, 300, 200, 3)]
    [InlineData(DType.BF16, 300, 200, 3)]
    [InlineData(DType.F16, 513, 64, 130)]
    [InlineData(DType.BF16, 17, 33, 7)]
    [InlineData(DType.BF16, 300, 203, 1)]
    [InlineData(DType.F16, 64, 96, 1)]
    [InlineData(DType.BF16, 77, 203, 37)]  // a window: BF16 rows straight into the panels, the next tile asked for
    [InlineData(DType.BF16, 300, 576, 16)] // a 16-sequence step: the same, thirteen tiles
    public void MappedWeightsInTheirStoredDTypeMatchTheWidenedCopy(DType dtype, int rows, int columns, int tokens)
    {
        var random = new Random(rows + columns);
        float[] values = [.. Enumerable.Range(0, rows * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var raw = new byte[values.Length * dtype.ElementSize()];
        TensorData.FromFloat(values, dtype, raw);
        using var stored = new StoredMatrix(dtype, rows, columns, raw);
        var mapped = stored.Weight;

        var widened = new float[values.Length];
        TensorData.ToFloat(raw, dtype, widened);
        float[] x = [.. Enumerable.Range(0, tokens * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var expected = new float[tokens * rows];
        new DenseLinearWeight(widened, rows, columns).MatMul(x, expected, RuntimeOptions.Default);
        var actual = new float[tokens * rows];
        // As the token factory runs them: up to 8 tokens on the stored codes.
        mapped.MatMul(x, actual, new RuntimeOptions { FusedTokens = RowDecodedLinearWeight.MaxFusedTokens });
        var windowed = new float[tokens * rows];
        mapped.MatMul(x, windowed, RuntimeOptions.Default);
        if (tokens > 1) Assert.Equal(expected, windowed); // a window decodes: exact
        if (tokens > RowDecodedLinearWeight.MaxFusedTokens)
            Assert.Equal(expected, actual);
        else
        {
            // Up to a few BF16 or F16 tokens run the fused kernel (widened in registers): equal up to summation order.
            for (int t = 0; t < tokens; t++)
            for (int i = 0; i < rows; i++)
            {
                double magnitude = 0;
                for (int c = 0; c < columns; c++) magnitude += Math.Abs((double)widened[i * columns + c] * x[t * columns + c]);
                Assert.True(Math.Abs(expected[t * rows + i] - actual[t * rows + i]) <= 1e-6 * magnitude, $"token {t} row {i}: {actual[t * rows + i]} vs {expected[t * rows + i]}");
            }
            var decoded = new float[tokens * rows];
            mapped.MatMul(x, decoded, new RuntimeOptions { FusedKernels = false });
            Assert.Equal(expected, decoded);
        }

        var row = new float[columns];
        mapped.ReadRows(rows - 1, 1, row);
        Assert.Equal(widened.AsSpan((rows - 1) * columns, columns).ToArray(), row);
    }

    /// <summary>Several tokens on BF16 rows of a matrix larger than a block (a tile's rows go in blocks that stay in the
    /// cache while every chunk of four tokens passes over them; here two blocks per tile, the last one partial): each
    /// token's results are its own one-token product, bit for bit, as the four-token kernel promises. (From
    /// <see cref="PanelGemm.MinTokens"/> tokens on a storage without a several-vector kernel decodes tiles instead:
    /// <see cref="PanelKernelEqualsItsScalarTwinBitForBit"/>.)</summary>
    [Theory]
    [InlineData(300, 2048, 6)]
    [InlineData(100, 8192, 7)]
    public void ManyTokensOverBlocksOfRowsEqualEachTokenAlone(int rows, int columns, int tokens)
    {
        var random = new Random(rows);
        float[] values = [.. Enumerable.Range(0, rows * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var raw = new byte[values.Length * 2];
        TensorData.FromFloat(values, DType.BF16, raw);
        using var stored = new StoredMatrix(DType.BF16, rows, columns, raw);
        var mapped = stored.Weight;
        float[] x = [.. Enumerable.Range(0, tokens * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var options = new RuntimeOptions { FusedTokens = RowDecodedLinearWeight.MaxFusedTokens, Parallelism = new Nanoscale.Tensors.Parallelism(2) };
        var together = new float[tokens * rows];
        mapped.MatMul(x, together, options);
        for (int t = 0; t < tokens; t++)
        {
            var alone = new float[rows];
            mapped.MatMul(x.AsSpan(t * columns, columns), alone, options);
            Assert.Equal(alone, together.AsSpan(t * rows, rows).ToArray());
        }
    }

    /// <summary>A weight that keeps the interface's own slice product (the whole product into a temporary).</summary>
    private sealed class WholeOnlyWeight(ILinearWeight inner) : ILinearWeight
    {
        public int Rows => inner.Rows;
        public int Columns => inner.Columns;
        public void ReadRows(int firstRow, int count, Span<float> destination) => inner.ReadRows(firstRow, count, destination);
        public void MatMul(ReadOnlySpan<float> input, Span<float> output, RuntimeOptions options) => inner.MatMul(input, output, options);
    }

    /// <summary>A slice of rows of the product (the perplexity's vocabulary slices) is those rows of the whole product
    /// for every kind of weight: dense, mapped F32, mapped BF16 (decoded tiles), a row-decoded codec and the interface's
    /// default — bit for bit when the slice is whole tiles of rows (as the perplexity takes them), up to summation order
    /// when it cuts tiles (rows group differently in the kernel); at either end, empty, and out of range.</summary>
    [Theory]
    [InlineData(DType.F32, 300, 200, 5)]
    [InlineData(DType.BF16, 513, 64, 130)]
    [InlineData(DType.BF16, 1100, 96, 20)]
    public void RowSlicesEqualTheWholeProductsRows(DType dtype, int rows, int columns, int tokens)
    {
        var random = new Random(rows * 7 + columns);
        float[] values = [.. Enumerable.Range(0, rows * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var raw = new byte[values.Length * dtype.ElementSize()];
        TensorData.FromFloat(values, dtype, raw);
        var widened = new float[values.Length];
        TensorData.ToFloat(raw, dtype, widened);
        using var stored = new StoredMatrix(dtype, rows, columns, raw);
        float[] x = [.. Enumerable.Range(0, tokens * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var options = new RuntimeOptions { Parallelism = new Nanoscale.Tensors.Parallelism(2), MinParallelMultiplyAdds = 0 };
        var dense = new DenseLinearWeight(widened, rows, columns);
        foreach (ILinearWeight weight in new[] { stored.Weight, dense, new CopyingWeight(widened, rows, columns), new WholeOnlyWeight(dense) })
        {
            var whole = new float[tokens * rows];
            weight.MatMul(x, whole, options);
            int tile = LinearKernels.RowsPerTile(columns);
            foreach (var (first, count) in new[] { (0, rows), (0, 1), (rows - 1, 1), (7, rows / 3), (rows / 2, rows - rows / 2), (5, 0),
                         (0, Math.Min(rows, tile)), (tile, rows - tile), (tile, Math.Min(tile, rows - tile)) })
            {
                var slice = new float[tokens * count];
                weight.MatMulRows(x, first, count, slice, options);
                bool wholeTiles = first % tile == 0 && (count % tile == 0 || first + count == rows);
                for (int t = 0; t < tokens; t++)
                for (int i = 0; i < count; i++)
                {
                    float expected = whole[t * rows + first + i], actual = slice[t * count + i];
                    if (wholeTiles) Assert.Equal(expected, actual);
                    else Assert.True(Math.Abs(expected - actual) <= 1e-5f * columns, $"rows {first}+{count}, token {t} row {i}: {actual} vs {expected}");
                }
            }
            Assert.Throws<ArgumentOutOfRangeException>(() => weight.MatMulRows(x, rows - 1, 2, new float[tokens * 2], options));
            Assert.Throws<ArgumentOutOfRangeException>(() => weight.MatMulRows(x, -1, 1, new float[tokens], options));
            Assert.Throws<ArgumentException>(() => weight.MatMulRows(x, 0, 2, new float[tokens * 2 + 1], options));
        }
    }

    /// <summary>Loading a bf16 model copies no weight: what is allocated is a small fraction of 4 bytes per weight.</summary>
    [Fact]
    public void LoadingABf16ModelKeepsItsWeightsInTheFile()
    {
        using var dir = new TempDir();
        var options = new SampleOptions { Dim = 512, HiddenDim = 1536, Layers = 2, Heads = 8, KvHeads = 4, VocabSize = 512 };
        SampleCheckpoint.Write(dir.Path, options);
        long before = GC.GetAllocatedBytesForCurrentThread();
        using var model = LoadedModel.Open(dir.Path, new ModelLoadOptions { TokenizerPath = SharedData.Tok512 });
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        long weights = SampleCheckpoint.ParameterCount(options);
        Assert.True(allocated < weights / 4, $"loading allocated {allocated} bytes for {weights} bf16 weights");
    }

    [Fact]
    public void RejectsMismatchedBuffers()
    {
        var weight = new DenseLinearWeight(new float[6], 2, 3);
        Assert.Throws<ArgumentException>(() => weight.MatMul(new float[4], new float[2], RuntimeOptions.Default));
        Assert.Throws<ArgumentException>(() => weight.MatMul(new float[6], new float[3], RuntimeOptions.Default));
        Assert.Throws<ArgumentException>(() => new DenseLinearWeight(new float[5], 2, 3));
    }
}
