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

    [Fact]
    public void ShortBlocksZerosAndNonFiniteValues()
    {
        float[] w = [.. Enumerable.Range(0, 3 * 40).Select(i => i < 40 ? 0f : (float)Math.Sin(i))];
        var (_, decoded) = RoundTrip("e8", w, 3, 40);
        Assert.All(decoded.Take(40), v => Assert.Equal(0f, v));
        Assert.All(decoded, v => Assert.True(float.IsFinite(v)));
        var codec = CodecRegistry.CreateBlockCodec("e8");
        var bad = new float[32];
        bad[5] = float.NaN;
        Assert.Throws<NonFiniteValueException>(() => codec.Quantize(bad, 1, 32, new byte[4], new CodecOptions(), 0, new byte[8], new byte[1]));
        Assert.Equal("e8", CodecRegistry.Create("e8:bits=2").Spec);
        Assert.Throws<FormatSpecException>(() => CodecRegistry.Create("e8:bits=3"));
    }
}
