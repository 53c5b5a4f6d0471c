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

    /// <summary>The value of a tensor's <c>transform</c> parameter when <see cref="FastIncoherence"/> made it; a tensor without
    /// the parameter was made with the dense V of <see cref="Create"/> (and is decoded with it).</summary>
    public const string FastKind = "fast-hadamard";
}

/// <summary>
/// The randomized Hadamard transform <c>V = H_n·diag(s)/√n</c> applied in O(n log n) (<see cref="FastHadamard"/>) for
/// the widths it supports, n = m·2^k with m ∈ {1, 12, 20, 28}; the signs s come from the seed exactly as
/// <see cref="IncoherenceTransform.Create"/> draws them, so for a power of two it is the same V. Encoding maps a weight
/// row w to <c>w Vᵀ</c>, decoding a row back with <c>ŵ V</c>; both are n·(log n + m) additions per row instead of n².
/// </summary>
internal sealed class FastIncoherence
{
    private readonly float[] _signs;
    private readonly float _scale;

    public FastIncoherence(int n, int seed)
    {
        if (!FastHadamard.Supports(n)) throw new ArgumentException($"no fast Hadamard transform of width {n}", nameof(n));
        var random = new Random(seed);
        _signs = new float[n];
        for (int i = 0; i < n; i++) _signs[i] = random.Next(2) == 0 ? -1 : 1;
        _scale = (float)(1 / Math.Sqrt(n));
        Width = n;
    }

    public int Width { get; }

    /// <summary>row ← row·Vᵀ = H (s ∘ row) / √n. <paramref name="scratch"/>: at least <see cref="Width"/> floats.</summary>
    public void Encode(Span<float> row, Span<float> scratch)
    {
        System.Numerics.Tensors.TensorPrimitives.Multiply(row, _signs, row);
        FastHadamard.Multiply(row, transpose: false, scratch);
        System.Numerics.Tensors.TensorPrimitives.Multiply(row, _scale, row);
    }

    /// <summary>row ← row·V = s ∘ (Hᵀ row) / √n.</summary>
    public void Decode(Span<float> row, Span<float> scratch)
    {
        FastHadamard.Multiply(row, transpose: true, scratch);
        System.Numerics.Tensors.TensorPrimitives.Multiply(row, _signs, row);
        System.Numerics.Tensors.TensorPrimitives.Multiply(row, _scale, row);
    }

    /// <summary>Encodes every row of a row-major rows × <see cref="Width"/> matrix, rows over the threads.</summary>
    public void EncodeRows(float[] matrix, int rows, Tensors.Parallelism parallelism) =>
        parallelism.ForEach(rows, () => new float[Width], (r, scratch) => Encode(matrix.AsSpan(r * Width, Width), scratch));

    /// <summary>H' = V H Vᵀ: the rows of H encoded (H Vᵀ), then the rows of its transpose (V H Vᵀ, symmetric).</summary>
    public Hessian Transform(Hessian h, Tensors.Parallelism parallelism)
    {
        if (h.IsIdentity) return h;
        int n = Width;
        var m = new float[(long)n * n];
        var source = h.Matrix.AsColumnMajorArray() ?? h.Matrix.ToColumnMajorArray(); // symmetric: also row-major
        for (long i = 0; i < m.Length; i++) m[i] = (float)source[i];
        EncodeRows(m, n, parallelism);
        var t = new float[m.Length];
        // Transposed in 64 × 64 tiles (element by element it strides the whole matrix: 20 s at n = 14336).
        const int Tile = 64;
        int tiles = (n + Tile - 1) / Tile;
        parallelism.For(tiles, ti =>
        {
            for (int j0 = 0; j0 < n; j0 += Tile)
                for (int i = ti * Tile, iEnd = Math.Min(n, i + Tile); i < iEnd; i++)
                    for (int j = j0, jEnd = Math.Min(n, j0 + Tile); j < jEnd; j++) t[(long)j * n + i] = m[(long)i * n + j];
        });
        m = null;
        EncodeRows(t, n, parallelism);
        var values = new double[t.Length];
        for (long i = 0; i < t.Length; i++) values[i] = t[i];
        return Hessian.FromRowMajor(values, n, h.Tokens);
    }
}
