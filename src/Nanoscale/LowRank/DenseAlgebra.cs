using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Nanoscale.Tensors;

namespace Nanoscale.LowRank;

/// <summary>
/// The dense double-precision products and factorisations behind LDLQ at real widths (4096–14336 columns): a
/// matrix product with update and the Cholesky factor of a Hessian's inverse. They run on the system's OpenBLAS
/// (Debian's <c>libopenblas0-pthread</c>, installed by <c>.ci/run</c>) when it is there, and on managed code otherwise:
/// the same numbers to rounding, the managed ones 10–50× slower at these sizes.
/// </summary>
/// <remarks>
/// <para>Why a thin binding of our own: MathNet.Numerics' OpenBLAS provider needs a wrapper library
/// (<c>libMathNetNumericsOpenBLAS</c>) that is published for Windows only, and its managed provider multiplies a
/// 4096 × 14336 by 14336 × 14336 matrix in minutes. Four entry points of OpenBLAS (<c>cblas_dgemm</c>,
/// <c>dpotrf_</c>, <c>dtrtri_</c>, <c>openblas_set_num_threads</c>) are all LDLQ needs; each has a managed twin
/// here (<c>native: false</c>), and the tests require both to agree.</para>
/// <para>OpenBLAS runs its own threads: before each call they are set to the caller's <see cref="Parallelism"/>, so
/// <c>--threads</c> bounds them as it bounds every other loop. Calls come from one thread at a time (LDLQ's block
/// updates); the library is loaded once, from <c>libopenblas.so.0</c>.</para>
/// </remarks>
internal static unsafe class DenseAlgebra
{
    private const int RowMajor = 101, NoTranspose = 111;

    private static readonly Native? Blas = Native.TryLoad();
    private static readonly object Gate = new();

    /// <summary>True when OpenBLAS was found; <c>NANOSCALE_BLAS=managed</c> turns it off for a run.</summary>
    public static bool NativeAvailable => Blas is not null;

    /// <summary>What runs the products, for reports: "OpenBLAS 0.3.21 …" or "managed".</summary>
    public static string Description => Blas?.Config ?? "managed (no libopenblas.so.0 found)";

    /// <summary>
    /// <c>C ← alpha·A·B + beta·C</c> on row-major arrays: A is m × k (row stride <paramref name="lda"/>, from
    /// <paramref name="aOffset"/>), B is k × n (<paramref name="ldb"/>, <paramref name="bOffset"/>), C is m × n
    /// (<paramref name="ldc"/>, <paramref name="cOffset"/>).
    /// </summary>
    public static void Gemm(int m, int n, int k, double alpha, double[] a, long aOffset, int lda, double[] b, long bOffset, int ldb,
        double beta, double[] c, long cOffset, int ldc, Parallelism parallelism, bool native = true)
    {
        if (m == 0 || n == 0) return;
        CheckBounds(a, aOffset, m, k, lda, nameof(a));
        CheckBounds(b, bOffset, k, n, ldb, nameof(b));
        CheckBounds(c, cOffset, m, n, ldc, nameof(c));
        if (native && Blas is { } blas)
        {
            lock (Gate)
            {
                blas.SetThreads(parallelism.Threads);
                fixed (double* pa = a, pb = b, pc = c)
                    blas.Dgemm(RowMajor, NoTranspose, NoTranspose, m, n, k, alpha, pa + aOffset, lda, pb + bOffset, ldb, beta, pc + cOffset, ldc);
            }
            return;
        }
        GemmManaged(m, n, k, alpha, a, aOffset, lda, b, bOffset, ldb, beta, c, cOffset, ldc, parallelism);
    }

