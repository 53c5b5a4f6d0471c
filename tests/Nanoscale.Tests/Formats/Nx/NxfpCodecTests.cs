using Nanoscale.Formats;
using Nanoscale.Formats.Nx;
using Nanoscale.Tests.Support;
using Nanoscale.Codecs;

namespace Nanoscale.Tests.Formats.Nx;

/// <summary>NxFP behaviour (SPEC §6): each technique on hand-made blocks, the element cast with a recycled level,
/// layout, zero/NaN/clamped blocks, kernels byte-identical, and the error on real GPT-2 weights.</summary>
public class NxfpCodecTests
{
    private static NxfpCodec Nx(string spec) => Assert.IsType<NxfpCodec>(CodecRegistry.CreateBlockCodec(spec));

    private static readonly CodecOptions[] AllKernels =
    [
        new() { Kernel = CodecKernel.Reference },
        new() { Kernel = CodecKernel.Scalar, Parallelism = new(1) },
        new() { Kernel = CodecKernel.Fast, Parallelism = new(1) },
    ];

    private static float[] Block(params float[] head)
    {
        var v = new float[32];
        head.CopyTo(v, 0);
        return v;
    }

    [Fact]
    public void NanoMantissaTracksTheBlockMaximum()
    {
        // amax 7.5 = 6 · 1.25: UE5M2 holds 1.25 exactly, so the maximum is exact; MX (2^X) must clip or coarsen.
        float[] v = Block(7.5f, 1.25f, -3.75f, 0.625f);
        foreach (CodecOptions o in AllKernels)
        {
            NxfpCodec codec = Nx("nxfp4:nm=2,am=e2m1,cr=off");
            var e = CodecHarness.Quantize(codec, v, 1, 32, o);
            Assert.Equal(1.25f, codec.Scale.Decode(codec.SplitWord(e.Scales[0]).ScaleCode));
            Assert.Equal(v, CodecHarness.Dequantize(codec, e, 1, 32, o));
        }
    }

    [Fact]
    public void NanoMantissaTriesBothNeighboursAndKeepsTheLowerError()
    {
        // amax/6 = 1.1 lies between UE5M2 neighbours 1.0 and 1.25. With the floor scale 1.0 the block {6.6, 5}
        // gives {6, 5→4 or 6}; with 1.25 it gives {7.5, 5}: error 0.81 vs 0.36+1 → the ceil scale wins.
        NxfpCodec codec = Nx("nxfp4:nm=2,am=e2m1,cr=off");
        float[] v = Block(6.6f, 5f);
        var e = CodecHarness.Quantize(codec, v, 1, 32);
        Assert.Equal(1.25f, codec.Scale.Decode(codec.SplitWord(e.Scales[0]).ScaleCode));
        float[] d = CodecHarness.Dequantize(codec, e, 1, 32);
        Assert.Equal([7.5f, 5f], d[..2]);
    }

    [Fact]
    public void AdaptiveMicroexponentPicksTheFormatThatFitsTheBlock()
    {
        // A uniform grid 0..3.5 in steps of 0.5 is exactly E1M2 (scale 1); E2M1 cannot hold 2.5 and 3.5.
        NxfpCodec codec = Nx("nxfp4:nm=0,am=e2m1|e1m2,cr=off");
        float[] v = Block(0.5f, 1f, 1.5f, 2f, 2.5f, 3f, 3.5f, -2.5f);
        foreach (CodecOptions o in AllKernels)
        {
            var e = CodecHarness.Quantize(codec, v, 1, 32, o);
            Assert.Equal(1, codec.SplitWord(e.Scales[0]).Format);
            Assert.Equal(v, CodecHarness.Dequantize(codec, e, 1, 32, o));
        }
        // A block of powers of two is exact in E2M1 only.
        var e2 = CodecHarness.Quantize(codec, Block(4f, 2f, 1f, 0.5f), 1, 32);
        Assert.Equal(0, codec.SplitWord(e2.Scales[0]).Format);
    }

