using System.Buffers.Binary;
using Nanoscale.Formats;
using Nanoscale.Formats.Nv;

namespace Nanoscale.Tests.Formats;

public class NvFp4CodecTests
{
    private static readonly IBlockCodec Codec = CodecHarness.Codec("nvfp4");

    [Fact]
    public void TensorScaleIsAmaxOver2688LittleEndian()
    {
        float[] v = [1f, -26.88f, 3f, float.Epsilon];
        var e = CodecHarness.Quantize(Codec, v, 1, 4);
        Assert.Equal(26.88f / 2688f, BinaryPrimitives.ReadSingleLittleEndian(e.TensorData));
        Assert.Equal(4, Codec.TensorDataBytes);
    }

    [Fact]
    public void BlockScaleAndElementsFollowSpec()
    {
        // amax_tensor = 2688 → s_t = 1. Block 0: amax 6 → t = 1 → s_b = 1; block 1: amax 2688 → s_b = 448.
        var v = new float[32];
        v[0] = 6f; v[1] = -3f; v[2] = 0.75f; v[3] = 0.25f;
        v[16] = 2688f; v[17] = 448f;
        var e = CodecHarness.Quantize(Codec, v, 1, 32);
        Assert.Equal(1f, BinaryPrimitives.ReadSingleLittleEndian(e.TensorData));
        Assert.Equal(0x38, e.Scales[0]);
        Assert.Equal(0x7E, e.Scales[1]);
        float[] d = CodecHarness.Dequantize(Codec, e, 1, 32);
        Assert.Equal(6f, d[0]);
        Assert.Equal(-3f, d[1]);
        Assert.Equal(1f, d[2]); // 0.75 ties to even (1.0)
        Assert.Equal(0f, d[3]); // 0.25 ties to even (0)
        Assert.Equal(2688f, d[16]);
        Assert.Equal(448f, d[17]);
    }

    [Fact]
    public void ZeroBlockGetsScaleOneAndAllZeroTensorWorks()
    {
        var v = new float[48];
        v[40] = 5f;
        var e = CodecHarness.Quantize(Codec, v, 1, 48);
        Assert.Equal(NvFp4Codec.ZeroBlockScaleCode, e.Scales[0]);
        Assert.Equal(NvFp4Codec.ZeroBlockScaleCode, e.Scales[1]);
        var zero = CodecHarness.Quantize(Codec, new float[16], 1, 16);
        Assert.All(zero.Blocks, b => Assert.Equal(0, b));
        Assert.Equal(new float[16], CodecHarness.Dequantize(Codec, zero, 1, 16));
    }

    [Fact]
    public void FootprintIsFourAndAHalfBitsPlusTheTensorScale()
    {
        Assert.Equal(4.5 + 32.0 / (768 * 768), Codec.BitsPerWeight(768, 768), 12);
        Assert.Equal(16, Codec.BlockSize);
        Assert.Equal(8, Codec.BytesPerBlock);
    }

    [Fact]
    public void ErrorIsBoundedOnRandomData()
    {
        var random = new Random(3);
        float[] v = [.. Enumerable.Range(0, 64 * 100).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float[] d = CodecHarness.RoundTrip(Codec, v, 64, 100);
        double err = 0, norm = 0;
        for (int i = 0; i < v.Length; i++) { err += Math.Pow(d[i] - v[i], 2); norm += v[i] * (double)v[i]; }
        Assert.InRange(err / norm, 0, 0.02);
    }

    [Fact]
    public void NonFiniteTensorAmaxThrowsOrIsSkipped()
    {
        float[] v = [1f, 2f, float.NaN, 4f];
        var ex = Assert.Throws<NonFiniteValueException>(() => Codec.CreateTensorDataAccumulator(CodecOptions.Default).Add(v, 100));
        Assert.Equal(102, ex.ElementIndex);
        var options = new CodecOptions { NonFinite = NonFinitePolicy.PassThrough };
        var e = CodecHarness.Quantize(Codec, [.. v, .. new float[12], .. Enumerable.Repeat(1f, 16)], 1, 32, options);
        Assert.Equal(4f / 2688f, BinaryPrimitives.ReadSingleLittleEndian(e.TensorData));
        Assert.Equal(0x7F, e.Scales[0]);
        float[] d = CodecHarness.Dequantize(Codec, e, 1, 32, options);
        Assert.True(float.IsNaN(d[0]));
        Assert.Equal(1f, d[16], 1e-6f);
    }

    [Fact]
    public void CorruptTensorScaleIsRejected()
    {
        var tensorData = new byte[4];
        BinaryPrimitives.WriteSingleLittleEndian(tensorData, float.NaN);
        var ex = Assert.Throws<ArgumentException>(() =>
            Codec.Dequantize(new byte[8], new byte[1], tensorData, 1, 16, CodecOptions.Default, new float[16]));
        Assert.Equal("tensorData", ex.ParamName);
    }
}
