using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tests.Support;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.Pipeline;

public class TensorStatisticsTests
{
    private static TensorStatistics StatsOf(DType dtype, float[] values, int threads = 0)
    {
        using var dir = new TempDir();
        var path = dir.File("t.safetensors");
        var bytes = new byte[values.Length * dtype.ElementSize()];
        TensorData.FromFloat(values, dtype, bytes);
        new SafetensorsWriter(path).Add("t", dtype, [values.Length], bytes).Commit();
        using var file = SafetensorsFile.Open(path);
        using var view = file.Map(file.Tensors[0]);
        return TensorStatistics.Compute(view, new Parallelism(threads));
    }

    [Fact]
    public void SmallTensorHasExactMoments()
    {
        var s = StatsOf(DType.F32, [1, 2, 3, 4]);
        Assert.Equal(4, s.AbsMax);
        Assert.Equal(2.5, s.Mean, 12);
        Assert.Equal(Math.Sqrt(1.25), s.Std, 12);
        Assert.Equal(2.5625 / (1.25 * 1.25), s.Kurtosis, 12);
        Assert.Equal(1.5, s.ExponentEntropyBits!.Value, 12); // exponents 127, 128, 128, 129
        Assert.Equal(0, s.FractionBeyond6Sigma);
    }

    [Fact]
    public void ChunkedParallelPassAgreesWithNaiveComputation()
    {
        // Three chunks and a bit, with a planted outlier, a NaN and an Inf.
        var rng = new Random(7);
        var values = new float[3 * TensorStatistics.ChunkElements + 12345];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() * 2 - 1) * 0.02f + 0.001f;
        values[17] = 5f;
        values[2_000_000] = float.NaN;
        values[3_000_000] = float.PositiveInfinity;
        var finite = values.Where(float.IsFinite).Select(v => (double)v).ToArray();
        double mean = finite.Average(), variance = finite.Sum(v => (v - mean) * (v - mean)) / finite.Length;
        double kurtosis = finite.Sum(v => Math.Pow(v - mean, 4)) / finite.Length / (variance * variance);

        foreach (var threads in new[] { 1, 2 })
        {
            var s = StatsOf(DType.F32, values, threads);
            Assert.Equal(2, s.NonFinite);
            Assert.Equal(values.Length, s.Count); // all elements; moments use the finite ones
            Assert.Equal(5, s.AbsMax);
            Assert.Equal(mean, s.Mean, 10);
            Assert.Equal(Math.Sqrt(variance), s.Std, 10);
            Assert.Equal(kurtosis, s.Kurtosis, 6);
            Assert.Equal(1.0 / finite.Length, s.FractionBeyond6Sigma, 12);
        }
    }

    [Fact]
    public void ExponentEntropyReadsTheStoredField()
    {
        // BF16 and F16 store different exponent fields for the same values; 0.5 and 2 give two equiprobable exponents.
        Assert.Equal(1.0, StatsOf(DType.BF16, [0.5f, 2f, 0.5f, 2f]).ExponentEntropyBits!.Value, 12);
        Assert.Equal(0.0, StatsOf(DType.F16, [3f, 3f, 2f]).ExponentEntropyBits!.Value, 12);
    }

    [Fact]
    public void RealGpt2WeightsAreHeavyTailedWithLowExponentEntropy()
    {
        using var file = SafetensorsFile.Open(SharedData.Gpt2Attn);
        using var view = file.Map(file.Find("h.0.attn.q_proj.weight")!);
        var s = TensorStatistics.Compute(view);
        Assert.True(s.Kurtosis > 3, $"kurtosis {s.Kurtosis}");
        Assert.InRange(s.ExponentEntropyBits!.Value, 2.0, 3.5); // SPEC §9: about 2.6–2.8 bits in real models
    }
}
