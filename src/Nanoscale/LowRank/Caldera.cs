using MathNet.Numerics.LinearAlgebra;
using MathNet.Numerics.LinearAlgebra.Factorization;

namespace Nanoscale.LowRank;

/// <summary>The result of one decomposition <c>W ≈ Q + L·R</c>.</summary>
/// <param name="Q">Backbone, m × n.</param>
/// <param name="LTransposed">Lᵀ (k × m; stored transposed so its blocks run along the long axis m), or null for rank 0.</param>
/// <param name="R">R (k × n), or null for rank 0.</param>
/// <param name="Approximation">Q + L·R as decoded (m × n, row-major).</param>
/// <param name="RelativeError">Activation-aware error of the kept iterate, <c>‖(Ŵ−W)H^{1/2}‖ / ‖W H^{1/2}‖</c>.</param>
/// <param name="BestIteration">1-based outer iteration that was kept.</param>
/// <param name="IterateErrors">Relative activation-aware error of every outer iterate, in order.</param>
/// <param name="KeptErrors">Error of the best iterate so far after each outer iteration (never increases).</param>
internal sealed record CalderaResult(
    QuantizedMatrix Q, QuantizedMatrix? LTransposed, QuantizedMatrix? R, float[] Approximation,
    double RelativeError, int BestIteration, IReadOnlyList<double> IterateErrors, IReadOnlyList<double> KeptErrors);

/// <summary>
/// CALDERA (SPEC §11): minimise <c>‖(Q + L·R − W) H^{1/2}‖_F</c> with Q on one grid and L, R on another, by alternating
/// a Q step (LDLQ of W − L·R) and an LR step (rank-k fit of W − Q), keeping the best iterate.
/// </summary>
/// <remarks>
/// <para><b>LR step</b> on A = W − Q: start from the rank-k SVD of <c>A·H^{1/2} = UΣVᵀ</c> mapped back,
/// <c>L = U_k Σ_k^{1/2}</c>, <c>R = Σ_k^{1/2} V_kᵀ H^{-1/2}</c> (the best rank-k fit in the H-norm); then round Lᵀ to its
/// grid, solve R given the rounded L (<c>R = (LᵀL)⁻¹LᵀA</c>: H drops out because R is free per column), round R by LDLQ;
/// then a few rounds of <c>L = A H Rᵀ (R H Rᵀ)⁻¹</c> (rounded) and R again (rounded). The pair with the lowest
/// activation-aware error of <c>A − L·R</c> is kept. Each solve gets a tiny ridge (1e-10 of the Gram trace) so a factor
/// rounded to an all-zero column does not make it singular.</para>
/// <para><b>SVD</b>: MathNet's full SVD, or for k + 8 well below min(m, n) a randomized range finder (Halko et al.:
/// Gaussian sketch of k + 8 columns, 4 power iterations with re-orthonormalisation) followed by the SVD of the small
/// projected matrix — the top k singular triplets to working accuracy at O(m·n·k) cost.</para>
/// </remarks>
internal static class Caldera
{
    public static CalderaResult Decompose(ReadOnlySpan<float> weights, int rows, int cols, Hessian hessian, CalderaOptions options,
        CancellationToken cancellationToken = default)
    {
        if (weights.Length != (long)rows * cols) throw new ArgumentException($"expected {rows}×{cols} weights, found {weights.Length}", nameof(weights));
        if (hessian.Size != cols) throw new ArgumentException($"the Hessian is {hessian.Size}×{hessian.Size}, the weight has {cols} columns", nameof(hessian));
        int k = options.Rank;
        if (k < 0 || k > Math.Min(rows, cols))
            throw new ArgumentOutOfRangeException(nameof(options), $"rank {k} must be between 0 and min(rows, cols) = {Math.Min(rows, cols)}");
        if (options.Iterations < 1) throw new ArgumentOutOfRangeException(nameof(options), "at least one outer iteration");

        var w = FromRowMajor(weights.ToArray(), rows, cols);
        double reference = hessian.WeightedSquaredNorm(w);
        double Relative(double squared) => reference > 0 ? Math.Sqrt(squared / reference) : Math.Sqrt(squared);

        var lowRank = Matrix<double>.Build.Dense(rows, cols);
        var iterateErrors = new List<double>();
        var keptErrors = new List<double>();
        (QuantizedMatrix Q, QuantizedMatrix? L, QuantizedMatrix? R, Matrix<double> Approx, double Error, int Iteration)? best = null;
        var random = new Random(options.Seed);
        for (int iteration = 1; iteration <= options.Iterations; iteration++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            // Q step: LDLQ of what the low-rank part leaves.
            var q = Ldlq.Quantize(RowMajor(w - lowRank), rows, cols, hessian, options.Q, options.Parallelism, cancellationToken,
                actOrder: options.ActOrder);
            var qMatrix = FromRowMajor(q.Values, rows, cols);
            QuantizedMatrix? l = null, r = null;
            if (k > 0)
            {
                (l, r, lowRank) = LowRankStep(w - qMatrix, hessian, k, options, random, cancellationToken);
            }
            var approximation = qMatrix + lowRank;
            double error = hessian.WeightedSquaredNorm(approximation - w);
            iterateErrors.Add(Relative(error));
            if (best is null || error < best.Value.Error) best = (q, l, r, approximation, error, iteration);
            keptErrors.Add(Relative(best.Value.Error));
            // Without a low-rank part the Q step sees the same input every time; with an exact fit there is nothing left.
            if (k == 0 || error == 0) break;
        }
        var kept = best!.Value;
        return new CalderaResult(kept.Q, kept.L, kept.R, ToFloatRowMajor(kept.Approx), Relative(kept.Error), kept.Iteration,
            iterateErrors, keptErrors);
    }

