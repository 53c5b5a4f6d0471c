using CsCheck;
using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.Formats.Ggml;
using Nanoscale.Formats.Mx;
using Nanoscale.Formats.Nv;
using Nanoscale.Formats.Nx;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Pipeline;

/// <summary>
/// For every format of the registry: decode(encode(x)) stays within the format's worst-case error for any finite input
/// in the format's range (docs/reliability.md derives each bound). The bounds come from the format's own parameters
/// (element grid, largest value, scale grid), never from running the quantizer, so a kernel that picks a wrong scale,
/// rounds to the wrong neighbour or clamps too early fails; a failure shrinks to a small tensor and prints its seed.
/// A format registered without a bound here fails <see cref="EveryRegisteredFormatHasABound"/>.
/// </summary>
public class ErrorBoundPropertyTests
{
    /// <summary>Formats without an elementwise bound, and why.</summary>
    private static readonly Dictionary<string, string> Unbounded = new()
    {
        ["caldera"] = "a least-squares fit Q + L·R: its error is measured (docs/caldera.md), not bounded per weight",
        ["e8"] = "a vector quantizer choosing each block's scale by its squared error: measured against the rate-distortion bound (E8Tests, docs/e8.md), not bounded per weight",
    };

    public static TheoryData<string> Bounded() => [.. Canonical().Where(n => !Unbounded.ContainsKey(n))];

    private static IEnumerable<string> Canonical() => CodecRegistry.Table.Traits.Select(t => t.Name).Order(StringComparer.Ordinal);

    [Fact]
    public void EveryRegisteredFormatHasABound()
    {
        var names = Canonical().ToList();
        foreach (var name in Unbounded.Keys) Assert.Contains(name, names);
        foreach (var name in names)
            if (!Unbounded.ContainsKey(name))
                Assert.True(BoundOf(CodecRegistry.Create(name)) is not null, $"{name}: no error bound is declared for it (add one here and in docs/reliability.md)");
    }

    /// <summary>The bound of one format: the exponent range its inputs are drawn from (log2 of magnitudes), and the
    /// check of one decoded tensor against the original.</summary>
    private sealed record Bound(int MinExponent, int MaxExponent, Action<float[], float[], int, int, string> Check);

    [Theory]
    [MemberData(nameof(Bounded))]
    public void DecodedValuesStayWithinTheFormatsBound(string name)
    {
        var codec = CodecRegistry.Create(name);
        var bound = BoundOf(codec)!;
        using var dir = new TempDir();
        var magnitude = Gen.Int[bound.MinExponent, bound.MaxExponent].SelectMany(e => Gen.Float[1f, 2f].Select(m => m * MathF.ScaleB(1f, e)));
        var value = Gen.Frequency((8, Gen.Bool.SelectMany(negative => magnitude.Select(v => negative ? -v : v))), (1, Gen.Const(0f)));
        Gen.Int[1, 24].SelectMany(rows => Gen.Int[1, 160].SelectMany(cols => value.Array[rows * cols].Select(values => (rows, cols, values))))
            .Sample(t =>
            {
                var decoded = RoundTrip(codec, t.rows, t.cols, t.values, dir);
                bound.Check(t.values, decoded, t.rows, t.cols, $"{name} [{t.rows}×{t.cols}]");
            }, iter: 40);
    }

    private static float[] RoundTrip(ITensorCodec codec, int rows, int cols, float[] values, TempDir dir)
    {
        var bytes = new byte[values.Length * 4];
        TensorData.FromFloat(values, DType.F32, bytes);
        var source = dir.File($"s{Guid.NewGuid():N}.safetensors");
        new SafetensorsWriter(source).Add("w", DType.F32, [rows, cols], bytes).Commit();
        var path = dir.File($"c{Guid.NewGuid():N}.safetensors");
        using (var file = CheckpointLoader.Open(source))
        using (var view = file.Map(file.Tensors[0]))
            EncodedContainer.Write(path, [new EncodedContainer.Item("w", DType.F32, [rows, cols], codec.Spec, codec.Encode(view, new EncodeOptions()))]);
        using var container = LogicalCheckpoint.Open(path);
        using var decoder = container.OpenDecoder(container.Tensors[0]);
        var decoded = new float[values.Length];
        decoder.ReadRows(0, rows, decoded);
        File.Delete(source);
        File.Delete(path);
        return decoded;
    }

