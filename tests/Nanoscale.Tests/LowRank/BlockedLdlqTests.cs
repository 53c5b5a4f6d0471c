using MathNet.Numerics.LinearAlgebra;
using Nanoscale.Codecs;
using Nanoscale.LowRank;
using Nanoscale.Tensors;
using static Nanoscale.Tests.LowRank.LowRankTestData;

namespace Nanoscale.Tests.LowRank;

/// <summary>
/// LDLQ's blocked form (GPTQ's lazy batch update through one matrix product per block) against its reference twin,
/// the column-by-column update written out plainly here; and the dense products and factorisation on OpenBLAS
/// against their managed twins.
/// </summary>
public class BlockedLdlqTests
{
    /// <summary>The plain algorithm: after each column, every later column of the row gets its share of the error.</summary>
    /// <remarks>With an <paramref name="order"/> (act-order) the same, over the columns in that order, with H's rows
    /// and columns permuted alike: position p holds column order[p].</remarks>
    private static QuantizedMatrix ReferenceLdlq(double[] a, int rows, int cols, Hessian h, QuantGrid grid, int[]? order = null)
    {
        var quantizer = grid.Begin(rows, cols, a.Select(v => (float)v).ToArray());
        order ??= [.. Enumerable.Range(0, cols)];
        var u = h.Permuted(order).ComputeLdlqFactor(native: false);
        var values = new float[a.Length];
        int group = Math.Max(1, quantizer.GroupSize);
        for (int row = 0; row < rows; row++)
        {
            var natural = a.AsSpan(row * cols, cols).ToArray();
            var w = order.Select(c => natural[c]).ToArray();
            for (int j = 0; j < cols; j++)
            {
                int column = order[j];
                if (group >= cols ? j == 0 : column % group == 0)
                {
                    int length = Math.Min(group, cols - column);
                    // The group's columns, in natural order, as they are now (a whole row at the start).
                    var current = Enumerable.Range(column, length).Select(c => (float)w[Array.IndexOf(order, c)]).ToArray();
                    quantizer.BeginGroup(row, group >= cols ? 0 : column, group >= cols ? natural.Select(v => (float)v).ToArray() : current);
                }
                float q = quantizer.Round(row, column, w[j]);
                values[row * cols + column] = q;
                double e = (w[j] - q) / u[j * cols + j];
                for (int t = j + 1; t < cols; t++) w[t] -= e * u[j * cols + t];
            }
        }
        return new QuantizedMatrix(quantizer, values);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ActOrderEqualsTheColumnByColumnUpdateInThatOrder(string spec, int rows, int cols)
    {
        var grid = spec == "wide200" ? new WideGroupGrid(200) : CalderaTensorCodec.ParseGrid(spec);
        var w = ToDouble(Weights(rows, cols, 12));
        // The test Hessian's strong inputs are its first quarter; reversed, they are its last, so act-order moves them.
        var h = CorrelatedHessian(cols, 6).Permuted([.. Enumerable.Range(0, cols).Reverse()]);
        int group = Math.Max(1, grid.Begin(rows, cols, new float[rows * cols]).GroupSize);
        var order = Ldlq.ActOrder(h, cols, group);
        // A permutation of whole groups (single columns for casts and per-row grids), by descending diagonal energy.
        Assert.Equal(Enumerable.Range(0, cols), order.Order());
        Assert.NotEqual(Enumerable.Range(0, cols), order);
        if (group < cols)
            for (int p = 0; p < cols; p++)
                if (order[p] % group != 0) Assert.Equal(order[p - 1] + 1, order[p]);
        var expected = ReferenceLdlq(w, rows, cols, h, grid, order);
        var actual = Ldlq.Quantize(w, rows, cols, h, grid, Parallelism.AllCores, actOrder: true);
        int differ = expected.Values.Zip(actual.Values).Count(p => p.First != p.Second);
        Assert.True(differ <= expected.Values.Length / 500, $"{spec}: {differ} of {expected.Values.Length} values differ");
        var natural = Ldlq.Quantize(w, rows, cols, h, grid, Parallelism.AllCores);
        Assert.NotEqual(natural.Values, actual.Values);
    }

    public static TheoryData<string, int, int> Cases => new()
    {
        { "mxint3", 24, 300 },   // blocks of 128, a short last block, groups of 32
        { "mxfp4", 16, 256 },
        { "nvfp4", 12, 200 },    // groups of 16
        { "int3", 10, 290 },     // one scale per row: the group spans every block
        { "bf16", 8, 140 },      // a cast: groups of 1
        { "wide200", 9, 450 },   // a group of 200 starts inside a block and runs past it
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void TheBlockedUpdateEqualsTheColumnByColumnOne(string spec, int rows, int cols)
    {
        var grid = spec == "wide200" ? new WideGroupGrid(200) : CalderaTensorCodec.ParseGrid(spec);
        var w = ToDouble(Weights(rows, cols, 11));
        var h = CorrelatedHessian(cols, 5);
        var expected = ReferenceLdlq(w, rows, cols, h, grid);
        foreach (bool native in (bool[])[true, false])
        {
            var actual = Ldlq.Quantize(w, rows, cols, h, grid, Parallelism.AllCores, native: native);
            // The same updates summed in another order: equal values except where a value sits within rounding of a
            // decision boundary (none in these cases; allow 0.2% so a platform's BLAS order cannot fail it by chance).
            int differ = expected.Values.Zip(actual.Values).Count(p => p.First != p.Second);
            Assert.True(differ <= expected.Values.Length / 500, $"{spec} native={native}: {differ} of {expected.Values.Length} values differ");
            Assert.Equal(WeightedError(expected.Values, w.Select(v => (float)v).ToArray(), rows, cols, h),
                WeightedError(actual.Values, w.Select(v => (float)v).ToArray(), rows, cols, h), 1e-3);
            if (differ == 0)
                foreach (var (x, y) in expected.Quantizer.Arrays().Zip(actual.Quantizer.Arrays())) Assert.Equal(x.Data, y.Data);
        }
    }

    /// <summary>
    /// Block LDLQ for a vector grid (E8) written out as QuIP# states it: each vector of 8 columns is rounded jointly
    /// from its current values, then its error reaches the later columns through the optimal block update
    /// <c>E·U_{B,later}</c> with <c>E·U_BB = W_B − Q_B</c> solved explicitly (MathNet); the library instead goes on column
    /// by column with the point fixed, which must be the same arithmetic.
    /// </summary>
    [Theory]
    [InlineData("e8", 12, 256, false)]
    [InlineData("e8", 10, 200, false)]        // a short last block of 8 columns
    [InlineData("e8", 12, 256, true)]         // act-order moves whole blocks of 32
    [InlineData("e8:bits=3", 10, 200, false)] // residual stages: the vector's point is both stages' sum
    [InlineData("e8:bits=4", 12, 256, true)]
    public void VectorLdlqEqualsTheJointBlockUpdate(string spec, int rows, int cols, bool actOrder)
    {
        var grid = CalderaTensorCodec.ParseGrid(spec);
        var w = ToDouble(Weights(rows, cols, 13));
        var h = CorrelatedHessian(cols, 7);
        if (actOrder) h = h.Permuted([.. Enumerable.Range(0, cols).Reverse()]);
        var order = actOrder ? Ldlq.ActOrder(h, cols, 32) : [.. Enumerable.Range(0, cols)];
        var u = h.Permuted(order).ComputeLdlqFactor(native: false);
        var quantizer = grid.Begin(rows, cols, w.Select(v => (float)v).ToArray());
        Assert.Equal(8, quantizer.VectorSize);
        var expected = new float[w.Length];
        for (int row = 0; row < rows; row++)
        {
            var natural = w.AsSpan(row * cols, cols).ToArray();
            var x = order.Select(c => natural[c]).ToArray(); // position space
            for (int p = 0; p < cols; p += 8)
            {
                int column = order[p];
                if (column % 32 == 0)
                    quantizer.BeginGroup(row, column, Enumerable.Range(p, Math.Min(32, cols - column)).Select(t => (float)x[t]).ToArray());
                int n = Math.Min(8, cols - column);
                quantizer.BeginVector(row, column, x.AsSpan(p, n).ToArray().Select(v => (float)v).ToArray());
                var delta = Vector<double>.Build.Dense(n);
                for (int k = 0; k < n; k++)
                {
                    float q = quantizer.Round(row, column + k, double.NaN);
                    expected[row * cols + column + k] = q;
                    delta[k] = x[p + k] - q;
                }
                var ubb = Matrix<double>.Build.Dense(n, n, (i, j) => u[(p + i) * cols + p + j]);
                var e = ubb.Transpose().Solve(delta); // E·U_BB = Δ  ⇔  U_BBᵀ·Eᵀ = Δᵀ
                for (int t = p + n; t < cols; t++)
                    for (int k = 0; k < n; k++) x[t] -= e[k] * u[(p + k) * cols + t];
            }
        }
        var actual = Ldlq.Quantize(w, rows, cols, h, grid, Parallelism.AllCores, actOrder: actOrder);
        int differ = expected.Zip(actual.Values).Count(v => v.First != v.Second);
        Assert.True(differ <= expected.Length / 500, $"{differ} of {expected.Length} values differ");
        var nearest = Ldlq.Quantize(w, rows, cols, null, grid);
        var original = w.Select(v => (float)v).ToArray();
        Assert.True(WeightedError(actual.Values, original, rows, cols, h) < 0.9 * WeightedError(nearest.Values, original, rows, cols, h));
    }

    [Fact]
    public void TheGemmOnOpenBlasEqualsItsManagedTwin()
    {
        if (Environment.GetEnvironmentVariable("CI") == "true")
            Assert.True(DenseAlgebra.NativeAvailable, ".ci/run installs libopenblas0-pthread; LDLQ at real widths needs it");
        var random = new Random(3);
        int m = 37, n = 530, k = 129, lda = 140, ldb = 600, ldc = 610;
        var a = Enumerable.Range(0, 5 + m * lda).Select(_ => random.NextDouble() - 0.5).ToArray();
        var b = Enumerable.Range(0, 7 + k * ldb).Select(_ => random.NextDouble() - 0.5).ToArray();
        var c0 = Enumerable.Range(0, 3 + m * ldc).Select(_ => random.NextDouble() - 0.5).ToArray();
        var native = c0.ToArray();
        var managed = c0.ToArray();
        DenseAlgebra.Gemm(m, n, k, -1, a, 5, lda, b, 7, ldb, 1, native, 3, ldc, Parallelism.AllCores);
        DenseAlgebra.GemmManaged(m, n, k, -1, a, 5, lda, b, 7, ldb, 1, managed, 3, ldc, Parallelism.AllCores);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double expected = c0[3 + i * ldc + j];
                for (int t = 0; t < k; t++) expected -= a[5 + i * lda + t] * b[7 + t * ldb + j];
                Assert.Equal(expected, native[3 + i * ldc + j], 1e-12);
                Assert.Equal(expected, managed[3 + i * ldc + j], 1e-12);
            }
        // Outside the m × n window nothing is written.
        for (int i = 0; i < c0.Length; i++)
        {
            int r = (i - 3) / ldc, col = (i - 3) % ldc;
            if (i < 3 || r >= m || col >= n) Assert.Equal(c0[i], native[i]);
        }
    }

    [Fact]
    public void TheInverseFactorOnOpenBlasEqualsItsManagedTwin()
    {
        const int n = 150;
        var h = CorrelatedHessian(n, 8);
        var native = h.ComputeLdlqFactor(native: true);
        var managed = h.ComputeLdlqFactor(native: false);
        for (int i = 0; i < native.Length; i++) Assert.Equal(managed[i], native[i], 1e-9 * Math.Max(1, Math.Abs(managed[i])));
        // UᵀU = H⁻¹: (UᵀU)·H = I, and U is upper triangular.
        var u = Matrix<double>.Build.Dense(n, n, (i, j) => native[i * n + j]);
        var product = u.TransposeThisAndMultiply(u) * h.Matrix;
        Assert.True((product - Matrix<double>.Build.DenseIdentity(n)).InfinityNorm() < 1e-8);
        for (int i = 1; i < n; i++)
            for (int j = 0; j < i; j++) Assert.Equal(0, native[i * n + j]);
    }

    [Fact]
    public void ANonPositiveDefiniteMatrixIsANamedError()
    {
        var h = new double[] { 1, 2, 2, 1 }; // eigenvalues 3 and −1
        var e = Assert.ThrowsAny<Exception>(() => DenseAlgebra.UpperFactorOfInverse(h, 2, Parallelism.AllCores));
        Assert.Contains("positive definite", e.Message);
    }

    [Fact]
    public void TheWeightedNormOnEitherPathEqualsTheDefinition()
    {
        const int rows = 300, n = 70; // more rows than one chunk of 256
        var h = CorrelatedHessian(n, 4);
        var random = new Random(9);
        var d = Matrix<double>.Build.Dense(rows, n, (_, _) => random.NextDouble() - 0.5);
        double expected = (d * h.Matrix).PointwiseMultiply(d).ColumnSums().Sum();
        Assert.Equal(expected, h.WeightedSquaredNorm(d), expected * 1e-12);
        Assert.Equal(expected, h.WeightedSquaredNorm(d, native: false), expected * 1e-12);
    }

    /// <summary>A grid whose groups are wider than LDLQ's block (a scale per 200 columns): the pending errors of a
    /// block reach a group that starts inside it before its scale is chosen.</summary>
    private sealed class WideGroupGrid(int group) : QuantGrid
    {
        public override string Spec => $"wide{group}";

        public override GridQuantizer Begin(int rows, int cols, ReadOnlySpan<float> initial) => new Quantizer(rows, cols, group);

        public override IGridReader Open(IGridStore store, int rows, int cols) => throw new NotSupportedException();

        private sealed class Quantizer(int rows, int cols, int group) : GridQuantizer(rows, cols)
        {
            private readonly float[] _scales = new float[rows * ((cols + group - 1) / group)];
            private readonly float[] _current = new float[rows];

            public override int GroupSize => group;

            public override void BeginGroup(int row, int firstColumn, ReadOnlySpan<float> values)
            {
                float max = 0;
                foreach (float v in values) max = Math.Max(max, Math.Abs(v));
                _current[row] = max / 3;
                _scales[row * ((Columns + group - 1) / group) + firstColumn / group] = max / 3;
            }

            public override float Round(int row, int column, double value)
            {
                float s = _current[row];
                return s == 0 ? 0 : (float)(Math.Clamp(Math.Round(value / s), -3, 3) * s);
            }

            public override IReadOnlyList<GridArray> Arrays()
            {
                var bytes = new byte[_scales.Length * 4];
                Buffer.BlockCopy(_scales, 0, bytes, 0, bytes.Length);
                return [new("scales", DType.F32, [_scales.Length], bytes)];
            }
        }
    }
}
