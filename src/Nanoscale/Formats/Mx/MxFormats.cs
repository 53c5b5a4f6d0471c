namespace Nanoscale.Formats.Mx;

/// <summary>
/// The MX rows of the format table (SPEC §4, §7): MXFP8 (E4M3, E5M2), MXFP6 (E2M3, E3M2), MX with FP5 elements,
/// MXFP4 and MXINT2 … MXINT8, each with <c>scale=floor|ceil|mse</c> and <c>round=even|away</c>.
/// </summary>
/// <remarks>Name conventions: <c>mxfp8</c> = <c>mxfp8-e4m3</c> and <c>mxfp6</c> = <c>mxfp6-e2m3</c> (the OCP MX paper's
/// preferred variants: more mantissa for weights).</remarks>
internal static class MxFormats
{
    private static FormatOption ScaleOption { get; } = new("scale", "floor", ["floor", "ceil", "mse"], "MX shared-exponent rule (SPEC §4)");

    public static IEnumerable<FormatTraits> Traits()
    {
        yield return Row("mxfp8-e4m3", ["mxfp8"], ElementFormat.E4M3, "MXFP8: OCP FP8 E4M3 elements, E8M0 scale per 32");
        yield return Row("mxfp8-e5m2", [], ElementFormat.E5M2, "MXFP8: OCP FP8 E5M2 elements, E8M0 scale per 32");
        yield return Row("mxfp6-e2m3", ["mxfp6"], ElementFormat.E2M3, "MXFP6: FP6 E2M3 elements, E8M0 scale per 32");
        yield return Row("mxfp6-e3m2", [], ElementFormat.E3M2, "MXFP6: FP6 E3M2 elements, E8M0 scale per 32");
        // MX with 5-bit elements: not in the OCP spec; the MX baseline of the NxFP ablation at 5 bits (docs/nxfp.md).
        yield return Row("mxfp5-e2m2", [], ElementFormat.Minifloat(2, 2), "MX with FP5 E2M2 elements (not OCP), E8M0 scale per 32");
        yield return Row("mxfp5-e3m1", [], ElementFormat.Minifloat(3, 1), "MX with FP5 E3M1 elements (not OCP), E8M0 scale per 32");
        yield return Row("mxfp4", [], ElementFormat.E2M1, "MXFP4: FP4 E2M1 elements, E8M0 scale per 32");
        for (int n = 8; n >= 2; n--)
            yield return Row($"mxint{n}", [], ElementFormat.Int(n),
                $"MXINT{n}: {n}-bit two's complement elements (code·2^-{n - 2}, symmetric), E8M0 scale per 32");
    }

    private static FormatTraits Row(string name, string[] aliases, ElementFormat element, string summary) =>
        new(name, aliases, summary, element.Bits + 8.0 / MxCodec.MxBlockSize,
            element.Encoding == ElementEncoding.SignMagnitude ? [ScaleOption, FormatOption.Round, FormatOption.Zero] : [ScaleOption, FormatOption.Round],
            (spec, canonical) => new MxCodec(element, ScaleRule(spec), FormatOption.Rounding(spec), canonical, FormatOption.SignedZero(spec)));

    private static MxScaleRule ScaleRule(FormatSpec spec) => spec["scale"] switch
    {
        null or "floor" => MxScaleRule.Floor,
        "ceil" => MxScaleRule.Ceil,
        "mse" => MxScaleRule.Mse,
        var other => throw new FormatSpecException(spec.ToString(), $"unknown scale rule '{other}'"),
    };
}