    private static Bound? BoundOf(ITensorCodec codec) => codec switch
    {
        CastCodec => FormatSpec.Parse(codec.Spec).Name switch
        {
            // Round to nearest: half a unit in the last place, at most 2^-(mantissa+1) of the value (normal range).
            "f32" => new Bound(-120, 120, Elementwise((x, _, _) => 0)),
            "bf16" => new Bound(-120, 120, Elementwise((x, _, _) => MathF.Abs(x) * MathF.ScaleB(1, -8))),
            "f16" => new Bound(-14, 14, Elementwise((x, _, _) => MathF.Abs(x) * MathF.ScaleB(1, -11))),
            _ => null,
        },
        EntropyTensorCodec when codec.IsLossless => new Bound(-120, 120, Elementwise((_, _, _) => 0)),
        // vp at its defaults (mant=3, no taper, no floor): the mantissa rounded to nearest at 3 bits, ≤ 2^-4 of the value.
        EntropyTensorCodec when codec.Spec == "vp" => new Bound(-120, 120, Elementwise((x, _, _) => MathF.Abs(x) * MathF.ScaleB(1, -4))),
        BlockTensorCodec { Codec: MxCodec mx } when mx.ScaleRule == MxScaleRule.Floor && mx.Rounding == RoundingMode.NearestEven => MxBound(mx.Element),
        BlockTensorCodec { Codec: GgmlMxfp4Codec } => MxBound(ElementFormat.E2M1) with { MinExponent = -20, MaxExponent = 20 },
        BlockTensorCodec { Codec: NvFp4Codec } => NvFp4Bound(),
        BlockTensorCodec { Codec: NxfpCodec nx } when nx.Rounding == RoundingMode.NearestEven => NxfpBound(nx),
        BlockTensorCodec { Codec: GgmlCodec ggml } => GgmlBound(FormatSpec.Parse(ggml.Spec).Name),
        _ => null,
    };

    /// <summary>A bound per element from the element, its block's largest magnitude and the tensor's.</summary>
    private static Action<float[], float[], int, int, string> Elementwise(Func<float, float, float, double> bound, int blockSize = 1) =>
        (x, y, rows, cols, what) =>
        {
            double tensorMax = x.Max(v => Math.Abs((double)v));
            for (int r = 0; r < rows; r++)
            for (int start = 0; start < cols; start += blockSize)
            {
                int end = Math.Min(cols, start + blockSize);
                float blockMax = 0;
                for (int c = start; c < end; c++) blockMax = MathF.Max(blockMax, MathF.Abs(x[r * cols + c]));
                for (int c = start; c < end; c++)
                {
                    int i = r * cols + c;
                    double limit = bound(x[i], blockMax, (float)tensorMax) * (1 + 1e-6) + 1e-37;
                    double error = Math.Abs((double)x[i] - y[i]);
                    if (!(error <= limit))
                        Assert.Fail($"{what}: element ({r}, {c}) = {x[i]:R} decoded as {y[i]:R}, error {error:G4} > bound {limit:G4} (block max {blockMax:R})");
                }
            }
        };

    /// <summary>The largest gap between neighbouring non-negative values of an element grid.</summary>
    private static double LargestGap(IEnumerable<float> values)
    {
        var sorted = values.Where(v => v >= 0 && float.IsFinite(v)).Select(v => (double)v).Distinct().Order().ToArray();
        double gap = 0;
        for (int i = 1; i < sorted.Length; i++) gap = Math.Max(gap, sorted[i] - sorted[i - 1]);
        return gap;
    }

    private static IEnumerable<float> Grid(ElementFormat e) => Enumerable.Range(0, 1 << e.Bits).Select(e.Decode);

    /// <summary>
    /// OCP MX (scale 2^(⌊log2 amax⌋ − emax), round to nearest, clamp): the scale X lies in (amax/2^(emax+1), amax/2^emax],
    /// so an element inside the grid is off by at most half the largest gap times X, and one beyond Max·X (clamped) by
    /// at most amax − Max·X. Per element: amax · max(gap/2^(emax+1), 1 − Max/2^(emax+1)). E8M0 covers every input
    /// exponent drawn (2^-100..2^100).
    /// </summary>
    private static Bound MxBound(ElementFormat e)
    {
        double top = Math.ScaleB(1, e.Emax + 1);
        double c = Math.Max(LargestGap(Grid(e)) / top, 1 - e.Max / top);
        return new Bound(-100, 100, Elementwise((_, blockMax, _) => c * blockMax, MxCodec.MxBlockSize));
    }

