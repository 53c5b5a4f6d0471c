using Nanoscale.Formats;
using Nanoscale.Formats.Mx;

namespace Nanoscale.Tests.Formats;

public class MxCodecTests
{
    private static float[] Block(params float[] head)
    {
        var v = new float[32];
        head.CopyTo(v, 0);
        return v;
    }

    /// <summary>Decoding hand-made blocks that hold every code — E4M3's NaN and E5M2's Inf/NaN too, which the encoder
    /// never writes and the widening leaves to the table — under scales from 2^−127 to NaN (0xFF) gives the reference's
    /// bits with the fast kernel (the register widening of <c>MxFloatDot.Dequantize</c>), on every thread count; the
    /// last block of the span is read from a padded copy.</summary>
    [Theory]
    [InlineData("mxfp8")]
    [InlineData("mxfp8-e5m2")]
    [InlineData("mxfp6")]
    [InlineData("mxfp6-e3m2")]
    [InlineData("mxfp5-e2m2")]
    [InlineData("mxint8")]
    public void EveryCodeDecodesAsTheReference(string spec)
    {
        var codec = (MxCodec)CodecHarness.Codec(spec);
        int bits = codec.Element.Bits, codeCount = 1 << bits;
        const int rows = 12, cols = 96;
        int blocksPerRow = cols / 32, bytesPerBlock = codec.BytesPerBlock;
        var random = new Random(bits);
        var codes = new byte[rows * cols];
        // Every code in the first blocks; then, for 8-bit minifloats, every other block all normal (the widening's
        // four-operation path: no zero, subnormal or special code), the rest random.
        bool minifloat8 = bits == 8 && codec.Element.Encoding == ElementEncoding.SignMagnitude;
        for (int i = 0; i < codes.Length; i++)
            codes[i] = (byte)(i < 2 * codeCount ? i % codeCount
                : minifloat8 && i / 32 % 2 == 1 ? random.Next(1 << codec.Element.MantissaBits, 0x7C) | (random.Next(2) << 7)
                : random.Next(codeCount));
        var blocks = new byte[rows * blocksPerRow * bytesPerBlock];
        for (int j = 0; j < rows * blocksPerRow; j++)
            BlockPacking.Pack(codes.AsSpan(j * 32, 32), bits, blocks.AsSpan(j * bytesPerBlock, bytesPerBlock));
        byte[] scales = [.. Enumerable.Range(0, rows * blocksPerRow).Select(j => (byte)(j % 5 == 4 ? 0xFF : j % 7 == 3 ? 0 : random.Next(100, 160)))];
        var encoded = new CodecHarness.Encoded(blocks, scales, []);
        float[] expected = CodecHarness.Dequantize(codec, encoded, rows, cols, new CodecOptions { Kernel = CodecKernel.Reference });
        foreach (var options in new[] { new CodecOptions { Parallelism = new(1) }, new CodecOptions { Parallelism = new(2) } })
        {
            float[] actual = CodecHarness.Dequantize(codec, encoded, rows, cols, options);
            // Bit for bit, but a NaN code under a NaN scale is any NaN: which operand's payload a product of two NaNs
            // keeps is the arithmetic's choice (the reference multiplies in double).
            for (int i = 0; i < expected.Length; i++)
                Assert.True(float.IsNaN(expected[i]) && float.IsNaN(actual[i]) && float.IsNaN(ElementValue(codec, codes[i]))
                    || BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                    $"{spec} element {i} (code 0x{codes[i]:X2}, scale 0x{scales[i / 32]:X2}): {actual[i]:R} vs {expected[i]:R}");
        }
    }

    private static float ElementValue(MxCodec codec, byte code) => (float)codec.Element.Decode(code);

    [Fact]
    public void SpecReferenceE4M3BlockSaturates()
    {
        IBlockCodec codec = CodecHarness.Codec("mxfp8-e4m3");
        float[] v = Block(957f, 960f, 902.4f, -959.56f, 2.5f);
        var e = CodecHarness.Quantize(codec, v, 1, 32);
        Assert.Equal(127 + 1, e.Scales[0]); // X = 1
        float[] d = CodecHarness.Dequantize(codec, e, 1, 32);
        Assert.Equal(Block(896, 896, 896, -896, 2.5f), d);
    }

    [Fact]
    public void SpecReferenceE2M1BlockTiesToEvenAndAway()
    {
        float[] v = Block(5.9f, 7f, 0.25f, 0.75f, 1.25f, -2.5f, 3.5f);
        IBlockCodec even = CodecHarness.Codec("mxfp4");
        var e = CodecHarness.Quantize(even, v, 1, 32);
        Assert.Equal(127, e.Scales[0]); // X = 0
        Assert.Equal(Block(6, 6, 0, 1, 1, -2, 4), CodecHarness.Dequantize(even, e, 1, 32));
        IBlockCodec away = CodecHarness.Codec("mxfp4:round=away");
        Assert.Equal(Block(6, 6, 0.5f, 1, 1.5f, -3, 4), CodecHarness.RoundTrip(away, v, 1, 32));
    }

