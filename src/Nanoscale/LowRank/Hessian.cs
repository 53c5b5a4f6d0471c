using MathNet.Numerics.LinearAlgebra;

namespace Nanoscale.LowRank;

/// <summary>
/// The input second moment of a linear layer, <c>H = XᵀX / tokens</c> (n × n, n = the layer's input features), as
/// CALDERA and LDLQ use it (SPEC §11): normalised by its mean diagonal and damped by <c>1e-2·I</c>, so it is symmetric
/// positive definite and its scale does not depend on the activations' magnitude.
/// </summary>
/// <remarks>The factorisations (Cholesky, symmetric eigendecomposition) come from MathNet.Numerics.</remarks>
internal sealed class Hessian
{
    /// <summary>Damping added to the normalised diagonal (SPEC §11).</summary>
    public const double Damping = 1e-2;

    private Matrix<double>? _sqrt, _inverseSqrt;
    private double[]? _ldlqFactor;

    private float[]? _floats;

    private Hessian(Matrix<double> matrix, long tokens, double scale = 1)
    {
        Matrix = matrix;
        Tokens = tokens;
        Scale = scale;
    }

    /// <summary>The mean diagonal of <c>XᵀX / tokens</c> that <see cref="Matrix"/> was divided by (1 for the identity
    /// and for a given matrix): <c>Scale·tr(Δ H Δᵀ)</c> is the squared output error in the activations' own units, the
    /// number that compares one layer's error with another's (the budget allocator's cost).</summary>
    public double Scale { get; }

    /// <summary>The normalised, damped matrix (n × n, symmetric positive definite).</summary>
    public Matrix<double> Matrix { get; }

    public int Size => Matrix.RowCount;

    /// <summary>Calibration tokens behind it; 0 for the identity.</summary>
    public long Tokens { get; }

    public bool IsIdentity => Tokens == 0;

    /// <summary><c>H = I</c>: no calibration (then LDLQ is round-to-nearest and the error is the plain Frobenius error).</summary>
    public static Hessian Identity(int size) => new(Matrix<double>.Build.DenseIdentity(size), 0);

    /// <summary>
    /// From an accumulated <c>Σ xᵀx</c> over <paramref name="tokens"/> rows: divide by the tokens, normalise by the mean
    /// diagonal, add <see cref="Damping"/>·I. <paramref name="sum"/> is n × n, row-major (symmetrised here).
    /// </summary>
    /// <remarks>Inputs that were all zero on the calibration text (a zero diagonal) say nothing about which weight errors
    /// matter: the Hessian is then the identity (plain weight error), documented in docs/caldera.md.</remarks>
    /// <exception cref="ArgumentException">Wrong length, no tokens, or the diagonal is not finite.</exception>
    public static Hessian FromSum(ReadOnlySpan<double> sum, int size, long tokens)
    {
        if (sum.Length != (long)size * size) throw new ArgumentException($"expected {size}×{size} values, found {sum.Length}", nameof(sum));
        if (tokens <= 0) throw new ArgumentException("a Hessian needs at least one calibration token", nameof(tokens));
        var h = Matrix<double>.Build.Dense(size, size);
        double trace = 0;
        for (int i = 0; i < size; i++) trace += sum[i * size + i];
        double meanDiagonal = trace / tokens / size;
        if (meanDiagonal == 0) return Identity(size);
        if (!(meanDiagonal > 0) || !double.IsFinite(meanDiagonal))
            throw new ArgumentException($"the calibration inputs have mean square {meanDiagonal}; cannot normalise", nameof(sum));
        double factor = 1.0 / (tokens * meanDiagonal);
        for (int i = 0; i < size; i++)
            for (int j = 0; j < size; j++)
                h[i, j] = 0.5 * (sum[i * size + j] + sum[j * size + i]) * factor + (i == j ? Damping : 0);
        return new Hessian(h, tokens, meanDiagonal);
    }

    /// <summary>A Hessian as <see cref="FromSum"/> made it, read back from storage: the normalised, damped matrix, its
    /// tokens and its <see cref="Scale"/>.</summary>
    public static Hessian FromStored(Matrix<double> matrix, long tokens, double scale) =>
        tokens > 0 && scale > 0 && double.IsFinite(scale) ? new(matrix, tokens, scale)
            : throw new ArgumentException($"a stored Hessian needs tokens > 0 and a positive scale, not {tokens} and {scale}");