    [Theory]
    [InlineData(4.9f, 5f)]   // nearest is the recycled level
    [InlineData(4.5f, 4f)]   // tie between grid 4 and level 5: the grid keeps ties
    [InlineData(5.5f, 6f)]   // tie between level 5 and grid 6: the grid again
    [InlineData(5.4f, 5f)]
    [InlineData(-4.9f, -4f)] // the level is +5 only
    public void RecycledLevelJoinsNearestRounding(float x, float expected)
    {
        // The block max 6 fixes the scale at 1 (E8M0 with nm=0); the −0 code decodes to 5.
        NxfpCodec codec = Nx("nxfp4:nm=0,am=e2m1,cr=5");
        float[] v = Block(6f, x);
        foreach (CodecOptions o in AllKernels)
        {
            var e = CodecHarness.Quantize(codec, v, 1, 32, o);
            float[] d = CodecHarness.Dequantize(codec, e, 1, 32, o);
            Assert.Equal(1f, codec.Scale.Decode(codec.SplitWord(e.Scales[0]).ScaleCode));
            Assert.Equal(expected, d[1]);
            Assert.Equal(expected == 5f, (e.Blocks[0] >> 4) == 0x8);
        }
    }

    [Fact]
    public void RangeExtensionLevelCatchesTheBlockMaximum()
    {
        // cr=ext (8 for E2M1): a block {8, 1} is exact at scale 1, where plain E2M1 needs scale 2 (and loses the 1 → 0 or 2).
        NxfpCodec codec = Nx("nxfp4:nm=0,am=e2m1,cr=ext");
        var e = CodecHarness.Quantize(codec, Block(8f, 1f, 7.1f, 100f / 16), 1, 32);
        float[] d = CodecHarness.Dequantize(codec, e, 1, 32);
        Assert.Equal([8f, 1f, 8f, 6f], d[..4]);
    }

    [Fact]
    public void AutoRecyclingChoosesTheLevelPerBlock()
    {
        NxfpCodec codec = Nx("nxfp4:nm=0,am=e2m1,cr=auto");
        float[] v = [.. Block(6f, 5f, 5f, 5f), .. Block(8f, 1f, 0.5f)];
        var e = CodecHarness.Quantize(codec, v, 1, 64);
        Assert.Equal(0, codec.SplitWord(e.Scales[0]).Level); // gap level 5
        Assert.Equal(1, codec.SplitWord(e.Scales[1]).Level); // ext level 8
        Assert.Equal(v, CodecHarness.Dequantize(codec, e, 1, 64));
    }

    [Fact]
    public void DecodingARecycledCodeIsExact()
    {
        // Hand-made stored bytes: word = scale code of 1.5 (UE5M2) | format e1m2 | level; every code 0x8 (−0).
        NxfpCodec codec = Nx("nxfp4:nm=2,am=e2m1|e1m2,cr=5");
        int scaleCode = codec.Scale.Encode(1.5);
        var blocks = Enumerable.Repeat((byte)0x88, 16).ToArray();
        byte[] scales = [(byte)codec.Word(scaleCode, 1, 0)];
        foreach (CodecOptions o in AllKernels)
        {
            var d = new float[32];
            codec.Dequantize(blocks, scales, [], 1, 32, o, d);
            Assert.All(d, x => Assert.Equal(7.5f, x));
        }
    }

    [Fact]
    public void LayoutIsPinned()
    {
        // nxfp4 preset: 16 bytes of codes (element 2j in the low nibble of byte j) and one word: bits 0-6 UE5M2 code,
        // bit 7 format selector (0 = e2m1, 1 = e1m2).
        NxfpCodec codec = Nx("nxfp4:nm=2,am=e2m1|e1m2,cr=off");
        var e = CodecHarness.Quantize(codec, Block(0.5f, 1f, 1.5f, 2f, 2.5f, 3f, 3.5f, -2.5f), 1, 32);
        Assert.Equal([(byte)((0 + 23) << 2 | 1 << 7)], e.Scales); // scale 2^0 = exponent field 23, mantissa 0
        Assert.Equal([0x21, 0x43, 0x65, 0xD7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], e.Blocks);
    }