    [Fact]
    public void SpecReferenceNumbersHoldForEveryKernel()
    {
        float[] v = Block(5.9f, 7f, 0.25f, 0.75f, 1.25f, -2.5f, 3.5f);
        foreach (CodecKernel k in Enum.GetValues<CodecKernel>())
            Assert.Equal(Block(6, 6, 0, 1, 1, -2, 4),
                CodecHarness.RoundTrip(CodecHarness.Codec("mxfp4"), v, 1, 32, new CodecOptions { Kernel = k }));
    }

    [Fact]
    public void MxFp4LayoutIsPinned()
    {
        // X = 0; codes 6→0b0111, 6→0111, 0→0000, 1→0010, 1→0010, −2→1100, 4→0110 packed low nibble first.
        var e = CodecHarness.Quantize(CodecHarness.Codec("mxfp4"), Block(5.9f, 7f, 0.25f, 0.75f, 1.25f, -2.5f, 3.5f), 1, 32);
        Assert.Equal(new byte[] { 0x77, 0x20, 0xC2, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }, e.Blocks);
        Assert.Equal(new byte[] { 0x7F }, e.Scales);
    }

    [Fact]
    public void ZeroBlockStoresScaleZeroAndPositiveZeros()
    {
        float[] v = Block(-0f, 0f, -0f);
        foreach (string spec in new[] { "mxfp4", "mxfp8", "mxfp6", "mxint8" })
        foreach (CodecKernel k in Enum.GetValues<CodecKernel>())
        {
            var e = CodecHarness.Quantize(CodecHarness.Codec(spec), v, 1, 32, new CodecOptions { Kernel = k });
            Assert.Equal(0, e.Scales[0]);
            Assert.All(e.Blocks, b => Assert.Equal(0, b));
        }
    }

    [Fact]
    public void ShortFinalBlockIsPaddedWithZeros()
    {
        IBlockCodec codec = CodecHarness.Codec("mxfp4");
        float[] v = [.. Enumerable.Range(0, 40).Select(i => (float)(i % 7) - 3)];
        var e = CodecHarness.Quantize(codec, v, 1, 40);
        Assert.Equal(2, e.Scales.Length);
        Assert.Equal(32, e.Blocks.Length);
        Assert.All(e.Blocks[20..], b => Assert.Equal(0, b)); // elements 40..63 of the stream are padding
        float[] d = CodecHarness.Dequantize(codec, e, 1, 40);
        Assert.Equal(v, d); // small integers are exact in E2M1 at X = 0
    }

    [Fact]
    public void SubnormalInputsGetAnExactExponent()
    {
        float tiny = MathF.ScaleB(1.5f, -140); // float subnormal
        var e = CodecHarness.Quantize(CodecHarness.Codec("mxfp4"), Block(tiny, -tiny / 3), 1, 32);
        Assert.Equal(0, e.Scales[0]); // X = −140 − 2 clamps to −127
        var e8 = CodecHarness.Quantize(CodecHarness.Codec("mxfp4"), Block(MathF.ScaleB(1.5f, -120)), 1, 32);
        Assert.Equal(-120 - 2 + 127, e8.Scales[0]);
    }

    [Fact]
    public void CeilRuleNeverSaturates()
    {
        float[] v = Block(957f, 960f, 902.4f, -959.56f, 2.5f);
        IBlockCodec codec = CodecHarness.Codec("mxfp8:scale=ceil");
        var e = CodecHarness.Quantize(codec, v, 1, 32);
        Assert.Equal(127 + 2, e.Scales[0]); // 960/2 = 480 > 448, so X = 2
        float[] d = CodecHarness.Dequantize(codec, e, 1, 32);
        Assert.Equal(960f, d[1]);
        Assert.Equal(-960f, d[3]);
        // 7 in E2M1: floor gives X = 0 (7 saturates to 6), ceil X = 1 (7/2 = 3.5 → 4·2 = 8).
        Assert.Equal(128, CodecHarness.Quantize(CodecHarness.Codec("mxfp4:scale=ceil"), Block(7f), 1, 32).Scales[0]);
        Assert.Equal(127, CodecHarness.Quantize(CodecHarness.Codec("mxfp4:scale=ceil"), Block(6f), 1, 32).Scales[0]);
    }

    [Fact]
    public void MseRuleIsNeverWorseThanFloor()
    {
        var random = new Random(5);
        IBlockCodec floor = CodecHarness.Codec("mxfp4"), mse = CodecHarness.Codec("mxfp4:scale=mse");
        float[] v = [.. Enumerable.Range(0, 32 * 256).Select(_ => (float)(random.NextDouble() * 2 - 1) * (random.Next(8) == 0 ? 8 : 1))];
        float[] df = CodecHarness.RoundTrip(floor, v, 256, 32), dm = CodecHarness.RoundTrip(mse, v, 256, 32);
        for (int b = 0; b < 256; b++)
        {
            double ef = 0, em = 0;
            for (int i = b * 32; i < b * 32 + 32; i++)
            {
                ef += Math.Pow(df[i] - v[i], 2);
                em += Math.Pow(dm[i] - v[i], 2);
            }
            Assert.True(em <= ef, $"block {b}: mse {em} > floor {ef}");
        }
        // A block where X+1 wins: 7.2 saturates to 6 at X = 0 (error 1.44) but is 8 at X = 1 (error 0.64).
        Assert.Equal(128, CodecHarness.Quantize(mse, Block(7.2f), 1, 32).Scales[0]);
        // 7 is a tie (error 1 either way): the floor exponent is kept.
        Assert.Equal(127, CodecHarness.Quantize(mse, Block(7f), 1, 32).Scales[0]);
    }