    /// <summary>The managed twin of <see cref="Gemm"/>: rows over the threads, columns in tiles of 512 so a tile of B
    /// (k × 512) stays in cache across the rows, each row of the tile as k multiply-adds of 512 doubles.</summary>
    internal static void GemmManaged(int m, int n, int k, double alpha, double[] a, long aOffset, int lda, double[] b, long bOffset, int ldb,
        double beta, double[] c, long cOffset, int ldc, Parallelism parallelism)
    {
        const int Tile = 512;
        int tiles = (n + Tile - 1) / Tile;
        // Row blocks of 16 so each thread reuses a tile of B over several rows.
        const int RowBlock = 16;
        int rowBlocks = (m + RowBlock - 1) / RowBlock;
        parallelism.ForEach(rowBlocks, () => new double[Tile], (block, acc) =>
        {
            for (int tile = 0; tile < tiles; tile++)
            {
                int c0 = tile * Tile, width = Math.Min(Tile, n - c0);
                var sum = acc.AsSpan(0, width);
                for (int row = block * RowBlock, end = Math.Min(m, row + RowBlock); row < end; row++)
                {
                    sum.Clear();
                    for (int t = 0; t < k; t++)
                    {
                        double x = a[aOffset + (long)row * lda + t];
                        if (x != 0) TensorPrimitives.MultiplyAdd(b.AsSpan(checked((int)(bOffset + (long)t * ldb + c0)), width), x, sum, sum);
                    }
                    var target = c.AsSpan(checked((int)(cOffset + (long)row * ldc + c0)), width);
                    if (beta == 0) TensorPrimitives.Multiply(sum, alpha, target);
                    else
                    {
                        if (beta != 1) TensorPrimitives.Multiply(target, beta, target);
                        TensorPrimitives.MultiplyAdd(sum, alpha, target, target);
                    }
                }
            }
        });
    }

    /// <summary>
    /// The upper triangular U with <c>H⁻¹ = UᵀU</c> for a symmetric positive definite H (n × n, row-major, taken over
    /// and overwritten). Row-major, entries below the diagonal zero.
    /// </summary>
    /// <exception cref="ArgumentException">H is not positive definite (names the failing column).</exception>
    public static double[] UpperFactorOfInverse(double[] h, int n, Parallelism parallelism, bool native = true)
    {
        if (h.Length != (long)n * n) throw new ArgumentException($"expected {n}×{n} values, found {h.Length}", nameof(h));
        if (native && Blas is { } blas)
        {
            // No inverse is formed: with J the order reversal, Cholesky of JHJ gives H = Ũ Ũᵀ (Ũ = J L J, upper), so
            // H⁻¹ = Ũ⁻ᵀ Ũ⁻¹ and U = Ũ⁻¹: one factorisation and one triangular inverse (2n³/3 flops, half of factoring,
            // inverting and factoring again). JHJ is the array reversed. LAPACK is column-major: a row-major array read
            // column-major is its transpose, which for the symmetric H and JHJ is themselves.
            Array.Reverse(h);
            lock (Gate)
            {
                blas.SetThreads(parallelism.Threads);
                fixed (double* p = h)
                {
                    // JHJ = RᵀR (R upper, column-major): read row-major, the array holds M = Rᵀ with JHJ = M Mᵀ.
                    Check(blas.Potrf(p, n, (byte)'U'), "the Hessian");
                    // Reversed again the array holds Ũ = JMJ (upper, row-major), H = Ũ Ũᵀ; read column-major it is Ũᵀ
                    // (lower), whose inverse (Ũ⁻¹)ᵀ read back row-major is Ũ⁻¹ = U.
                    Array.Reverse(h);
                    Check(blas.Trtri(p, n, (byte)'L'), "the Hessian's factor");
                }
            }
            for (int r = 1; r < n; r++) Array.Clear(h, r * n, r); // the triangle LAPACK neither read nor wrote
            return h;
        }
        return UpperFactorOfInverseManaged(h, n);
    }

    /// <summary>The managed twin of <see cref="UpperFactorOfInverse"/> (MathNet's Cholesky, as before OpenBLAS).</summary>
    internal static double[] UpperFactorOfInverseManaged(double[] h, int n)
    {
        var matrix = MathNet.Numerics.LinearAlgebra.Matrix<double>.Build.Dense(n, n, h); // column-major = row-major (symmetric)
        var inverse = matrix.Cholesky().Solve(MathNet.Numerics.LinearAlgebra.Matrix<double>.Build.DenseIdentity(n));
        inverse = 0.5 * (inverse + inverse.Transpose());
        // Lower L with H⁻¹ = L Lᵀ, column-major: read row-major it is Lᵀ = U.
        var factor = inverse.Cholesky().Factor.AsColumnMajorArray() ?? inverse.Cholesky().Factor.ToColumnMajorArray();
        return factor;
    }

