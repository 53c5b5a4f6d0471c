using System.Runtime.InteropServices;
using Nanoscale.Lossless;
using Nanoscale.Tests.Support;
using Xunit.Abstractions;
using Nanoscale.Tensors;
using Nanoscale.Formats;
using Nanoscale.Codecs;

namespace Nanoscale.Tests.Lossless;

public class VariablePrecisionTests(ITestOutputHelper output)
{
    /// <summary>Reference: round |x| to k mantissa bits with decimal-free double arithmetic, ties to even.</summary>
    private static float ReferenceRound(float x, int k)
    {
        if (!float.IsFinite(x) || x == 0) return x;
        int e = Math.ILogB(x);
        if (e < -126) e = -126; // subnormals share the smallest binade's spacing
        double ulp = Math.ScaleB(1.0, e - k);
        return (float)(Math.Round(x / ulp, MidpointRounding.ToEven) * ulp);
    }

    [Fact]
    public void F32RoundingMatchesTheReferenceIncludingTiesSubnormalsAndCarries()
    {
        var rng = new Random(5);
        var values = new List<float> { 1.5f, 1.25f, 1.75f, 1.125f, 1.375f, -2.5f, 3.0f, float.Epsilon, -float.Epsilon, 1e-40f, 0f, -0f,
            1.9999999f, float.MaxValue / 2 };
        for (int i = 0; i < 20000; i++) values.Add(BitConverter.Int32BitsToSingle(rng.Next()) * (rng.Next(2) == 0 ? 1 : -1));
        var source = MemoryMarshal.AsBytes(values.ToArray().AsSpan()).ToArray();
        foreach (int k in new[] { 1, 2, 3, 5, 10, 22, 23 })
        {
            var rounded = new byte[source.Length];
            VariablePrecision.Round(source, DType.F32, new VariablePrecisionOptions { MantissaBits = k }, rounded);
            var got = MemoryMarshal.Cast<byte, float>(rounded);
            for (int i = 0; i < values.Count; i++)
            {
                if (!float.IsFinite(values[i])) continue;
                var expected = ReferenceRound(values[i], k);
                Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(got[i]),
                    $"k={k}: {values[i]:R} → {got[i]:R}, expected {expected:R}");
            }
        }
    }

    [Fact]
    public void ZeroMantissaBitsBreakTiesTowardTheEvenExponentField()
    {
        // With no mantissa bits left, round-half-even acts on the encoding: the kept lowest bit is the exponent's.
        float[] values = [3.0f, 6.0f, 1.5f, 0.75f];
        var source = MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        var rounded = new byte[source.Length];
        VariablePrecision.Round(source, DType.F32, new VariablePrecisionOptions { MantissaBits = 0 }, rounded);
        Assert.Equal(new[] { 2.0f, 8.0f, 2.0f, 0.5f }, MemoryMarshal.Cast<byte, float>(rounded).ToArray());
    }

    [Fact]
    public void SpecialValuesSurviveAndTheFloorFlushesToSignedZero()
    {
        ushort[] bf16 = [0x7F80, 0xFF80, 0x7FC1, 0x7F81, 0xFF81, 0x0001, 0x8001, 0x0080, 0x3F80, 0x7F7F];
        var source = MemoryMarshal.AsBytes(bf16.AsSpan()).ToArray();
        var rounded = new byte[source.Length];
        long flushed = VariablePrecision.Round(source, DType.BF16, new VariablePrecisionOptions { MantissaBits = 0, ExponentFloor = 1 }, rounded);
        var r = MemoryMarshal.Cast<byte, ushort>(rounded);
        Assert.Equal(0x7F80, r[0]);          // +Inf
        Assert.Equal(0xFF80, r[1]);          // −Inf
        Assert.True(float.IsNaN(TensorData.BFloat16ToSingle(r[2])));
        Assert.True(float.IsNaN(TensorData.BFloat16ToSingle(r[3])));  // smallest-payload NaN stays NaN
        Assert.True(float.IsNaN(TensorData.BFloat16ToSingle(r[4])));
        Assert.Equal(0x0000, r[5]);          // subnormal flushed, sign kept
        Assert.Equal(0x8000, r[6]);
        Assert.Equal(0x0080, r[7]);          // smallest normal kept
        Assert.Equal(0x3F80, r[8]);
        Assert.Equal(0x7F80, r[9]);          // largest finite rounds up to Inf at 0 mantissa bits, as IEEE does
        Assert.Equal(2, flushed);
    }

    [Fact]
    public void Gpt2AttentionRateAndErrorFallWithMantissaBits()
    {
        var tensor = TinySafetensors.Gpt2AttnBf16[0];
        double previousBpw = double.MaxValue, previousSqnr = double.MaxValue;
        for (int k = 7; k >= 0; k--)
        {
            var encoded = VariablePrecision.Encode(tensor.Data, DType.BF16, new VariablePrecisionOptions { MantissaBits = k }, out var report);
            output.WriteLine($"vp:mant={k}: {report.BitsPerWeight:F3} bpw, SQNR {report.SqnrDb:F2} dB");
            var decoded = LosslessCodec.Decode(encoded, tensor.Name);
            var expected = new byte[tensor.Data.Length];
            VariablePrecision.Round(tensor.Data, DType.BF16, new VariablePrecisionOptions { MantissaBits = k }, expected);
            Assert.Equal(expected, decoded);
            Assert.True(report.BitsPerWeight < previousBpw);
            if (k < 7) Assert.True(report.SqnrDb < previousSqnr);
            if (k == 7) Assert.True(double.IsPositiveInfinity(report.SqnrDb));
            else Assert.InRange(report.BitsPerWeight, k + 1 + 2.0, k + 1 + 3.2); // sign + k bits + ~2.6-bit exponent
            previousBpw = report.BitsPerWeight;
            previousSqnr = report.SqnrDb;
        }
    }

    [Fact]
    public void TaperedPrecisionKeepsFullBitsNearTheCentreAndFewerFarAway()
    {
        var tensor = TinySafetensors.Gpt2AttnBf16[0];
        var uniform = new VariablePrecisionOptions { MantissaBits = 4 };
        var tapered = uniform with { TaperBitsPerBinade = 1, TaperWidth = 2 };
        var keep = VariablePrecision.MantissaBitsPerExponent(tensor.Data, DType.BF16, tapered);
        int center = Array.IndexOf(keep, 4) + 2; // first full-precision exponent is centre − width
        Assert.Equal(4, keep[center]);
        Assert.Equal(4, keep[center + 2]);
        Assert.Equal(3, keep[center + 3]);
        Assert.Equal(2, keep[center - 4]);
        Assert.Equal(0, keep[0]);

        VariablePrecision.Encode(tensor.Data, DType.BF16, uniform, out var u);
        VariablePrecision.Encode(tensor.Data, DType.BF16, tapered, out var t);
        output.WriteLine($"uniform mant=4: {u.BitsPerWeight:F3} bpw {u.SqnrDb:F2} dB; tapered 1/binade beyond ±2: {t.BitsPerWeight:F3} bpw {t.SqnrDb:F2} dB");
        Assert.True(t.BitsPerWeight < u.BitsPerWeight);
        Assert.True(t.SqnrDb < u.SqnrDb);

        // A zero taper is exactly the uniform type.
        var a = new byte[tensor.Data.Length];
        var b = new byte[tensor.Data.Length];
        VariablePrecision.Round(tensor.Data, DType.BF16, uniform, a);
        VariablePrecision.Round(tensor.Data, DType.BF16, uniform with { TaperWidth = 0, TaperCenter = 3 }, b);
        Assert.Equal(a, b);
    }

    // The spec string is read by the one format table; VariablePrecisionOptions is what it builds.
    [Theory]
    [InlineData("vp", "vp:mant=3", "vp")]
    [InlineData("vp:mant=5", "vp:mant=5", "vp:mant=5")]
    [InlineData("vp:mant=4,taper=1,width=3,center=126", "vp:mant=4,taper=1,width=3,center=126", "vp:mant=4,taper=1,width=3,center=126")]
    [InlineData("vp:floor=1,mant=2", "vp:mant=2,floor=1", "vp:mant=2,floor=1")]
    public void SpecStringsParseAndPrintCanonically(string spec, string options, string canonical)
    {
        var codec = Assert.IsType<EntropyTensorCodec>(CodecRegistry.Create(spec));
        Assert.Equal(options, codec.Precision!.ToString());
        Assert.Equal(canonical, codec.Spec);
        Assert.Equal(codec.Precision, Assert.IsType<EntropyTensorCodec>(CodecRegistry.Create(canonical)).Precision);
    }

    [Theory]
    [InlineData("vq:mant=3", "vp")]
    [InlineData("vp:bits=3", "valid keys: mant (, default 3), floor (, default 0), taper (, default 0), width (, default 2), center")]
    [InlineData("vp:mant=3,mant=4", "twice")]
    [InlineData("vp:mant=-1", "non-negative integer")]
    [InlineData("vp:mant", "not key=value")]
    public void BadSpecStringsSayWhatIsValid(string spec, string expected)
    {
        var e = Assert.Throws<FormatSpecException>(() => CodecRegistry.Create(spec));
        Assert.Contains(expected, e.Message);
    }
}