    [Fact]
    public void ZeroAndShortBlocks()
    {
        NxfpCodec codec = Nx("nxfp4");
        var zeros = CodecHarness.Quantize(codec, new float[40], 1, 40);
        Assert.All(zeros.Blocks, b => Assert.Equal(0, b));
        Assert.All(zeros.Scales, b => Assert.Equal(0, b));
        float[] v = [.. Enumerable.Range(0, 32).Select(i => (i - 18) * 0.1f), 0.5f, 1f, 1.5f, -2f, 3f];
        foreach (CodecOptions o in AllKernels)
        {
            float[] d = CodecHarness.RoundTrip(codec, v, 1, 37, o);
            Assert.Equal(37, d.Length);
            Assert.Equal(v[32..], d[32..]); // five values on the E2M1 grid of the short block, exact
        }
    }

    [Fact]
    public void NonFiniteThrowsWithTheIndexOrPassesThroughAsNaN()
    {
        NxfpCodec codec = Nx("nxfp4:cr=5");
        var v = new float[64];
        v[3] = 1.5f; v[40] = float.NaN; v[50] = float.NegativeInfinity;
        foreach (CodecOptions o in AllKernels)
        {
            var e = Assert.Throws<NonFiniteValueException>(() => CodecHarness.Quantize(codec, v, 1, 64, o));
            Assert.Equal(40, e.ElementIndex);
            var pass = o with { NonFinite = NonFinitePolicy.PassThrough };
            float[] d = CodecHarness.RoundTrip(codec, v, 1, 64, pass);
            Assert.Equal(1.5f, d[3]);
            Assert.All(d[32..], x => Assert.True(float.IsNaN(x)));
        }
    }

    [Fact]
    public void OutOfRangeScalesClampAndAreCounted()
    {
        // UE5M2 (bias 23): scales 2^−23 … 2^8·1.75. A block at 2^−40 clamps to the smallest scale (and rounds to 0);
        // a block at 2^12 clamps to the largest and saturates.
        NxfpCodec codec = Nx("nxfp4:nm=2,se=5,am=e2m1,cr=off");
        float[] v = [.. Block(MathF.ScaleB(1, -40)), .. Block(MathF.ScaleB(1, 12)), .. Block(1.5f)];
        Assert.Equal((1L, 1L), codec.CountClampedBlocks(v, 1, 96));
        foreach (CodecOptions o in AllKernels)
        {
            var e = CodecHarness.Quantize(codec, v, 1, 96, o);
            Assert.Equal(0, codec.SplitWord(e.Scales[0]).ScaleCode);
            Assert.Equal(codec.Scale.MaxCode, codec.SplitWord(e.Scales[1]).ScaleCode);
            float[] d = CodecHarness.Dequantize(codec, e, 1, 96, o);
            Assert.Equal(0f, d[0]);
            Assert.Equal(6f * codec.Scale.Max, d[32]);
            Assert.Equal(1.5f, d[64]);
        }
    }

    [Fact]
    public void EveryDecodedElementIsTheNearestLevelOfItsBlockGrid()
    {
        // Brute force over grid ∪ {level} at the chosen scale and format, on random blocks of every width.
        var random = new Random(5);
        foreach (string spec in new[] { "nxfp3:cr=gap", "nxfp4:cr=auto", "nxfp5:am=e2m2|e3m1|e1m3,cr=ext", "nxfp6:cr=-gap", "nxfp8:cr=gap" })
        {
            NxfpCodec codec = Nx(spec);
            float[] v = [.. Enumerable.Range(0, 32 * 200).Select(_ => MathF.ScaleB((float)(random.NextDouble() * 2 - 1), random.Next(-3, 3)))];
            var e = CodecHarness.Quantize(codec, v, 1, v.Length);
            float[] d = CodecHarness.Dequantize(codec, e, 1, v.Length);
            for (int b = 0; b < 200; b++)
            {
                var (sc, f, l) = codec.SplitWord(codec.ReadWord(e.Scales, b));
                float s = codec.Scale.Decode(sc);
                ReadOnlySpan<float> table = codec.DecodeTable(f, l);
                for (int i = b * 32; i < b * 32 + 32; i++)
                {
                    double x = v[i] / s, best = double.PositiveInfinity;
                    foreach (float t in table) best = Math.Min(best, Math.Abs(x - t));
                    Assert.True(Math.Abs(x - d[i] / s) <= best * (1 + 1e-6) + 1e-30, $"{spec} element {i}: {d[i]} for {v[i]}");
                }
            }
        }
    }

