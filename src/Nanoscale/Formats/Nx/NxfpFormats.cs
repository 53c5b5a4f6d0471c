using System.Globalization;

namespace Nanoscale.Formats.Nx;

/// <summary>
/// The NxFP rows of the format table (SPEC §6, §7): <c>nxfp3</c> … <c>nxfp8</c>, whose defaults are the presets chosen by
/// the ablation in docs/nxfp.md, and the option parser that turns <c>nm=</c>, <c>se=</c>, <c>bias=</c>, <c>am=</c>,
/// <c>cr=</c>, <c>round=</c> into an <see cref="NxfpCodec"/>.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item><c>nm=k</c>: NanoMantissa, k mantissa bits in the shared scale (0 = power-of-two scale, as MX).</item>
/// <item><c>se=x|auto</c>: scale exponent bits. <c>auto</c> fits the 8-bit MX budget: x = 8 − k − selector bits, or,
/// when that leaves fewer than 4 exponent bits, a 16-bit word with x = min(8, 16 − k − selector bits).</item>
/// <item><c>bias=b|auto</c>: scale exponent bias. <c>auto</c> puts the top binade at 2^8 (bias = 2^x − 9) so scales
/// reach down to 2^(9 − 2^x), within float's range: bias = max(2^x − 128, min(2^x − 9, 126)) (x = 8: 128, so the
/// scale spans 2^−128 … 2^127 like E8M0).</item>
/// <item><c>am=F1|F2|…</c>: Adaptive Microexponent candidates (ExMy of the preset's width, e.g. <c>e2m1|e1m2|e3m0</c>);
/// one format = AM off.</item>
/// <item><c>cr=off|L1|L2|…</c>: Code Recycling levels in element-grid units: numbers, <c>gap</c> (midpoint of the
/// two largest magnitudes: 5 for E2M1), <c>ext</c> (max + the top step: 8 for E2M1), their negatives <c>-gap</c>,
/// <c>-ext</c>, and <c>auto</c> = <c>gap|ext</c>. One level = fixed recycling (no selector bits); n levels = a
/// ceil(log2 n)-bit selector per block. Symbolic levels are resolved per candidate format; numbers apply to all.</item>
/// <item><c>round=even|away</c>: element tie rule.</item>
/// </list>
/// </remarks>
internal static class NxfpFormats
{
    /// <summary>A named NxFP configuration: its width and option defaults.</summary>
    private sealed record Preset(string Name, int Bits, string Nm, string Se, string Bias, string Am, string Cr, string Summary);

    // The presets (8-bit metadata budget, as MX) were chosen by the ablation in docs/nxfp.md.
    private static readonly Preset[] Presets =
    [
        new("nxfp3", 3, "2", "auto", "auto", "e2m0", "auto", "NxFP3: E2M0, UE5M2 scale + 1 recycling bit (-0 = 3 or 6) per 32 (3.25 bpw)"),
        new("nxfp4", 4, "2", "auto", "auto", "e2m1|e1m2", "gap", "NxFP4: E2M1|E1M2, UE5M2 scale + 1 format bit per 32, -0 = 5 / 3.25 (4.25 bpw)"),
        new("nxfp5", 5, "2", "auto", "auto", "e2m2|e1m3", "gap", "NxFP5: E2M2|E1M3, UE5M2 scale + 1 format bit per 32, -0 = 6.5 / 3.625 (5.25 bpw)"),
        new("nxfp6", 6, "2", "auto", "auto", "e2m3|e1m4", "gap", "NxFP6: E2M3|E1M4, UE5M2 scale + 1 format bit per 32, -0 = 7.25 / 3.8125 (6.25 bpw)"),
        new("nxfp7", 7, "0", "auto", "auto", "e3m3", "off", "NxFP7: 7-bit elements (no preset tuning), 8-bit metadata per 32 (7.25 bpw)"),
        new("nxfp8", 8, "0", "auto", "auto", "e4m3", "off", "NxFP8: 8-bit elements (no preset tuning), 8-bit metadata per 32 (8.25 bpw)"),
        new("nxfp4-m16", 4, "4", "8", "auto", "e2m1|e1m2|e3m0", "auto",
            "NxFP4 with 16 metadata bits per 32 (4.5 bpw, as NVFP4): UE8M4 scale, 2 format bits, 1 recycling bit"),
    ];

    /// <summary>The NxFP rows of the format table.</summary>
    public static IEnumerable<FormatTraits> Traits()
    {
        foreach (Preset p in Presets)
        {
            NxfpCodec defaults = Build(p, FormatSpec.Parse(p.Name), p.Name);
            yield return new FormatTraits(p.Name, [], p.Summary,
                p.Bits + 8.0 * defaults.ScaleBytesPerBlock / NxfpCodec.NxBlockSize,
                [
                    new FormatOption("nm", p.Nm, [], "NanoMantissa: mantissa bits of the shared UExMy scale"),
                    new FormatOption("se", p.Se, [], "scale exponent bits (auto: fit the 8-bit metadata budget)"),
                    new FormatOption("bias", p.Bias, [], "scale exponent bias (auto: top binade 2^8)"),
                    new FormatOption("am", p.Am, [], $"Adaptive Microexponent: {p.Bits}-bit ExMy candidates, e.g. e2m1|e1m2"),
                    new FormatOption("cr", p.Cr, [], "Code Recycling: off, or levels (numbers, gap, ext, -gap, -ext, auto)"),
                    FormatOption.Round,
                ],
                (spec, _) => Build(p, spec, null));
        }
    }

