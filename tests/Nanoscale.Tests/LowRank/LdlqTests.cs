using Nanoscale.Formats;
using Nanoscale.LowRank;
using Nanoscale.Codecs;
using static Nanoscale.Tests.LowRank.LowRankTestData;

namespace Nanoscale.Tests.LowRank;

public class LdlqTests
{
    [Theory]
    [InlineData("int2")]
    [InlineData("int3")]
    [InlineData("int4")]
    [InlineData("mxint2")]
    [InlineData("mxint3")]
    [InlineData("mxfp4")]
    [InlineData("nvfp4")]
    [InlineData("mxfp6")]
    public void LdlqBeatsRoundToNearestOnTheWeightedErrorForRandomH(string gridSpec)
    {
        const int rows = 48, cols = 96;
        var grid = CalderaTensorCodec.ParseGrid(gridSpec);
        for (int seed = 1; seed <= 3; seed++)
        {
            var w = Weights(rows, cols, seed);
            var h = CorrelatedHessian(cols, 100 + seed);
            var nearest = Ldlq.Quantize(ToDouble(w), rows, cols, null, grid);
            var ldlq = Ldlq.Quantize(ToDouble(w), rows, cols, h, grid);
            double rtnError = WeightedError(nearest.Values, w, rows, cols, h);
            double ldlqError = WeightedError(ldlq.Values, w, rows, cols, h);
            Assert.True(ldlqError < 0.9 * rtnError, $"{gridSpec} seed {seed}: LDLQ {ldlqError:g4} vs nearest {rtnError:g4}");
        }
    }

    [Theory]
    [InlineData("int3")]
    [InlineData("mxint3")]
    [InlineData("mxfp4")]
    public void IdentityHessianIsRoundToNearest(string gridSpec)
    {
        var grid = CalderaTensorCodec.ParseGrid(gridSpec);
        var w = Weights(8, 70, 7);
        var a = Ldlq.Quantize(ToDouble(w), 8, 70, null, grid).Values;
        var b = Ldlq.Quantize(ToDouble(w), 8, 70, Hessian.Identity(70), grid).Values;
        Assert.Equal(a, b);
    }

    [Theory]
    [InlineData("mxfp4")]
    [InlineData("mxint2")]
    [InlineData("mxint3")]
    [InlineData("mxint8")]
    [InlineData("nvfp4")]
    public void BlockGridRoundToNearestMatchesTheCodecOffTies(string spec)
    {
        // Off exact ties, the nearest level under the codec's own scale is what the codec itself picks (MXINT: only the
        // symmetric codes its encoder emits).
        var codec = CodecRegistry.CreateBlockCodec(spec);
        var w = Weights(16, 96, 3);
        int nb = codec.BlocksPerRow(96);
        var blocks = new byte[16 * nb * codec.BytesPerBlock];
        var scales = new byte[16 * nb * codec.ScaleBytesPerBlock];
        var tensorData = new byte[codec.TensorDataBytes];
        var accumulator = codec.CreateTensorDataAccumulator(CodecOptions.Default);
        accumulator.Add(w, 0);
        accumulator.WriteTensorData(tensorData);
        codec.Quantize(w, 16, 96, tensorData, CodecOptions.Default, 0, blocks, scales);
        var expected = new float[w.Length];
        codec.Dequantize(blocks, scales, tensorData, 16, 96, CodecOptions.Default, expected);
        var actual = Ldlq.Quantize(ToDouble(w), 16, 96, null, CalderaTensorCodec.ParseGrid(spec)).Values;
        Assert.Equal(expected, actual);
    }

    [Theory]
    [InlineData("mxint2", 70)]
    [InlineData("mxfp4", 64)]
    [InlineData("nvfp4", 40)]
    [InlineData("mxfp6-e3m2", 33)]
    public void StoredBlockCodesDecodeToExactlyTheValuesLdlqUsed(string spec, int cols)
    {
        const int rows = 12;
        var codec = CodecRegistry.CreateBlockCodec(spec);
        var w = Weights(rows, cols, 5);
        var q = Ldlq.Quantize(ToDouble(w), rows, cols, CorrelatedHessian(cols, 9), new BlockGrid(codec));
        var parts = q.Quantizer.Arrays().ToDictionary(p => p.Role);
        var decoded = new float[rows * cols];
        codec.Dequantize(parts["blocks"].Data, parts["scales"].Data,
            parts.TryGetValue("tensor_data", out var td) ? td.Data : [], rows, cols, CodecOptions.Default, decoded);
        Assert.Equal(q.Values, decoded);
    }

    [Fact]
    public void UniformIntGridUsesSymmetricCodesAndOneScalePerRow()
    {
        var grid = new UniformIntGrid(3);
        var w = Weights(4, 50, 11);
        var q = Ldlq.Quantize(ToDouble(w), 4, 50, null, grid);
        for (int r = 0; r < 4; r++)
        {
            var row = q.Values.AsSpan(r * 50, 50).ToArray();
            float step = row.Where(v => v != 0).Select(Math.Abs).Min();
            Assert.All(row, v => Assert.InRange(Math.Abs(v / step - Math.Round(v / step)), 0, 1e-5));
            Assert.True(row.Max(Math.Abs) <= 3 * step * (1 + 1e-6));
        }
    }

    [Theory]
    [InlineData("int9", "int grids have 2 to 8 bits")]
    [InlineData("int1", "int grids have 2 to 8 bits")]
    [InlineData("mxfp5", "valid grids")]
    [InlineData("bf16:x=1", "valid grids")]
    public void BadGridSpecsAreClearErrors(string spec, string expected)
    {
        var e = Assert.Throws<FormatSpecException>(() => CalderaTensorCodec.ParseGrid(spec));
        Assert.Contains(expected, e.Message);
    }
}