    [Fact]
    public void NonFiniteInputThrowsWithTheFlatElementIndex()
    {
        IBlockCodec codec = CodecHarness.Codec("mxfp4");
        const int rows = 64, cols = 4096;
        float[] v = new float[rows * cols];
        v[40 * cols + 1000] = float.NaN;
        v[50 * cols + 3] = float.PositiveInfinity;
        foreach (CodecKernel k in Enum.GetValues<CodecKernel>())
        {
            var options = new CodecOptions { Kernel = k, Parallelism = new(2) };
            var blocks = new byte[rows * 128 * 16];
            var scales = new byte[rows * 128];
            var ex = Assert.Throws<NonFiniteValueException>(() =>
                codec.Quantize(v.AsSpan(32 * cols), rows - 32, cols, [], options, 32L * cols, blocks, scales));
            Assert.Equal(40L * cols + 1000, ex.ElementIndex);
            Assert.Contains((40L * cols + 1000).ToString(), ex.Message);
        }
    }

    [Fact]
    public void NonFinitePassThroughMarksTheBlockNaN()
    {
        float[] v = Block(1f, float.NegativeInfinity, 2f);
        v = [.. v, .. Block(1f, 2f)];
        foreach (CodecKernel k in Enum.GetValues<CodecKernel>())
        {
            var options = new CodecOptions { Kernel = k, NonFinite = NonFinitePolicy.PassThrough };
            IBlockCodec codec = CodecHarness.Codec("mxfp6");
            var e = CodecHarness.Quantize(codec, v, 1, 64, options);
            Assert.Equal(0xFF, e.Scales[0]);
            Assert.All(e.Blocks[..24], b => Assert.Equal(0, b));
            float[] d = CodecHarness.Dequantize(codec, e, 1, 64, options);
            Assert.All(d[..32], x => Assert.True(float.IsNaN(x)));
            Assert.Equal(2f, d[33]);
        }
    }

    [Theory]
    [InlineData("mxfp8", 8.25, 32)]
    [InlineData("mxfp8-e5m2", 8.25, 32)]
    [InlineData("mxfp6", 6.25, 24)]
    [InlineData("mxfp6-e3m2", 6.25, 24)]
    [InlineData("mxfp4", 4.25, 16)]
    [InlineData("mxint8", 8.25, 32)]
    [InlineData("mxint2", 2.25, 8)]
    public void FootprintMatchesSpec(string spec, double bpw, int bytesPerBlock)
    {
        IBlockCodec codec = CodecHarness.Codec(spec);
        Assert.Equal(bpw, codec.BitsPerWeight(768, 768));
        Assert.Equal(bytesPerBlock, codec.BytesPerBlock);
        Assert.Equal(32, codec.BlockSize);
        Assert.Equal(1, codec.ScaleBytesPerBlock);
        Assert.Equal(0, codec.TensorDataBytes);
        Assert.Equal((2 * 16 + 2) * 8.0 / 40, CodecHarness.Codec("mxfp4").BitsPerWeight(1, 40));
    }

    [Fact]
    public void ShortSpansAreRejectedWithTheirName()
    {
        IBlockCodec codec = CodecHarness.Codec("mxfp4");
        var ex = Assert.Throws<ArgumentException>(() =>
            codec.Quantize(new float[64], 2, 32, [], CodecOptions.Default, 0, new byte[31], new byte[2]));
        Assert.Equal("blocks", ex.ParamName);
        Assert.Throws<ArgumentException>(() =>
            codec.Dequantize(new byte[32], new byte[2], [], 2, 32, CodecOptions.Default, new float[63]));
    }

    [Fact]
    public void MxInt8MatchesTheIntegerGrid()
    {
        // amax 1.5 → X = 0: values are code/64, symmetric.
        float[] v = Block(1.5f, -1.5f, 1f / 64, 2.5f / 64, -1.99f);
        float[] d = CodecHarness.RoundTrip(CodecHarness.Codec("mxint8"), v, 1, 32);
        Assert.Equal(Block(1.5f, -1.5f, 1f / 64, 2f / 64, -127f / 64), d);
    }

    [Fact]
    public void CodecExposesItsParts()
    {
        var codec = (MxCodec)CodecHarness.Codec("mxfp6-e3m2:scale=mse,round=away");
        Assert.Same(ElementFormat.E3M2, codec.Element);
        Assert.Equal(MxScaleRule.Mse, codec.ScaleRule);
        Assert.Equal(RoundingMode.NearestAway, codec.Rounding);
        Assert.Equal("mxfp6-e3m2:scale=mse,round=away", codec.Spec);
    }
}
