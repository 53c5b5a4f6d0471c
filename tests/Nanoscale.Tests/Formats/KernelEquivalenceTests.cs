using Nanoscale.Formats;
using Nanoscale.Tests.Support;
using Nanoscale.Codecs;

namespace Nanoscale.Tests.Formats;

/// <summary>
/// The fast kernels (vector and scalar, one and two threads) must produce the reference's bytes exactly, and decode to
/// the same float bits, on real GPT-2 weights and on adversarial data.
/// </summary>
public class KernelEquivalenceTests
{
    /// <summary>Every registered block format, plus every option that changes the bytes.</summary>
    public static TheoryData<string> Specs()
    {
        var data = new TheoryData<string>();
        foreach (FormatTraits t in CodecRegistry.Table.Traits.Where(t => CodecRegistry.Create(t.Name) is BlockTensorCodec))
        {
            data.Add(t.Name);
            foreach (FormatOption o in t.Options.Where(o => o.Key != "entropy")) // a container option: same codes
                foreach (string value in o.Values.Where(v => v != o.Default))
                    data.Add($"{t.Name}:{o.Key}={value}");
        }
        return data;
    }

    private static readonly CodecOptions[] FastOptions =
    [
        new() { Kernel = CodecKernel.Fast, Parallelism = new(1) },
        new() { Kernel = CodecKernel.Fast, Parallelism = new(2) },
        new() { Kernel = CodecKernel.Scalar, Parallelism = new(1) },
    ];

    private static readonly Lazy<List<Bf16SafetensorsReader.Tensor>> Gpt2 = new(() =>
        Bf16SafetensorsReader.ReadBf16(SharedData.Gpt2Attn, name => name.StartsWith("h.0.") || name.StartsWith("h.11.")));

    [Theory]
    [MemberData(nameof(Specs))]
    public void FastMatchesReferenceOnGpt2AttentionWeights(string spec)
    {
        Assert.Equal(8, Gpt2.Value.Count);
        foreach (var tensor in Gpt2.Value)
            AssertKernelsAgree(spec, tensor.Values, tensor.Rows, tensor.Cols, tensor.Name);
    }

    [Theory]
    [MemberData(nameof(Specs))]
    public void FastMatchesReferenceOnAdversarialData(string spec)
    {
        foreach (var (name, values, cols) in AdversarialTensors(spec))
            AssertKernelsAgree(spec, values, values.Length / cols, cols, name);
    }

    internal static void AssertKernelsAgree(string spec, float[] values, int rows, int cols, string what)
    {
        IBlockCodec codec = CodecHarness.Codec(spec);
        var referenceOptions = new CodecOptions { Kernel = CodecKernel.Reference, NonFinite = NonFinitePolicy.PassThrough };
        var expected = CodecHarness.Quantize(codec, values, rows, cols, referenceOptions);
        float[] expectedDecoded = CodecHarness.Dequantize(codec, expected, rows, cols, referenceOptions);
        foreach (CodecOptions o in FastOptions)
        {
            var options = o with { NonFinite = NonFinitePolicy.PassThrough };
            var actual = CodecHarness.Quantize(codec, values, rows, cols, options);
            AssertSameBytes(expected.TensorData, actual.TensorData, $"{spec} {what} {o.Kernel}×{o.Parallelism} tensor data");
            AssertSameBytes(expected.Scales, actual.Scales, $"{spec} {what} {o.Kernel}×{o.Parallelism} scales");
            AssertSameBytes(expected.Blocks, actual.Blocks, $"{spec} {what} {o.Kernel}×{o.Parallelism} blocks");
            float[] decoded = CodecHarness.Dequantize(codec, expected, rows, cols, options);
            for (int i = 0; i < decoded.Length; i++)
                if (BitConverter.SingleToInt32Bits(decoded[i]) != BitConverter.SingleToInt32Bits(expectedDecoded[i]))
                    Assert.Fail($"{spec} {what} {o.Kernel}: decoded element {i} is {decoded[i]:R}, reference {expectedDecoded[i]:R}");
        }
    }

