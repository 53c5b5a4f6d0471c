using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.Formats.E8;

namespace Nanoscale.Tests.Formats;

/// <summary>The E8 lattice codebook and the <c>e8</c> format (issue 16).</summary>
public class E8Tests
{
    private static double[] Point(int index)
    {
        var p = new float[8];
        E8Lattice.Decode(index, 1f, p);
        return [.. p.Select(v => (double)v)];
    }

    [Fact]
    public void TheCodebookIsTheFirst65536LatticePointsByNorm()
    {
        var seen = new HashSet<string>();
        int[] shells = new int[13];
        for (int i = 0; i < E8Lattice.CodebookSize; i++)
        {
            var p = Point(i);
            bool integer = p.All(v => v == Math.Round(v)), half = p.All(v => v - Math.Floor(v) == 0.5);
            Assert.True(integer || half, $"point {i} mixes integer and half-integer coordinates");
            Assert.True(Math.Round(p.Sum()) % 2 == 0, $"point {i}: coordinate sum {p.Sum()} is odd");
            double norm = p.Sum(v => v * v);
            shells[(int)norm]++;
            Assert.True(seen.Add(string.Join(",", p)), $"point {i} appears twice");
            if (i > 0) Assert.True(norm >= Point(i - 1).Sum(v => v * v), "sorted by norm");
        }
        // E8's theta series: 1, 240, 2160, 6720, 17520, 30240 points of squared norm 0…10; the rest from the norm-12 shell.
        Assert.Equal([1, 240, 2160, 6720, 17520, 30240], new[] { shells[0], shells[2], shells[4], shells[6], shells[8], shells[10] });
        Assert.Equal(65536 - 56881, shells[12]);
    }

    /// <summary>Whenever the nearest lattice point (Conway and Sloane's decoding) is in the codebook, it is what a search
    /// over all 2^16 points finds; most vectors of a block's range are such.</summary>
    [Fact]
    public void NearestPointEqualsABruteForceSearch()
    {
        var random = new Random(8);
        var points = Enumerable.Range(0, E8Lattice.CodebookSize).Select(Point).ToArray();
        int inside = 0;
        Span<sbyte> nearest = stackalloc sbyte[8];
        for (int trial = 0; trial < 150; trial++)
        {
            var x = Enumerable.Range(0, 8).Select(_ => (random.NextDouble() * 2 - 1) * 1.4).ToArray();
            E8Lattice.Nearest(x, nearest);
            if (!E8Lattice.TryIndex(nearest, out _)) continue;
            inside++;
            int index = E8Lattice.Quantize(x);
            double Distance(double[] p) => p.Select((v, i) => (v - x[i]) * (v - x[i])).Sum();
            Assert.Equal(points.Min(Distance), Distance(points[index]), 12);
        }
        Assert.True(inside > 120, $"{inside} of 150 inside the codebook");
    }

    private static (double Mse, float[] Decoded) RoundTrip(string spec, float[] w, int rows, int cols)
    {
        var codec = CodecRegistry.CreateBlockCodec(spec);
        var (blocks, scales, tensorData) = BlockMatrix.Encode(codec, w, rows, cols);
        var decoded = new float[w.Length];
        codec.Dequantize(blocks, scales, tensorData, rows, cols, new CodecOptions(), decoded);
        return (w.Select((v, i) => (double)(v - decoded[i]) * (v - decoded[i])).Average(), decoded);
    }

    /// <summary>At the same 2.25 bits per weight, E8 vectors beat MXINT2's scalar grid on Gaussian weights by more than
    /// 3 dB, and stay above the rate-distortion bound (σ²·2^(−2·2) = 0.0625σ² at 2 bits of codes).</summary>
    [Fact]
    public void OnGaussianWeightsE8BeatsTheScalar2BitGrid()
    {
        var random = new Random(12);
        const int rows = 64, cols = 512;
        var w = new float[rows * cols];
        for (int i = 0; i < w.Length; i++) w[i] = (float)Nanoscale.Tests.LowRank.LowRankTestData.Gaussian(random);
        var (e8, _) = RoundTrip("e8", w, rows, cols);
        var (mxint2, _) = RoundTrip("mxint2", w, rows, cols);
        Assert.True(10 * Math.Log10(mxint2 / e8) > 3, $"e8 {e8:F4}, mxint2 {mxint2:F4}");
        Assert.True(e8 > 0.0625, $"e8 {e8} below the rate-distortion bound: impossible");
    }

