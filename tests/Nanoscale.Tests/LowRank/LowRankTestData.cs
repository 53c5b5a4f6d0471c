using MathNet.Numerics.LinearAlgebra;
using Nanoscale.LowRank;

namespace Nanoscale.Tests.LowRank;

/// <summary>Seeded random matrices and Hessians with strongly correlated inputs (where LDLQ has something to exploit).</summary>
internal static class LowRankTestData
{
    public static double Gaussian(Random random)
    {
        double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    public static float[] Weights(int rows, int cols, int seed, double scale = 0.05)
    {
        var random = new Random(seed);
        var w = new float[rows * cols];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(scale * Gaussian(random));
        return w;
    }

    /// <summary>H from tokens X = Z·M (Z Gaussian, M a random mixing with a decaying spectrum), normalised and damped.</summary>
    public static Hessian CorrelatedHessian(int n, int seed, int tokens = 512)
    {
        var random = new Random(seed);
        var mix = Matrix<double>.Build.Dense(n, n, (i, j) => Gaussian(random) / (1 + 0.3 * j));
        var z = Matrix<double>.Build.Dense(tokens, n, (_, j) => Gaussian(random) * (j < n / 4 ? 4 : 1));
        var x = z * mix;
        var sum = x.TransposeThisAndMultiply(x).ToRowMajorArray();
        return Hessian.FromSum(sum, n, tokens);
    }

    public static double[] ToDouble(float[] values) => values.Select(v => (double)v).ToArray();

    /// <summary>tr(Δ H Δᵀ) with Δ = a − b.</summary>
    public static double WeightedError(float[] a, float[] b, int rows, int cols, Hessian h)
    {
        var d = Matrix<double>.Build.Dense(rows, cols, (r, c) => (double)a[r * cols + c] - b[r * cols + c]);
        return h.WeightedSquaredNorm(d);
    }
}