    /// <summary>
    /// NVFP4: tensor scale s = amax_t/2688; block scale q = E4M3(amax_b/(6s)), off by at most 2^-4 of itself (normal) or
    /// 2^-10 (subnormal); elements E2M1 of d = q·s, largest half-gap 1. Inside the grid: ≤ d ≤ amax_b(1 + 2^-4)/6 +
    /// 2^-10·s; clamped at 6d: ≤ amax_b/16 + 6·2^-10·s; a block scale rounded to 0 leaves amax_b &lt; 6·2^-10·s.
    /// </summary>
    private static Bound NvFp4Bound() => new(-60, 60, Elementwise((_, blockMax, tensorMax) =>
        blockMax * (1 + 1.0 / 16) / 6 + 6 * Math.ScaleB(1, -10) * (tensorMax / NvFp4Codec.TensorScaleDivisor), NvFp4Codec.NvBlockSize));

    /// <summary>
    /// NxFP picks the candidate of lowest block squared error, and one of its candidates is the first element format
    /// at its first level and top T with the smallest scale s ≥ amax/T: no element clamps, each is off by at most half the
    /// format's largest gap times s. So the chosen block's squared error is at most 32·(gap/2·s)², and every element's
    /// error at most its square root. Inputs are drawn inside the scale's range (its smallest value to its largest,
    /// times T) and within 2^±60: the block error is summed in float (as the fast kernel must, to match it byte for
    /// byte), and beyond 2^61 its squares overflow (below 2^-60 they underflow), every candidate then ties and the first,
    /// a clamping one, wins — a limit this property found, documented in docs/reliability.md.
    /// </summary>
    private static Bound NxfpBound(NxfpCodec nx)
    {
        var format = nx.Formats[0];
        float top = nx.Tops(0).First();
        double halfGap = LargestGap(Grid(format).Where(v => v <= top)) / 2;
        var scales = Enumerable.Range(0, nx.Scale.MaxCode + 1).Select(c => (double)nx.Scale.Decode(c)).Where(s => s > 0 && double.IsFinite(s)).Order().ToArray();
        int minExponent = Math.Max(-60, (int)Math.Ceiling(Math.Log2(scales[0] * top)) + 4);
        int maxExponent = Math.Min(60, (int)Math.Floor(Math.Log2(scales[^1] * top)) - 1);
        return new Bound(minExponent, maxExponent, (x, y, rows, cols, what) =>
        {
            int b = NxfpCodec.NxBlockSize;
            for (int r = 0; r < rows; r++)
            for (int start = 0; start < cols; start += b)
            {
                int end = Math.Min(cols, start + b);
                double amax = 0, squared = 0;
                for (int c = start; c < end; c++)
                {
                    amax = Math.Max(amax, Math.Abs((double)x[r * cols + c]));
                    double d = (double)x[r * cols + c] - y[r * cols + c];
                    squared += d * d;
                }
                if (amax == 0) { Assert.Equal(0, squared); continue; }
                double s = scales.First(v => v * top >= amax);
                double limit = b * Math.Pow(halfGap * s, 2) * (1 + 1e-5);
                if (!(squared <= limit))
                    Assert.Fail($"{what}: row {r}, block at column {start}: squared error {squared:G4} > bound {limit:G4} (amax {amax:R}, scale {s:R})");
            }
        });
    }

    /// <summary>
    /// llama.cpp's formats (f16 scale d, its rounding ≤ 2^-11 of d, times at most the largest code): Q8_0 d = amax/127,
    /// error ≤ d/2; Q4_0 d = amax/8 (the signed extreme maps to −8), codes up to 7 so the far side clamps by ≤ d; Q5_0
    /// d = amax/16, clamp ≤ d; Q4_1/Q5_1 d = (max − min)/15 or /31 ≤ 2·amax/15 or /31, error ≤ d/2 plus the f16 minimum's
    /// rounding. Inputs stay where f16 scales are normal.
    /// </summary>
    private static Bound? GgmlBound(string name)
    {
        double f16 = Math.ScaleB(1, -11);
        double? c = name switch
        {
            "q8_0" => 1.0 / 254 + 128 * f16 / 127,
            "q4_0" => 1.0 / 8 + 8 * f16 / 8,
            "q5_0" => 1.0 / 16 + 16 * f16 / 16,
            "q4_1" => 1.0 / 15 + 2 * f16 + 2 * f16,
            "q5_1" => 1.0 / 31 + 2 * f16 + 2 * f16,
            _ => null,
        };
        return c is { } k ? new Bound(-8, 8, Elementwise((_, blockMax, _) => k * blockMax, 32)) : null;
    }
}
