using MathNet.Numerics.LinearAlgebra;

namespace Nanoscale.LowRank;

/// <summary>
/// The optional incoherence processing of SPEC §11 (<c>had=1</c>), applied on the **input side** only: an orthogonal
/// n × n matrix V, with <c>W' = W Vᵀ</c> and <c>H' = V H Vᵀ</c>, so <c>‖(Ŵ' − W')H'^{1/2}‖ = ‖(Ŵ − W)H^{1/2}‖</c> and the
/// decomposition of W' is as good for W. Decoding multiplies each decoded row by V (<c>ŵ = ŵ' V</c>), which stays
/// row-local, so the runtime can still decode tiles of rows. (An output-side transform would mix rows.)
/// </summary>
/// <remarks>
/// V is a randomized Hadamard matrix <c>H_n·diag(±1)/√n</c> (Sylvester construction) when n is a power of two, and
/// otherwise a random orthogonal matrix (thin QR of a Gaussian n × n matrix, signs fixed by R's diagonal). Both are
/// regenerated from (n, seed) when the tensor is decoded; only the seed is stored (in the tensor's params).
/// </remarks>
internal static class IncoherenceTransform
{
    /// <summary>The n × n orthogonal V for a seed.</summary>
    public static Matrix<double> Create(int n, int seed)
    {
        var random = new Random(seed);
        if ((n & (n - 1)) == 0)
        {
            var signs = new double[n];
            for (int i = 0; i < n; i++) signs[i] = random.Next(2) == 0 ? -1 : 1;
            double norm = 1 / Math.Sqrt(n);
            // Sylvester: H[i, j] = (−1)^popcount(i & j).
            return Matrix<double>.Build.Dense(n, n, (i, j) => ((System.Numerics.BitOperations.PopCount((uint)(i & j)) & 1) == 0 ? norm : -norm) * signs[j]);
        }
        var gaussian = Matrix<double>.Build.Dense(n, n, (_, _) =>
        {
            double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
            return Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2);
        });
        var qr = gaussian.QR();
        var q = qr.Q;
        for (int j = 0; j < n; j++)
            if (qr.R[j, j] < 0) q.SetColumn(j, -q.Column(j));
        return q;
    }

    /// <summary>H' = V H Vᵀ (the identity stays the identity).</summary>
    public static Hessian Transform(Hessian h, Matrix<double> v) =>
        h.IsIdentity ? h : Hessian.FromMatrix(v * h.Matrix * v.Transpose(), h.Tokens);
}
