using Nanoscale.Formats;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Formats;

/// <summary>
/// ggml's block formats against ggml itself (llama.cpp's native library): the bytes of <c>ggml_quantize_chunk</c> and
/// the floats of <c>dequantize_row_*</c>, bit for bit, on random and real weights.
/// </summary>
public class GgmlFormatTests
{
    public static TheoryData<string> Types => new() { "q8_0", "q4_0", "q4_1", "q5_0", "q5_1" };

    /// <summary>Weights of many magnitudes, with all-zero blocks, constant blocks, single spikes and exact ties.</summary>
    private static float[] Awkward(int rows, int cols, int seed)
    {
        var rng = new Random(seed);
        var values = new float[rows * cols];
        for (int i = 0; i < values.Length; i++)
        {
            int block = i / 32;
            values[i] = (block % 11) switch
            {
                0 => 0f,
                1 => 0.375f,                                        // constant block: max − min = 0
                2 => i % 32 == 5 ? -3.5f : 0f,                      // one negative spike
                3 => (rng.Next(33) - 16) * 0.125f,                 // exact multiples: ties after scaling
                _ => (float)((rng.NextDouble() - 0.5) * Math.Exp(rng.Next(-12, 6))),
            };
        }
        return values;
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void QuantizedBytesEqualGgmls(string type)
    {
        const int rows = 24, cols = 256;
        var values = Awkward(rows, cols, type.GetHashCode() & 0xFFFF);
        var theirs = LlamaCppGgml.Load().Quantize(type, values, rows, cols);
        var codec = CodecHarness.Codec(type);
        Assert.Equal(0, codec.ScaleBytesPerBlock);
        foreach (var kernel in new[] { CodecKernel.Reference, CodecKernel.Fast })
        {
            var ours = CodecHarness.Quantize(codec, values, rows, cols, new CodecOptions { Kernel = kernel, Parallelism = new(2) });
            Assert.Equal(theirs, ours.Blocks);
        }
    }

    /// <summary>Hand-made blocks — random codes under f16 scales of every class (zero, ±subnormal, normal, ±Inf, NaN) —
    /// decode to the scalar kernel's floats bit for bit with the fast kernels (Q8_0's and Q4_0's in registers,
    /// <c>GgmlDot.TryDequantize</c>), and the same through ggml's own <c>dequantize_row</c>.</summary>
    [Theory]
    [MemberData(nameof(Types))]
    public void FastDecodingEqualsTheScalarKernelForEveryScaleClass(string type)
    {
        var codec = CodecHarness.Codec(type);
        const int rows = 6, cols = 128;
        int blocksCount = rows * cols / 32, bytes = codec.BytesPerBlock;
        var rng = new Random(bytes);
        var blocks = new byte[blocksCount * bytes];
        rng.NextBytes(blocks);
        ushort[] scales = [0x0000, 0x8000, 0x0001, 0x83FF, 0x3C00, 0xC567, 0x7C00, 0xFC00, 0x7E01, 0x0400, 0x7BFF, 0x2E66];
        for (int j = 0; j < blocksCount; j++)
        {
            blocks[j * bytes] = (byte)scales[j % scales.Length];
            blocks[j * bytes + 1] = (byte)(scales[j % scales.Length] >> 8);
        }
        var encoded = new CodecHarness.Encoded(blocks, [], []);
        float[] reference = CodecHarness.Dequantize(codec, encoded, rows, cols, new CodecOptions { Kernel = CodecKernel.Reference });
        float[] fast = CodecHarness.Dequantize(codec, encoded, rows, cols, new CodecOptions { Kernel = CodecKernel.Fast, Parallelism = new(2) });
        float[] ggml = LlamaCppGgml.Load().Dequantize(type, blocks, rows * cols);
        for (int i = 0; i < reference.Length; i++)
        {
            Assert.True(SameFloat(reference[i], fast[i]), $"{type} element {i}: fast {fast[i]:R} vs {reference[i]:R}");
            Assert.True(SameFloat(reference[i], ggml[i]), $"{type} element {i}: ggml {ggml[i]:R} vs {reference[i]:R}");
        }
    }

    private static bool SameFloat(float a, float b) =>
        float.IsNaN(a) ? float.IsNaN(b) : BitConverter.SingleToInt32Bits(a) == BitConverter.SingleToInt32Bits(b);

    [Theory]
    [MemberData(nameof(Types))]
    public void RealWeightsQuantizeAndDecodeAsGgmlDoes(string type)
    {
        using var file = Nanoscale.IO.SafetensorsFile.Open(SharedData.Gpt2Attn);
        using var view = file.Map(file.Find("h.3.attn.k_proj.weight")!);
        var weights = view.ToFloatArray();
        const int rows = 768, cols = 768;
        var ggml = LlamaCppGgml.Load();
        var theirBytes = ggml.Quantize(type, weights, rows, cols);
        var codec = CodecHarness.Codec(type);
        var ours = CodecHarness.Quantize(codec, weights, rows, cols);
        Assert.Equal(theirBytes, ours.Blocks);
        var theirValues = ggml.Dequantize(type, theirBytes, rows * cols);
        var ourValues = CodecHarness.Dequantize(codec, ours, rows, cols);
        for (int i = 0; i < ourValues.Length; i++)
            Assert.Equal(BitConverter.SingleToInt32Bits(theirValues[i]), BitConverter.SingleToInt32Bits(ourValues[i]));
    }

    [Fact]
    public void GgmlMxfp4HoldsOurMxfp4ValuesAndGgmlDecodesThemBitForBit()
    {
        const int rows = 16, cols = 512;
        var values = Awkward(rows, cols, 7);
        var ggmlLayout = CodecHarness.Codec("ggml-mxfp4");
        var encoded = CodecHarness.Quantize(ggmlLayout, values, rows, cols);
        Assert.Equal(rows * cols / 32 * 17, encoded.Blocks.Length);
        var theirs = LlamaCppGgml.Load().Dequantize("mxfp4", encoded.Blocks, rows * cols);
        var ours = CodecHarness.Dequantize(ggmlLayout, encoded, rows, cols);
        var mx = CodecHarness.RoundTrip(CodecHarness.Codec("mxfp4"), values, rows, cols);
        for (int i = 0; i < ours.Length; i++)
        {
            Assert.Equal(theirs[i], ours[i]);
            Assert.Equal(mx[i], ours[i]); // the same values as our OCP MXFP4 (−0 and +0 compare equal here)
        }
        var reference = CodecHarness.Quantize(ggmlLayout, values, rows, cols, new CodecOptions { Kernel = CodecKernel.Reference });
        Assert.Equal(reference.Blocks, encoded.Blocks);
    }

    [Fact]
    public void TheTypeTableIsGgmls()
    {
        var ggml = LlamaCppGgml.Load();
        foreach (var type in GgmlType.All)
        {
            Assert.Equal(type.Name, ggml.TypeName(type.Id));
            Assert.Equal(type.BlockSize, ggml.BlockSize(type.Id));
            Assert.Equal(type.BytesPerBlock, ggml.TypeSize(type.Id));
        }
    }

    [Fact]
    public void NonFiniteWeightsAreRefusedWithTheirIndex()
    {
        var values = new float[64];
        values[40] = float.NaN;
        var error = Assert.Throws<NonFiniteValueException>(() => CodecHarness.Quantize(CodecHarness.Codec("q4_0"), values, 1, 64));
        Assert.Equal(40, error.ElementIndex);
    }
}
