using MathNet.Numerics.LinearAlgebra;
using Nanoscale.LowRank;
using Nanoscale.Codecs;
using static Nanoscale.Tests.LowRank.LowRankTestData;

namespace Nanoscale.Tests.LowRank;

public class CalderaTests
{
    private static CalderaOptions Options(int rank, string q, string lr, int iterations = 6) => new()
    {
        Rank = rank, Q = CalderaTensorCodec.ParseGrid(q), LowRank = CalderaTensorCodec.ParseGrid(lr), Iterations = iterations,
    };

    [Theory]
    [InlineData("mxint2", "mxfp4", 4)]
    [InlineData("int2", "int4", 8)]
    [InlineData("mxint3", "mxint8", 8)]
    public void KeptActivationAwareErrorNeverIncreases(string q, string lr, int rank)
    {
        const int rows = 40, cols = 64;
        var w = Weights(rows, cols, 21);
        var h = CorrelatedHessian(cols, 22);
        var result = Caldera.Decompose(w, rows, cols, h, Options(rank, q, lr, 8));
        Assert.Equal(result.IterateErrors.Count, result.KeptErrors.Count);
        for (int i = 1; i < result.KeptErrors.Count; i++) Assert.True(result.KeptErrors[i] <= result.KeptErrors[i - 1]);
        Assert.Equal(result.IterateErrors.Min(), result.RelativeError, 12);
        Assert.Equal(result.IterateErrors[result.BestIteration - 1], result.RelativeError, 12);
        // And the reported error is the error of what is returned.
        double reference = h.WeightedSquaredNorm(Matrix<double>.Build.Dense(rows, cols, (r, c) => w[r * cols + c]));
        Assert.Equal(result.RelativeError, Math.Sqrt(WeightedError(result.Approximation, w, rows, cols, h) / reference), 4);
    }

    [Fact]
    public void LowRankPartLowersTheErrorOfLdlqAlone()
    {
        const int rows = 40, cols = 64;
        var w = Weights(rows, cols, 31);
        var h = CorrelatedHessian(cols, 32);
        double ldlqOnly = Caldera.Decompose(w, rows, cols, h, Options(0, "mxint2", "mxfp4")).RelativeError;
        double withRank = Caldera.Decompose(w, rows, cols, h, Options(8, "mxint2", "mxint8")).RelativeError;
        Assert.True(withRank < 0.9 * ldlqOnly, $"rank 8: {withRank:g4}, LDLQ only: {ldlqOnly:g4}");
    }

    [Fact]
    public void RankKWeightIsRecoveredExactlyWhenQIsFullPrecision()
    {
        const int rows = 30, cols = 50, k = 4;
        var random = new Random(5);
        var l = Matrix<double>.Build.Dense(rows, k, (_, _) => Gaussian(random));
        var r = Matrix<double>.Build.Dense(k, cols, (_, _) => Gaussian(random));
        var w = (l * r).ToRowMajorArray().Select(v => (float)v).ToArray();
        var result = Caldera.Decompose(w, rows, cols, CorrelatedHessian(cols, 6), Options(k, "f32", "f32"));
        Assert.True(result.RelativeError < 1e-6, $"relative error {result.RelativeError}");
        for (int i = 0; i < w.Length; i++) Assert.Equal(w[i], result.Approximation[i], 4);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LowRankStepRecoversARankKMatrixWithFullPrecisionFactors(bool large)
    {
        // The SVD start in the H-norm, mapped back through H^{-1/2}, is exact for a rank-k A (randomized SVD when large).
        int rows = large ? 120 : 30, cols = large ? 140 : 50, k = 5;
        var random = new Random(8);
        var a = Matrix<double>.Build.Dense(rows, k, (_, _) => Gaussian(random)) * Matrix<double>.Build.Dense(k, cols, (_, _) => Gaussian(random));
        var h = CorrelatedHessian(cols, 9);
        var (lt, rq, product) = Caldera.LowRankStep(a, h, k, Options(k, "f32", "f32"), new Random(1));
        Assert.True((product - a).FrobeniusNorm() < 1e-6 * a.FrobeniusNorm());
        Assert.Equal(k * rows, lt.Values.Length);
        Assert.Equal(k * cols, rq.Values.Length);
    }

    [Fact]
    public void RankZeroIsLdlqAlone()
    {
        const int rows = 16, cols = 64;
        var w = Weights(rows, cols, 41);
        var h = CorrelatedHessian(cols, 42);
        var result = Caldera.Decompose(w, rows, cols, h, Options(0, "mxint3", "mxfp4"));
        Assert.Null(result.LTransposed);
        Assert.Equal(Ldlq.Quantize(ToDouble(w), rows, cols, h, CalderaTensorCodec.ParseGrid("mxint3")).Values, result.Q.Values);
        Assert.Single(result.IterateErrors);
    }

    [Fact]
    public void RankAboveTheMatrixIsRefused()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            Caldera.Decompose(Weights(8, 16, 1), 8, 16, Hessian.Identity(16), Options(9, "mxint2", "mxfp4")));
        Assert.Contains("min(rows, cols) = 8", e.Message);
    }

    /// <summary>Bad calibration (issue 16): a Hessian from fewer tokens than inputs is singular before its damping, and
    /// one from inputs that were all zero has no scale at all; both give finite weights, never NaN.</summary>
    [Fact]
    public void SingularAndZeroHessiansGiveFiniteWeights()
    {
        const int rows = 16, cols = 64;
        var w = Weights(rows, cols, 11);
        var random = new Random(5);
        var x = MathNet.Numerics.LinearAlgebra.Matrix<double>.Build.Dense(3, cols, (_, _) => Gaussian(random)); // 3 tokens: rank 3
        var singular = Hessian.FromSum(x.TransposeThisAndMultiply(x).ToRowMajorArray(), cols, 3);
        var zero = Hessian.FromSum(new double[cols * cols], cols, 3);
        Assert.Equal(Hessian.Identity(cols).Matrix, zero.Matrix);
        foreach (var h in new[] { singular, zero })
        {
            var result = Caldera.Decompose(w, rows, cols, h, Options(4, "mxint2", "mxint4"));
            Assert.All(result.Approximation, v => Assert.True(float.IsFinite(v)));
            Assert.True(double.IsFinite(result.RelativeError) && result.RelativeError < 1, $"relative error {result.RelativeError}");
        }
    }
}