    /// <summary>Wraps a given symmetric positive definite matrix as it is (tests; H from elsewhere).</summary>
    public static Hessian FromMatrix(Matrix<double> matrix, long tokens = 1) =>
        tokens > 0 ? new(0.5 * (matrix + matrix.Transpose()), tokens) : throw new ArgumentOutOfRangeException(nameof(tokens), "use Identity for H = I");

    /// <summary>As <see cref="FromMatrix"/> for a row-major n × n array, taken over: symmetrised in place (in tiles),
    /// with no copy, which at n = 14336 is 1.6 GB each.</summary>
    internal static Hessian FromRowMajor(double[] values, int n, long tokens)
    {
        if (values.Length != (long)n * n) throw new ArgumentException($"expected {n}×{n} values, found {values.Length}", nameof(values));
        if (tokens <= 0) throw new ArgumentOutOfRangeException(nameof(tokens), "use Identity for H = I");
        const int Tile = 64;
        for (int i0 = 0; i0 < n; i0 += Tile)
            for (int j0 = i0; j0 < n; j0 += Tile)
                for (int i = i0, iEnd = Math.Min(n, i0 + Tile); i < iEnd; i++)
                    for (int j = Math.Max(j0, i + 1), jEnd = Math.Min(n, j0 + Tile); j < jEnd; j++)
                    {
                        long upper = (long)i * n + j, lower = (long)j * n + i;
                        values[upper] = values[lower] = 0.5 * (values[upper] + values[lower]);
                    }
        return new(Matrix<double>.Build.Dense(n, n, values), tokens); // symmetric: row-major is column-major
    }

    /// <summary>H with rows and columns in <paramref name="order"/> (entry [p, q] = H[order[p], order[q]]): the Hessian
    /// of the same layer with its inputs reordered, as act-order rounds them.</summary>
    internal Hessian Permuted(int[] order)
    {
        int n = Size;
        if (order.Length != n) throw new ArgumentException($"an order of {n} columns, not {order.Length}", nameof(order));
        var source = Matrix.AsColumnMajorArray() ?? Matrix.ToColumnMajorArray(); // symmetric: also row-major
        var values = new double[(long)n * n];
        for (int p = 0; p < n; p++)
        {
            long from = (long)order[p] * n, to = (long)p * n;
            for (int q = 0; q < n; q++) values[to + q] = source[from + order[q]];
        }
        return new(Matrix<double>.Build.Dense(n, n, values), Tokens, Scale);
    }

    /// <summary><c>H^{1/2}</c> (symmetric, from the eigendecomposition).</summary>
    public Matrix<double> Sqrt => _sqrt ??= Power(0.5);

    /// <summary><c>H^{-1/2}</c>.</summary>
    public Matrix<double> InverseSqrt => _inverseSqrt ??= Power(-0.5);

    /// <summary>
    /// The upper Cholesky factor U of <c>H⁻¹ = UᵀU</c>, n × n row-major (zeros below the diagonal). GPTQ's form of
    /// LDLQ: rounding column j and subtracting <c>(w_j − q_j)/U[j,j] · U[j, j+1..]</c> from the later columns is LDLQ
    /// with H's LDL factor (QuIP, Thm. 6). Computed once, on OpenBLAS when the system has it (<see cref="DenseAlgebra"/>).
    /// </summary>
    public double[] LdlqFactor => _ldlqFactor ??= ComputeLdlqFactor(native: true);

    /// <summary><c>tr(Δ H Δᵀ)</c> for an m × n Δ: the squared activation-aware error ‖Δ H^{1/2}‖²_F.</summary>
    /// <remarks>Δ·H in chunks of 256 rows through <see cref="DenseAlgebra.Gemm"/> (OpenBLAS when present), each chunk's
    /// product dotted with its rows: at 4096 × 14336 the product is what costs, and MathNet's managed one took minutes.</remarks>
    public double WeightedSquaredNorm(Matrix<double> delta, bool native = true)
    {
        if (delta.ColumnCount != Size) throw new ArgumentException($"expected {Size} columns, found {delta.ColumnCount}", nameof(delta));
        if (IsIdentity) return SquaredNorm(delta);
        return WeightedSquaredNorm(delta.ToRowMajorArray(), delta.RowCount, native);
    }