    private static void Check(int info, string what)
    {
        if (info > 0) throw new ArgumentException($"{what} is not positive definite (the Cholesky factorisation failed at column {info})");
        if (info < 0) throw new InvalidOperationException($"LAPACK rejected argument {-info}");
    }

    private static void CheckBounds(double[] array, long offset, int rows, int cols, int stride, string name)
    {
        if (rows < 0 || cols < 0 || stride < cols || offset < 0 || (rows > 0 && offset + (long)(rows - 1) * stride + cols > array.Length))
            throw new ArgumentOutOfRangeException(name, $"a {rows}×{cols} matrix with row stride {stride} at {offset} does not fit in {array.Length} values");
    }

    private sealed class Native
    {
        private readonly delegate* unmanaged<int, int, int, int, int, int, double, double*, int, double*, int, double, double*, int, void> _dgemm;
        private readonly delegate* unmanaged<byte*, int*, double*, int*, int*, nint, void> _dpotrf;
        private readonly delegate* unmanaged<byte*, byte*, int*, double*, int*, int*, nint, nint, void> _dtrtri;
        private readonly delegate* unmanaged<int, void> _setThreads;
        private int _threads = -1;

        private Native(nint handle)
        {
            _dgemm = (delegate* unmanaged<int, int, int, int, int, int, double, double*, int, double*, int, double, double*, int, void>)
                NativeLibrary.GetExport(handle, "cblas_dgemm");
            _dpotrf = (delegate* unmanaged<byte*, int*, double*, int*, int*, nint, void>)NativeLibrary.GetExport(handle, "dpotrf_");
            _dtrtri = (delegate* unmanaged<byte*, byte*, int*, double*, int*, int*, nint, nint, void>)NativeLibrary.GetExport(handle, "dtrtri_");
            _setThreads = (delegate* unmanaged<int, void>)NativeLibrary.GetExport(handle, "openblas_set_num_threads");
            Config = NativeLibrary.TryGetExport(handle, "openblas_get_config", out var config)
                ? Marshal.PtrToStringAnsi(((delegate* unmanaged<nint>)config)()) ?? "OpenBLAS" : "OpenBLAS";
        }

        public string Config { get; }

        public static Native? TryLoad()
        {
            if (string.Equals(Environment.GetEnvironmentVariable("NANOSCALE_BLAS"), "managed", StringComparison.OrdinalIgnoreCase)) return null;
            foreach (var name in (string[])["libopenblas.so.0", "libopenblas.so", "libopenblas"])
            {
                if (!NativeLibrary.TryLoad(name, out var handle)) continue;
                try { return new Native(handle); }
                catch (EntryPointNotFoundException) { NativeLibrary.Free(handle); }
            }
            return null;
        }

        public void SetThreads(int threads)
        {
            if (threads == _threads) return;
            _setThreads(threads);
            _threads = threads;
        }

        public void Dgemm(int order, int transA, int transB, int m, int n, int k, double alpha, double* a, int lda, double* b, int ldb,
            double beta, double* c, int ldc) => _dgemm(order, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);

        /// <summary>Cholesky in place (column-major), of the <paramref name="uplo"/> triangle; LAPACK's info.</summary>
        public int Potrf(double* a, int n, byte uplo)
        {
            int size = n, lda = n, info = 0;
            _dpotrf(&uplo, &size, a, &lda, &info, 1);
            return info;
        }

        /// <summary>Inverse of a triangular matrix in place (column-major, non-unit diagonal); LAPACK's info.</summary>
        public int Trtri(double* a, int n, byte uplo)
        {
            byte diag = (byte)'N';
            int size = n, lda = n, info = 0;
            _dtrtri(&uplo, &diag, &size, a, &lda, &info, 1, 1);
            return info;
        }
    }
}