    /// <summary>The residual stages (RVQ): each adds a bit per weight to the stored bytes and cuts the error, E8's 3
    /// and 4 bits at least match NxFP's at the same footprint on Gaussian weights, and none passes the rate-distortion
    /// bound of its code bits.</summary>
    [Fact]
    public void ResidualStagesAddBitsAndCutTheError()
    {
        var random = new Random(13);
        const int rows = 64, cols = 512;
        var w = new float[rows * cols];
        for (int i = 0; i < w.Length; i++) w[i] = (float)Nanoscale.Tests.LowRank.LowRankTestData.Gaussian(random);
        double Db(double mse) => -10 * Math.Log10(mse);
        var mse = new Dictionary<string, double>();
        foreach (var spec in (string[])["e8", "e8:bits=3", "e8:bits=4", "nxfp3", "nxfp4", "mxfp4"])
        {
            mse[spec] = RoundTrip(spec, w, rows, cols).Mse;
            var codec = CodecRegistry.CreateBlockCodec(spec);
            if (spec.StartsWith("e8"))
                Assert.Equal(spec == "e8" ? 2.25 : spec.EndsWith('3') ? 3.25 : 4.25,
                    (codec.BytesPerBlock + codec.ScaleBytesPerBlock) * 8.0 / codec.BlockSize);
        }
        Assert.True(Db(mse["e8:bits=3"]) > Db(mse["e8"]) + 4, $"{mse["e8:bits=3"]} vs {mse["e8"]}");
        Assert.True(Db(mse["e8:bits=4"]) > Db(mse["e8:bits=3"]) + 5, $"{mse["e8:bits=4"]} vs {mse["e8:bits=3"]}");
        Assert.True(Db(mse["e8:bits=3"]) > Db(mse["nxfp3"]) - 0.1, $"e8:bits=3 {mse["e8:bits=3"]}, nxfp3 {mse["nxfp3"]}");
        Assert.True(Db(mse["e8:bits=4"]) > Db(mse["nxfp4"]), $"e8:bits=4 {mse["e8:bits=4"]}, nxfp4 {mse["nxfp4"]}");
        Assert.True(Db(mse["e8:bits=4"]) > Db(mse["mxfp4"]) + 2);
        Assert.True(mse["e8:bits=3"] > Math.Pow(2, -6) && mse["e8:bits=4"] > Math.Pow(2, -8), "below the rate-distortion bound: impossible");
    }

    /// <summary>The stored layout of a residual block, decoded by hand: per vector the first 16-bit index, then the
    /// second index (bits=4) or the sign byte (bits=3, bit i set = coordinate i negative); weight = s·(p + ρ·r).</summary>
    [Theory]
    [InlineData(3)]
    [InlineData(4)]
    public void AResidualBlockDecodesAsItsLayoutSays(int bits)
    {
        var codec = CodecRegistry.CreateBlockCodec($"e8:bits={bits}");
        int vectorBytes = bits == 4 ? 4 : 3;
        Assert.Equal(4 * vectorBytes, codec.BytesPerBlock);
        var blocks = new byte[codec.BytesPerBlock];
        var random = new Random(bits);
        var first = new int[4];
        var second = new int[4];
        for (int v = 0; v < 4; v++)
        {
            first[v] = random.Next(E8Lattice.CodebookSize);
            second[v] = random.Next(bits == 4 ? E8Lattice.CodebookSize : 256);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(blocks.AsSpan(v * vectorBytes), (ushort)first[v]);
            if (bits == 4) System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(blocks.AsSpan(v * vectorBytes + 2), (ushort)second[v]);
            else blocks[v * vectorBytes + 2] = (byte)second[v];
        }
        var tensorData = BitConverter.GetBytes(0.5f);        // the tensor scale
        byte scaleCode = 0x38;                               // UE4M3 1.0
        var decoded = new float[32];
        codec.Dequantize(blocks, [scaleCode], tensorData, 1, 32, new CodecOptions(), decoded);
        double s = 0.5, rho = bits == 4 ? E8Codec.Residual4 : E8Codec.Residual3;
        for (int v = 0; v < 4; v++)
        {
            var p = Point(first[v]);
            var r = bits == 4 ? Point(second[v]) : [.. Enumerable.Range(0, 8).Select(i => (second[v] >> i & 1) != 0 ? -1.0 : 1.0)];
            for (int i = 0; i < 8; i++) Assert.Equal(s * (p[i] + rho * r[i]), decoded[v * 8 + i], 1e-6);
        }
    }

    [Theory]
    [InlineData("e8")]
    [InlineData("e8:bits=3")]
    [InlineData("e8:bits=4")]
    public void ShortBlocksZerosAndNonFiniteValues(string spec)
    {
        float[] w = [.. Enumerable.Range(0, 3 * 40).Select(i => i < 40 ? 0f : (float)Math.Sin(i))];
        var (_, decoded) = RoundTrip(spec, w, 3, 40);
        Assert.All(decoded.Take(40), v => Assert.Equal(0f, v));
        Assert.All(decoded, v => Assert.True(float.IsFinite(v)));
        var codec = CodecRegistry.CreateBlockCodec(spec);
        var bad = new float[32];
        bad[5] = float.NaN;
        Assert.Throws<NonFiniteValueException>(() => codec.Quantize(bad, 1, 32, new byte[4], new CodecOptions(), 0, new byte[codec.BytesPerBlock], new byte[1]));
        Assert.Equal("e8", CodecRegistry.Create("e8:bits=2").Spec);
        Assert.Equal("e8:bits=4", CodecRegistry.Create("e8:bits=4").Spec);
        Assert.Throws<FormatSpecException>(() => CodecRegistry.Create("e8:bits=5"));
    }
}