    private static void AssertSameBytes(byte[] expected, byte[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (expected[i] != actual[i])
                Assert.Fail($"{what}: byte {i} is 0x{actual[i]:X2}, reference 0x{expected[i]:X2}");
    }

    /// <summary>Ties, zeros, −0, subnormals, powers of two, saturation, huge and tiny magnitudes, short blocks, random.</summary>
    internal static IEnumerable<(string Name, float[] Values, int Cols)> AdversarialTensors(string spec)
    {
        IBlockCodec codec = CodecHarness.Codec(spec);
        var element = codec switch
        {
            Nanoscale.Formats.Mx.MxCodec mx => mx.Element,
            Nanoscale.Formats.Nx.NxfpCodec nx => nx.Formats[0],
            _ => ElementFormat.E2M1,
        };
        var random = new Random(spec.Length * 7919 + spec[^1]);

        // Exact ties and neighbours of every grid point, at block scales 2^0 and 2^−20, with a max planted per block
        // so the shared exponent is fixed.
        var grid = new List<float>();
        for (int k = 0; k < element.MaxMagnitudeCode; k++)
        {
            float lo = element.Decode(k), hi = element.Decode(k + 1), mid = (lo + hi) / 2;
            grid.AddRange([lo, mid, -mid, MathF.BitIncrement(mid), MathF.BitDecrement(mid), -hi]);
        }
        foreach (int shift in new[] { 0, -20, 30 })
        {
            var values = new List<float>();
            for (int i = 0; i < grid.Count; i++)
            {
                if (values.Count % codec.BlockSize == 0)
                    values.Add(MathF.ScaleB(element.Max, shift));
                values.Add(MathF.ScaleB(grid[i], shift));
            }
            while (values.Count % 96 != 0) values.Add(0);
            yield return ($"ties×2^{shift}", [.. values], 96);
        }

        // Special magnitudes mixed into blocks.
        float[] specials = [0f, -0f, float.Epsilon, -float.Epsilon, 1e-40f, MathF.ScaleB(1, -126), MathF.ScaleB(1.5f, -127),
            1f, 2f, 0.5f, -4f, float.MaxValue, -float.MaxValue, 3e38f, 1e30f, 1e-30f, 65504f, 448f, 449f, 480f, 57344f, 6f, 7f, -7.5f];
        var mixed = new float[64 * 100];
        for (int i = 0; i < mixed.Length; i++)
            mixed[i] = specials[random.Next(specials.Length)] * (random.Next(3) == 0 ? (float)random.NextDouble() : 1f);
        yield return ("specials", mixed, 100);

        // All-zero, single-element and tiny-only blocks; rows with short final blocks (cols not a multiple of 16/32).
        yield return ("zeros", new float[3 * 37], 37);
        yield return ("subnormal-only", [.. Enumerable.Range(0, 5 * 33).Select(i => BitConverter.Int32BitsToSingle(random.Next(1, 0x7FFFFF)) * (i % 2 == 0 ? 1 : -1))], 33);

        // Non-finite values (passed through as NaN blocks).
        var nonFinite = new float[4 * 48];
        for (int i = 0; i < nonFinite.Length; i++) nonFinite[i] = (float)random.NextDouble();
        nonFinite[5] = float.NaN; nonFinite[60] = float.PositiveInfinity; nonFinite[150] = float.NegativeInfinity;
        yield return ("non-finite", nonFinite, 48);

        // Random across a wide dynamic range, odd row length.
        yield return ("random-wide", [.. Enumerable.Range(0, 50 * 77).Select(_ =>
            MathF.ScaleB((float)(random.NextDouble() * 2 - 1), random.Next(-60, 60)))], 77);

        // Random normal-ish weights in a long row, enough rows to exercise two threads.
        yield return ("random-gauss", [.. Enumerable.Range(0, 512 * 512).Select(_ =>
            (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()) * 0.02))], 512);
    }
}
