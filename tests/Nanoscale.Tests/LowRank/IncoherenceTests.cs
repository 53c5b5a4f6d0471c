using System.Globalization;
using MathNet.Numerics.LinearAlgebra;
using Nanoscale.IO;
using Nanoscale.LowRank;
using Nanoscale.Pipeline;
using Nanoscale.Codecs;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.LowRank;

public class IncoherenceTests
{
    [Theory]
    [InlineData(64)]
    [InlineData(172)]
    [InlineData(1)]
    public void TransformIsOrthogonalAndReproducible(int n)
    {
        var v = IncoherenceTransform.Create(n, 7);
        Assert.True((v * v.Transpose() - Matrix<double>.Build.DenseIdentity(n)).InfinityNorm() < 1e-12);
        Assert.Equal(v, IncoherenceTransform.Create(n, 7));
        if (n == 64) Assert.All(v.Enumerate(), x => Assert.Equal(1 / 8.0, Math.Abs(x), 15)); // Hadamard: flat magnitudes
    }

    [Fact]
    public void TransformedWeightDecodesBackAndKeepsTheActivationAwareError()
    {
        using var dir = new TempDir();
        var calibration = Calibration.Collect(SharedData.Stories260K, SharedData.WikiText2, SharedData.Tok512, new CalibrationOptions { Tokens = 512 });
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var path = dir.File("h.safetensors");
        Compressor.Compress(source, path, new CompressOptions
        {
            Codec = CodecRegistry.Create("caldera:rank=4,q=mxint3,lr=mxint4,iters=2,had=1,seed=3"),
            Selection = new TensorSelection(exclude: @"layers\.[1-4]\."),
            EncodeOptions = new EncodeOptions { Calibration = calibration },
        });
        using var written = LogicalCheckpoint.Open(path);
        foreach (var (name, cols) in new[] { (LlamaTensorNames.Query(0), 64), (LlamaTensorNames.Down(0), 172) })
        {
            var logical = written.Find(name)!;
            int rows = (int)logical.Shape[0];
            Assert.Equal("3", logical.Encoded!.Parameters["transform_seed"]);
            var decoded = new float[rows * cols];
            using (var decoder = written.OpenDecoder(logical)) decoder.ReadRows(0, rows, decoded);
            using var view = source.Map(source.Find(name)!);
            var w = view.ToFloatArray();
            var h = calibration.Find(name)!;
            var delta = Matrix<double>.Build.Dense(rows, cols, (r, c) => (double)decoded[r * cols + c] - w[r * cols + c]);
            var wm = Matrix<double>.Build.Dense(rows, cols, (r, c) => w[r * cols + c]);
            double relative = Math.Sqrt(h.WeightedSquaredNorm(delta) / h.WeightedSquaredNorm(wm));
            double stored = double.Parse(logical.Encoded.Parameters["activation_error"], CultureInfo.InvariantCulture);
            Assert.Equal(stored, relative, 3);
            Assert.InRange(relative, 0.001, 0.5);
        }
    }
}