    /// <summary>As <see cref="WeightedSquaredNorm(Matrix{double}, bool)"/> for a row-major rows × <see cref="Size"/> Δ
    /// in doubles (no matrix built around it).</summary>
    internal double WeightedSquaredNorm(double[] d, int rows, bool native = true)
    {
        int n = Size;
        if (d.Length != (long)rows * n) throw new ArgumentException($"expected {rows}×{n} values, found {d.Length}", nameof(d));
        if (IsIdentity) return System.Numerics.Tensors.TensorPrimitives.Dot(d, d);
        var h = Matrix.AsColumnMajorArray() ?? Matrix.ToColumnMajorArray(); // symmetric: also row-major
        const int Chunk = 256;
        var product = new double[(long)Math.Min(rows, Chunk) * n];
        double total = 0;
        for (int r0 = 0; r0 < rows; r0 += Chunk)
        {
            int count = Math.Min(Chunk, rows - r0);
            DenseAlgebra.Gemm(count, n, n, 1, d, (long)r0 * n, n, h, 0, n, 0, product, 0, n, Tensors.Parallelism.AllCores, native);
            total += System.Numerics.Tensors.TensorPrimitives.Dot(product.AsSpan(0, count * n), d.AsSpan(r0 * n, count * n));
        }
        return total;
    }

    /// <summary>
    /// <c>tr(Δ H Δᵀ)</c> for a row-major <c>rows × Size</c> Δ in floats, rows over the threads of
    /// <paramref name="parallelism"/>, each row's <c>δ H δᵀ</c> as <c>Size</c> dot products (SIMD, float products
    /// summed in double per row). The same number as <see cref="WeightedSquaredNorm(Matrix{double}, bool)"/> to float rounding,
    /// without a double copy of Δ: what measures a candidate format at real widths.
    /// </summary>
    public double WeightedSquaredNorm(ReadOnlyMemory<float> delta, int rows, Tensors.Parallelism parallelism)
    {
        int n = Size;
        if (delta.Length != (long)rows * n) throw new ArgumentException($"expected {rows}×{n} values, found {delta.Length}", nameof(delta));
        if (IsIdentity)
        {
            double sum = 0;
            foreach (float v in delta.Span) sum += (double)v * v;
            return sum;
        }
        var h = _floats ??= FloatCopy();
        var perRow = new double[rows];
        parallelism.For(rows, row =>
        {
            var r = delta.Span.Slice(row * n, n);
            double total = 0;
            for (int i = 0; i < n; i++)
                if (r[i] != 0) total += r[i] * (double)System.Numerics.Tensors.TensorPrimitives.Dot(r, h.AsSpan(i * n, n));
            perRow[row] = total;
        });
        return perRow.Sum();
    }

    /// <summary>Forgets the float copy <see cref="WeightedSquaredNorm(ReadOnlyMemory{float}, int, Tensors.Parallelism)"/>
    /// keeps (n² floats: 256 MB at n = 8192), once a caller is done with this Hessian.</summary>
    public void ReleaseFloatCopy() => _floats = null;

    private float[] FloatCopy()
    {
        // Symmetric, so the column-major storage MathNet keeps is also row-major: no double copy.
        var values = Matrix.AsColumnMajorArray() ?? Matrix.ToColumnMajorArray();
        var result = new float[values.Length];
        for (int i = 0; i < values.Length; i++) result[i] = (float)values[i];
        return result;
    }

    /// <summary>Σ of squares of the entries (MathNet's FrobeniusNorm is far slower on dense matrices).</summary>
    public static double SquaredNorm(Matrix<double> m)
    {
        double[] values = m.AsColumnMajorArray() ?? m.ToColumnMajorArray();
        double total = 0;
        foreach (double v in values) total += v * v;
        return total;
    }

    private Matrix<double> Power(double exponent)
    {
        if (IsIdentity) return Matrix<double>.Build.DenseIdentity(Size);
        var evd = Matrix.Evd(Symmetricity.Symmetric);
        var values = evd.EigenValues.Map(c => Math.Pow(Math.Max(c.Real, 1e-12), exponent));
        var v = evd.EigenVectors;
        return v * Matrix<double>.Build.DenseOfDiagonalVector(values) * v.Transpose();
    }

    /// <summary>U of <see cref="LdlqFactor"/>, on OpenBLAS (<paramref name="native"/>, when present) or its managed
    /// twin; not cached (tests compare the two).</summary>
    internal double[] ComputeLdlqFactor(bool native)
    {
        int n = Size;
        if (IsIdentity) return Matrix<double>.Build.DenseIdentity(n).ToColumnMajorArray();
        var copy = (Matrix.AsColumnMajorArray() ?? Matrix.ToColumnMajorArray()).ToArray();
        return DenseAlgebra.UpperFactorOfInverse(copy, n, Tensors.Parallelism.AllCores, native);
    }
}