    /// <summary>Options covering every width 3..8 and each technique alone and combined.</summary>
    public static TheoryData<string> EquivalenceSpecs() =>
    [
        "nxfp3", "nxfp3:am=e2m0|e1m1,cr=auto", "nxfp4", "nxfp4:nm=0,am=e2m1,cr=off", "nxfp4:nm=3,am=e2m1,cr=gap",
        "nxfp4:nm=1,cr=auto", "nxfp4:am=e2m1|e1m2|e3m0,nm=1,cr=-ext", "nxfp4:nm=2,cr=5,round=away", "nxfp5", "nxfp5:cr=auto",
        "nxfp6", "nxfp6:am=e2m3|e3m2|e1m4|e4m1,cr=gap", "nxfp7:nm=2,cr=auto", "nxfp8:nm=3,am=e4m3|e3m4", "nxfp4:nm=4,se=8,cr=auto",
    ];

    [Theory]
    [MemberData(nameof(EquivalenceSpecs))]
    public void KernelsMatchTheReferenceOnAdversarialData(string spec)
    {
        foreach (var (name, values, cols) in KernelEquivalenceTests.AdversarialTensors(spec))
        {
            if (name == "random-gauss") // the reference scans every scale code: keep it to 64 rows
                KernelEquivalenceTests.AssertKernelsAgree(spec, values[..(64 * cols)], 64, cols, name);
            else
                KernelEquivalenceTests.AssertKernelsAgree(spec, values, values.Length / cols, cols, name);
        }
    }

    private static readonly Lazy<List<Bf16SafetensorsReader.Tensor>> Gpt2 = new(() =>
        Bf16SafetensorsReader.ReadBf16(SharedData.Gpt2Attn, name => name.StartsWith("h.0.") || name.StartsWith("h.11.")));

    [Theory]
    [MemberData(nameof(EquivalenceSpecs))]
    public void KernelsMatchTheReferenceOnGpt2Rows(string spec)
    {
        foreach (var t in Gpt2.Value)
        {
            int rows = Math.Min(t.Rows, 48);
            KernelEquivalenceTests.AssertKernelsAgree(spec, t.Values[..(rows * t.Cols)], rows, t.Cols, t.Name);
        }
    }

    [Fact]
    public void OnGpt2EachTechniqueLowersTheErrorOfMxfp4()
    {
        // Layer 0 and 11 attention weights: relative error of MXFP4 and of NxFP4 options at the same 4.25 bpw.
        double Error(string spec)
        {
            double num = 0, den = 0;
            foreach (var t in Gpt2.Value)
            {
                float[] d = CodecHarness.RoundTrip(CodecHarness.Codec(spec), t.Values, t.Rows, t.Cols);
                for (int i = 0; i < d.Length; i++) { double e = d[i] - t.Values[i]; num += e * e; den += (double)t.Values[i] * t.Values[i]; }
            }
            return num / den;
        }
        double mx = Error("mxfp4");
        Assert.True(Error("nxfp4:nm=3,am=e2m1,cr=off") < 0.85 * mx);
        Assert.True(Error("nxfp4:nm=0,am=e2m1|e1m2,cr=off") < mx);
        Assert.True(Error("nxfp4:nm=0,am=e2m1,cr=gap") < mx);
        Assert.True(Error("nxfp4") < 0.7 * mx);
        foreach (var t in Gpt2.Value) // the preset's UE5M2 range holds every block of real weights
            Assert.Equal((0L, 0L), Nx("nxfp4").CountClampedBlocks(t.Values, t.Rows, t.Cols));
    }
}