    /// <summary>The LR step on <paramref name="a"/> = W − Q; returns the kept (Lᵀ, R) and their product.</summary>
    public static (QuantizedMatrix LTransposed, QuantizedMatrix R, Matrix<double> Product) LowRankStep(
        Matrix<double> a, Hessian hessian, int k, CalderaOptions options, Random random, CancellationToken cancellationToken = default)
    {
        int m = a.RowCount, n = a.ColumnCount;
        var (u, s, vt) = TopSingular(hessian.IsIdentity ? a : a * hessian.Sqrt, k, random);
        var rootS = Matrix<double>.Build.DenseOfDiagonalVector(s.Map(Math.Sqrt));
        var l = u * rootS;
        (QuantizedMatrix L, QuantizedMatrix R, Matrix<double> Product, double Error)? best = null;
        var ah = hessian.IsIdentity ? a : a * hessian.Matrix;
        for (int round = 0; round <= options.LowRankRounds; round++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (round > 0)
            {
                // L = A H Rᵀ (R H Rᵀ)⁻¹ with R the last rounded one.
                var rq = FromRowMajor(best!.Value.R.Values, k, n);
                var rh = hessian.IsIdentity ? rq : rq * hessian.Matrix;
                l = SolveRight(ah * rq.Transpose(), rh * rq.Transpose());
            }
            var lq = Ldlq.Quantize(RowMajor(l.Transpose()), k, m, null, options.LowRank, options.Parallelism, cancellationToken);
            var lMatrix = FromRowMajor(lq.Values, k, m).Transpose();
            // R = (LᵀL)⁻¹ Lᵀ A; in round 0 with an unrounded L this is Σ^{1/2} Vᵀ H^{-1/2}, the SVD's own R.
            var r = SolveLeft(lMatrix.TransposeThisAndMultiply(lMatrix), lMatrix.TransposeThisAndMultiply(a));
            var rq2 = Ldlq.Quantize(RowMajor(r), k, n, hessian, options.LowRank, options.Parallelism, cancellationToken);
            var product = lMatrix * FromRowMajor(rq2.Values, k, n);
            double error = hessian.WeightedSquaredNorm(a - product);
            if (best is null || error < best.Value.Error) best = (lq, rq2, product, error);
        }
        return (best!.Value.L, best.Value.R, best.Value.Product);
    }

    /// <summary>Top-k singular triplets: (U_k m×k, σ_k, V_kᵀ k×n).</summary>
    internal static (Matrix<double> U, Vector<double> S, Matrix<double> VT) TopSingular(Matrix<double> x, int k, Random random)
    {
        int m = x.RowCount, n = x.ColumnCount, sketch = k + 8;
        if (2 * sketch >= Math.Min(m, n))
        {
            var svd = x.Svd(computeVectors: true);
            return (svd.U.SubMatrix(0, m, 0, k), svd.S.SubVector(0, k), svd.VT.SubMatrix(0, k, 0, n));
        }
        var omega = Matrix<double>.Build.Dense(n, sketch, (_, _) => Gaussian(random));
        var y = (x * omega).QR(QRMethod.Thin).Q;
        for (int p = 0; p < 4; p++)
        {
            var z = x.TransposeThisAndMultiply(y).QR(QRMethod.Thin).Q;
            y = (x * z).QR(QRMethod.Thin).Q;
        }
        // B = Yᵀ X (sketch × n). With Bᵀ = Q·T (thin QR) and T = U_T Σ V_Tᵀ: B = V_T Σ (Q U_T)ᵀ, so the small SVD is of
        // a sketch × sketch matrix and no n × n factor is ever formed.
        var qr = x.TransposeThisAndMultiply(y).QR(QRMethod.Thin);
        var small = qr.R.Svd(computeVectors: true);
        var u = y * small.VT.Transpose();
        var vt = (qr.Q * small.U).Transpose();
        return (u.SubMatrix(0, m, 0, k), small.S.SubVector(0, k), vt.SubMatrix(0, k, 0, n));
    }

    /// <summary>A standard normal draw (Box–Muller); also the benchmarks' generator of Gaussian test data.</summary>
    internal static double Gaussian(Random random)
    {
        double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
        return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
    }

    /// <summary>X with X·G = B for symmetric positive semi-definite G (k × k), with a tiny ridge.</summary>
    private static Matrix<double> SolveRight(Matrix<double> b, Matrix<double> g) => SolveLeft(g, b.Transpose()).Transpose();

    /// <summary>X with G·X = B for symmetric positive semi-definite G (k × k), with a tiny ridge.</summary>
    private static Matrix<double> SolveLeft(Matrix<double> g, Matrix<double> b)
    {
        double trace = g.Trace();
        if (!(trace > 0)) return Matrix<double>.Build.Dense(g.ColumnCount, b.ColumnCount);
        var ridged = 0.5 * (g + g.Transpose()) + Matrix<double>.Build.DenseIdentity(g.RowCount) * (1e-10 * trace / g.RowCount);
        return ridged.Cholesky().Solve(b);
    }

    internal static double[] RowMajor(Matrix<double> m) => m.ToRowMajorArray();

    internal static Matrix<double> FromRowMajor(float[] values, int rows, int cols) =>
        Matrix<double>.Build.Dense(rows, cols, (r, c) => values[r * cols + c]);

    internal static float[] ToFloatRowMajor(Matrix<double> m)
    {
        var d = m.ToRowMajorArray();
        var f = new float[d.Length];
        for (int i = 0; i < d.Length; i++) f[i] = (float)d[i];
        return f;
    }
}
