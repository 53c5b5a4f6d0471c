using System.Globalization;
using Nanoscale.Formats;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Formats;

/// <summary>
/// Our MX codes against an independent quantizer written from microxcaling's published algorithm
/// (<c>tools/mx_reference.py</c>, plain Python): scales and element codes equal byte for byte on real GPT-2 weights,
/// the sign of zero included — a negative weight that rounds to zero is stored as the −0 code, as the reference gives.
/// </summary>
public class MxReferenceTests
{
    [Theory]
    [InlineData("mxfp4", "e2m1", "even")]
    [InlineData("mxfp4:round=away", "e2m1", "nearest")]
    [InlineData("mxfp6-e2m3", "e2m3", "even")]
    [InlineData("mxfp6-e3m2", "e3m2", "even")]
    [InlineData("mxfp8-e4m3", "e4m3", "even")]
    [InlineData("mxfp8-e5m2:round=away", "e5m2", "nearest")]
    public void CodesEqualTheReferenceBitForBit(string spec, string element, string round)
    {
        const int rows = 16, cols = 768;
        using var file = Nanoscale.IO.SafetensorsFile.Open(SharedData.Gpt2Attn);
        using var view = file.Map(file.Find("h.2.attn.q_proj.weight")!);
        var weights = view.ToFloatArray().AsSpan(0, rows * cols).ToArray();
        using var dir = new TempDir();
        var raw = dir.File("w.f32");
        File.WriteAllBytes(raw, System.Runtime.InteropServices.MemoryMarshal.AsBytes(weights.AsSpan()).ToArray());
        var lines = PythonTool.Run("mx_reference.py", raw, element, round).Split('\n', StringSplitOptions.RemoveEmptyEntries);

        var codec = CodecHarness.Codec(spec);
        var encoded = CodecHarness.Quantize(codec, weights, rows, cols);
        int bits = codec.BytesPerBlock * 8 / codec.BlockSize, negativeZeros = 0;
        Assert.Equal(rows * cols / 32, lines.Length);
        var codes = new byte[32];
        for (int b = 0; b < lines.Length; b++)
        {
            var expected = lines[b].Split(' ').Select(h => byte.Parse(h, NumberStyles.HexNumber)).ToArray();
            Assert.Equal(expected[0], encoded.Scales[b]);
            BlockPacking.Unpack(encoded.Blocks.AsSpan(b * codec.BytesPerBlock, codec.BytesPerBlock), bits, codes);
            Assert.Equal(expected[1..], codes);
            negativeZeros += codes.Count(c => c == 1 << (bits - 1));
        }
        if (element == "e2m1") Assert.InRange(negativeZeros, rows * cols / 100, rows * cols); // about 5%: not vacuous
    }

    [Fact]
    public void OnlyNegativeNonzeroValuesKeepTheSignOfZero()
    {
        // amax 6 → scale 2^0; −0.2 and 0.2 round to zero; −0.0 is zero itself.
        var block = new float[32];
        block[0] = 6f;
        block[1] = -0.2f;
        block[2] = 0.2f;
        block[3] = -0.0f;
        foreach (var spec in new[] { "mxfp4", "mxfp4:round=away", "nvfp4" })
        foreach (var kernel in new[] { CodecKernel.Reference, CodecKernel.Scalar, CodecKernel.Fast })
        {
            var codec = CodecHarness.Codec(spec);
            var encoded = CodecHarness.Quantize(codec, block, 1, 32, new CodecOptions { Kernel = kernel });
            var codes = new byte[codec.BlockSize];
            BlockPacking.Unpack(encoded.Blocks.AsSpan(0, codec.BytesPerBlock), 4, codes);
            Assert.True((codes[1], codes[2], codes[3]) == (8, 0, 0), $"{spec} {kernel}: {codes[1]} {codes[2]} {codes[3]}");
            Assert.True(float.IsNegative(CodecHarness.Dequantize(codec, encoded, 1, 32)[1]));
        }
        // zero=positive keeps one canonical zero (what entropy coding prefers).
        foreach (var spec in new[] { "mxfp4:zero=positive", "nvfp4:zero=positive" })
        foreach (var kernel in new[] { CodecKernel.Reference, CodecKernel.Scalar, CodecKernel.Fast })
        {
            var codec = CodecHarness.Codec(spec);
            var codes = new byte[codec.BlockSize];
            BlockPacking.Unpack(CodecHarness.Quantize(codec, block, 1, 32, new CodecOptions { Kernel = kernel }).Blocks.AsSpan(0, codec.BytesPerBlock), 4, codes);
            Assert.True((codes[1], codes[2], codes[3]) == (0, 0, 0), $"{spec} {kernel}");
        }
        Assert.Contains("unknown option 'zero'", Assert.Throws<FormatSpecException>(() => CodecHarness.Codec("mxint4:zero=positive")).Message);

        // NxFP recycles the −0 code for another level, so its zeros stay +0.
        var nx = CodecHarness.Codec("nxfp4");
        var nxCodes = new byte[32];
        BlockPacking.Unpack(CodecHarness.Quantize(nx, block, 1, 32).Blocks.AsSpan(0, nx.BytesPerBlock), 4, nxCodes);
        Assert.Equal((0, 0), (nxCodes[1], nxCodes[2]));
    }
}