    private static NxfpCodec Build(Preset p, FormatSpec spec, string? canonical)
    {
        string text = spec.ToString();
        string nmText = (spec["nm"] ?? p.Nm).Trim().ToLowerInvariant();
        string seText = (spec["se"] ?? p.Se).Trim().ToLowerInvariant();
        string biasText = (spec["bias"] ?? p.Bias).Trim().ToLowerInvariant();
        string amText = Normalize(spec["am"] ?? p.Am);
        string crText = Normalize(spec["cr"] ?? p.Cr);
        string roundText = (spec["round"] ?? "even").Trim().ToLowerInvariant();
        RoundingMode rounding = FormatOption.Rounding(spec);

        int nm = ParseInt(text, "nm", nmText, 0, 8);
        var formats = amText.Split('|').Select(name => ParseFormat(text, p.Bits, name)).ToList();
        if (formats.Select(f => f.Name).Distinct().Count() != formats.Count)
            throw new FormatSpecException(text, $"am lists a format twice ('{amText}')");
        List<IReadOnlyList<float>>? levels = crText is "off" or "none" ? null : ParseLevels(text, crText, formats);
        int selectorBits = Bits(formats.Count) + Bits(levels?[0].Count ?? 1);
        int se;
        if (seText == "auto")
        {
            int total = 8 - nm - selectorBits >= 4 ? 8 : 16;
            se = Math.Min(8, total - nm - selectorBits);
            if (se < 1)
                throw new FormatSpecException(text, $"nm={nm} and {selectorBits} selector bits leave no room for the scale exponent");
        }
        else
            se = ParseInt(text, "se", seText, 1, 8);
        if (se + nm + selectorBits > 16)
            throw new FormatSpecException(text, $"the metadata word needs {se + nm + selectorBits} bits (se {se} + nm {nm} + selectors {selectorBits}); at most 16");
        int bias = biasText == "auto"
            ? Math.Max((1 << se) - 128, Math.Min((1 << se) - 9, 126))
            : ParseInt(text, "bias", biasText, -64, 160);

        canonical ??= Canonical(p, [("nm", nmText, p.Nm), ("se", seText, p.Se), ("bias", biasText, p.Bias),
            ("am", amText, Normalize(p.Am)), ("cr", crText, Normalize(p.Cr)), ("round", roundText, "even")]);
        try
        {
            return new NxfpCodec(p.Bits, formats, nm, se, bias, levels, rounding, canonical);
        }
        catch (ArgumentException e)
        {
            throw new FormatSpecException(text, e.Message);
        }
    }

    private static string Canonical(Preset p, (string Key, string Value, string Default)[] options)
    {
        var parts = options.Where(o => o.Value != o.Default).Select(o => $"{o.Key}={o.Value}").ToList();
        return parts.Count == 0 ? p.Name : $"{p.Name}:{string.Join(',', parts)}";
    }

    private static string Normalize(string value) =>
        string.Join('|', value.Split('|').Select(s => s.Trim().ToLowerInvariant()));

    private static int Bits(int choices) => choices <= 1 ? 0 : 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)(choices - 1));

    private static int ParseInt(string spec, string key, string value, int min, int max) =>
        int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) && n >= min && n <= max
            ? n
            : throw new FormatSpecException(spec, $"'{value}' is not a valid {key}; expected an integer {min}..{max}{(key is "se" or "bias" ? " or auto" : "")}");

    private static ElementFormat ParseFormat(string spec, int bits, string name)
    {
        if (name.Length >= 4 && name[0] == 'e' && name.IndexOf('m') > 1
            && int.TryParse(name.AsSpan(1, name.IndexOf('m') - 1), NumberStyles.None, CultureInfo.InvariantCulture, out int x)
            && int.TryParse(name.AsSpan(name.IndexOf('m') + 1), NumberStyles.None, CultureInfo.InvariantCulture, out int y)
            && 1 + x + y == bits)
            return ElementFormat.Minifloat(x, y);
        var valid = Enumerable.Range(0, bits).Select(e => $"e{e}m{bits - 1 - e}");
        throw new FormatSpecException(spec, $"'{name}' is not a {bits}-bit element format for am; valid: {string.Join(", ", valid)}");
    }

    private static List<IReadOnlyList<float>> ParseLevels(string spec, string text, List<ElementFormat> formats)
    {
        var tokens = text.Split('|').SelectMany(t => t == "auto" ? ["gap", "ext"] : new[] { t }).ToList();
        var result = new List<IReadOnlyList<float>>();
        foreach (ElementFormat f in formats)
        {
            ReadOnlySpan<float> grid = f.DecodeTable;
            float max = f.Max, below = grid[f.MaxMagnitudeCode - 1];
            var levels = new List<float>();
            foreach (string token in tokens)
            {
                float level = token switch
                {
                    "gap" => (below + max) / 2,
                    "-gap" => -(below + max) / 2,
                    "ext" => max + (max - below),
                    "-ext" => -(max + (max - below)),
                    _ => float.TryParse(token, NumberStyles.Float, CultureInfo.InvariantCulture, out float v) && float.IsFinite(v)
                        ? v
                        : throw new FormatSpecException(spec, $"'{token}' is not a valid cr level; expected off, a number, gap, ext, -gap, -ext or auto"),
                };
                if (level == 0 || grid.Contains(level))
                    throw new FormatSpecException(spec, $"cr level {level.ToString(CultureInfo.InvariantCulture)} is already a {f.Name} value; a recycled level must be new");
                if (levels.Contains(level))
                    throw new FormatSpecException(spec, $"cr lists level {level.ToString(CultureInfo.InvariantCulture)} twice for {f.Name}");
                levels.Add(level);
            }
            result.Add(levels);
        }
        return result;
    }
}
