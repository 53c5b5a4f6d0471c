using MathNet.Numerics.LinearAlgebra;
using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.LowRank;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.LowRank;

public class FastHadamardTests
{
    [Theory]
    [InlineData(12)]
    [InlineData(20)]
    [InlineData(28)]
    public void TheSmallOrdersAreHadamardMatrices(int m)
    {
        var h = FastHadamard.SmallMatrix(m).ToArray();
        Assert.All(h, v => Assert.True(v is 1 or -1));
        for (int i = 0; i < m; i++)
            for (int j = 0; j < m; j++)
            {
                int dot = 0;
                for (int k = 0; k < m; k++) dot += h[i * m + k] * h[j * m + k];
                Assert.Equal(i == j ? m : 0, dot);
            }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(8)]
    [InlineData(64)]
    [InlineData(12)]
    [InlineData(24)]
    [InlineData(40)]
    [InlineData(56)]
    [InlineData(768)] // GPT-2's width: 12·64
    [InlineData(896)] // Qwen2.5-0.5B's: 28·32
    public void TheFastProductEqualsItsDenseReferenceTwin(int n)
    {
        Assert.True(FastHadamard.Supports(n));
        var dense = FastHadamard.Dense(n);
        var random = new Random(n);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)(random.NextDouble() * 2 - 1);
        foreach (bool transpose in new[] { false, true })
        {
            var fast = (float[])x.Clone();
            FastHadamard.Multiply(fast, transpose, new float[n]);
            for (int i = 0; i < n; i++)
            {
                double expected = 0;
                for (int j = 0; j < n; j++) expected += (transpose ? dense[(long)j * n + i] : dense[(long)i * n + j]) * (double)x[j];
                Assert.Equal(expected, fast[i], 1e-4 * Math.Sqrt(n));
            }
        }
    }

    [Theory]
    [InlineData(172)]
    [InlineData(11008)] // 2^8·43: no fast transform; caldera falls back to the dense random orthogonal V
    [InlineData(36)]
    public void WidthsWithoutAFastTransformAreSaid(int n) => Assert.False(FastHadamard.Supports(n));

    [Theory]
    [InlineData(64)]
    [InlineData(768)]
    public void EncodeAndDecodeAreInverseAndMatchTheDenseTransformForPowersOfTwo(int n)
    {
        var t = new FastIncoherence(n, 5);
        var random = new Random(1);
        var w = new float[n];
        for (int i = 0; i < n; i++) w[i] = (float)(random.NextDouble() - 0.5);
        var row = (float[])w.Clone();
        var scratch = new float[n];
        t.Encode(row, scratch);
        if ((n & (n - 1)) == 0)
        {
            // The same V as the dense Sylvester transform of the same seed: w Vᵀ.
            var v = IncoherenceTransform.Create(n, 5);
            var expected = Vector<double>.Build.Dense(n, i => w[i]) * v.Transpose();
            for (int i = 0; i < n; i++) Assert.Equal(expected[i], row[i], 1e-5);
        }
        t.Decode(row, scratch);
        for (int i = 0; i < n; i++) Assert.Equal(w[i], row[i], 1e-5);
    }

    [Fact]
    public void TheHessianTransformIsVHVt()
    {
        int n = 24;
        var random = new Random(2);
        var x = Matrix<double>.Build.Dense(100, n, (_, _) => random.NextDouble() - 0.5);
        var h = Hessian.FromMatrix(x.TransposeThisAndMultiply(x) / 100);
        var t = new FastIncoherence(n, 9);
        // V as a dense matrix: row i of V is e_i·V, the decode of e_i.
        var v = Matrix<double>.Build.Dense(n, n);
        for (int i = 0; i < n; i++)
        {
            var e = new float[n];
            e[i] = 1;
            t.Decode(e, new float[n]);
            for (int j = 0; j < n; j++) v[i, j] = e[j];
        }
        Assert.True((v * v.Transpose() - Matrix<double>.Build.DenseIdentity(n)).InfinityNorm() < 1e-5);
        var expected = v * h.Matrix * v.Transpose();
        var actual = t.Transform(h, Parallelism.AllCores).Matrix;
        Assert.True((expected - actual).InfinityNorm() < 1e-5, $"{(expected - actual).InfinityNorm()}");
    }

    [Fact]
    public void CalderaStoresTheFastTransformWhereTheWidthAllowsAndDecodesBothKinds()
    {
        using var dir = new TempDir();
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var path = dir.File("h.safetensors");
        Compressor.Compress(source, path, new CompressOptions
        {
            Codec = CodecRegistry.Create("caldera:rank=4,q=mxint4,lr=mxint4,iters=2,had=1,seed=3"),
            Selection = new TensorSelection(exclude: @"layers\.[1-4]\."),
        });
        using var written = LogicalCheckpoint.Open(path);
        var q = written.Find(LlamaTensorNames.Query(0))!;      // 64 wide: fast
        var down = written.Find(LlamaTensorNames.Down(0))!;    // 172 wide: dense
        Assert.Equal(IncoherenceTransform.FastKind, q.Encoded!.Parameters["transform"]);
        Assert.False(down.Encoded!.Parameters.ContainsKey("transform"));
        foreach (var t in new[] { q, down })
        {
            int rows = (int)t.Shape[0], cols = (int)t.Shape[1];
            var decoded = new float[rows * cols];
            using (var decoder = written.OpenDecoder(t)) decoder.ReadRows(0, rows, decoded);
            using var view = source.Map(source.Find(t.Name)!);
            var error = ErrorMetrics.Of(view.ToFloatArray(), decoded);
            Assert.True(error.SqnrDb > 15, $"{t.Name}: {error.SqnrDb} dB");
        }
    }
}
