using Nanoscale.Formats.Mx;
using Nanoscale.Formats.Nv;
using Nanoscale.Formats.Nx;

namespace Nanoscale.Formats;

/// <summary>
/// The table of named formats (SPEC §7) and the spec-string front door: <see cref="Create"/> parses, validates names,
/// keys and values against the table, and builds the codec with its canonical spec string.
/// </summary>
/// <remarks>
/// Immutable. <see cref="Builtin"/> holds the formats this assembly defines; other families (NxFP, lossless, vp,
/// caldera) add their rows to <see cref="BuiltinTraits"/> or build an extended registry with <see cref="With"/>.
/// Name conventions: <c>mxfp8</c> = <c>mxfp8-e4m3</c> and <c>mxfp6</c> = <c>mxfp6-e2m3</c> (the OCP MX paper's
/// preferred variants: more mantissa for weights); aliases resolve to the canonical name in <see cref="ICodec.Spec"/>.
/// </remarks>
public sealed class FormatRegistry
{
    private readonly Dictionary<string, FormatTraits> _byName = new(StringComparer.Ordinal);

    public FormatRegistry(IEnumerable<FormatTraits> traits)
    {
        var list = new List<FormatTraits>();
        foreach (FormatTraits t in traits)
        {
            foreach (string name in t.Aliases.Prepend(t.Name))
                if (!_byName.TryAdd(name, t))
                    throw new ArgumentException($"format name '{name}' is registered twice", nameof(traits));
            list.Add(t);
        }
        Traits = list;
    }

    /// <summary>The built-in formats.</summary>
    public static FormatRegistry Builtin { get; } = new(BuiltinTraits());

    /// <summary>Every registered format, in registration order.</summary>
    public IReadOnlyList<FormatTraits> Traits { get; }

    /// <summary>All accepted names (canonical and aliases), sorted.</summary>
    public IEnumerable<string> Names => _byName.Keys.Order(StringComparer.Ordinal);

    /// <summary>A new registry with <paramref name="more"/> added.</summary>
    public FormatRegistry With(params FormatTraits[] more) => new(Traits.Concat(more));

    /// <summary>The traits for a canonical name or alias.</summary>
    /// <exception cref="FormatSpecException">Unknown name (the message lists the valid names).</exception>
    public FormatTraits Find(string name) =>
        _byName.TryGetValue(name.Trim().ToLowerInvariant(), out FormatTraits? t)
            ? t
            : throw new FormatSpecException(name, $"unknown format '{name}'; valid names: {string.Join(", ", Names)}");

    /// <summary>Parses <paramref name="spec"/> and builds its codec.</summary>
    /// <exception cref="FormatSpecException">Bad syntax, unknown name, key or value; the message lists what is valid.</exception>
    public ICodec Create(string spec)
    {
        FormatSpec parsed = FormatSpec.Parse(spec);
        if (!_byName.TryGetValue(parsed.Name, out FormatTraits? traits))
            throw new FormatSpecException(spec, $"unknown format '{parsed.Name}'; valid names: {string.Join(", ", Names)}");
        var canonical = new List<KeyValuePair<string, string>>();
        foreach (var (key, value) in parsed.Options)
        {
            FormatOption? option = traits.Options.FirstOrDefault(o => o.Key == key);
            if (option is null)
                throw new FormatSpecException(spec, traits.Options.Count == 0
                    ? $"'{traits.Name}' takes no options (found '{key}')"
                    : $"unknown option '{key}' for '{traits.Name}'; valid keys: " +
                      string.Join(", ", traits.Options.Select(o => $"{o.Key} ({string.Join('|', o.Values)}, default {o.Default})")));
            if (option.Values.Count > 0 && !option.Values.Contains(value.ToLowerInvariant()))
                throw new FormatSpecException(spec,
                    $"'{value}' is not a valid {key} for '{traits.Name}'; valid values: {string.Join(", ", option.Values)}");
        }
        // Canonical form: canonical name, then non-default options in the table's key order.
        foreach (FormatOption option in traits.Options)
        {
            string? value = parsed[option.Key];
            if (value is null) continue;
            if (option.Values.Count > 0) value = value.ToLowerInvariant();
            if (value != option.Default)
                canonical.Add(new(option.Key, value));
        }
        string canonicalSpec = canonical.Count == 0
            ? traits.Name
            : $"{traits.Name}:{string.Join(',', canonical.Select(o => $"{o.Key}={o.Value}"))}";
        return traits.Create(FormatSpec.Parse(canonicalSpec), canonicalSpec);
    }

    /// <summary>Parses <paramref name="spec"/> and builds a block codec.</summary>
    /// <exception cref="FormatSpecException">As <see cref="Create"/>, or the format is not a block codec.</exception>
    public IBlockCodec CreateBlockCodec(string spec) =>
        Create(spec) as IBlockCodec
        ?? throw new FormatSpecException(spec, "this format is not a block codec");

    // ---- built-in table ----------------------------------------------------------------------------------------

    private static FormatOption ScaleOption => new("scale", "floor", ["floor", "ceil", "mse"],
        "MX shared-exponent rule (SPEC §4)");

    private static FormatOption RoundOption => new("round", "even", ["even", "away"],
        "element rounding: ties to even, or ties away from zero");

    /// <summary>The built-in rows: MX (FP8, FP6, FP4, INT2..8), NVFP4 and NxFP (nxfp3..nxfp8, docs/nxfp.md).</summary>
    public static IEnumerable<FormatTraits> BuiltinTraits()
    {
        yield return Mx("mxfp8-e4m3", ["mxfp8"], ElementFormat.E4M3, "MXFP8: OCP FP8 E4M3 elements, E8M0 scale per 32");
        yield return Mx("mxfp8-e5m2", [], ElementFormat.E5M2, "MXFP8: OCP FP8 E5M2 elements, E8M0 scale per 32");
        yield return Mx("mxfp6-e2m3", ["mxfp6"], ElementFormat.E2M3, "MXFP6: FP6 E2M3 elements, E8M0 scale per 32");
        yield return Mx("mxfp6-e3m2", [], ElementFormat.E3M2, "MXFP6: FP6 E3M2 elements, E8M0 scale per 32");
        // MX with 5-bit elements: not in the OCP spec; the MX baseline of the NxFP ablation at 5 bits (docs/nxfp.md).
        yield return Mx("mxfp5-e2m2", [], ElementFormat.Minifloat(2, 2), "MX with FP5 E2M2 elements (not OCP), E8M0 scale per 32");
        yield return Mx("mxfp5-e3m1", [], ElementFormat.Minifloat(3, 1), "MX with FP5 E3M1 elements (not OCP), E8M0 scale per 32");
        yield return Mx("mxfp4", [], ElementFormat.E2M1, "MXFP4: FP4 E2M1 elements, E8M0 scale per 32");
        for (int n = 8; n >= 2; n--)
            yield return Mx($"mxint{n}", [], ElementFormat.Int(n),
                $"MXINT{n}: {n}-bit two's complement elements (code·2^-{n - 2}, symmetric), E8M0 scale per 32");
        yield return new FormatTraits("nvfp4", [], "NVFP4: E2M1 elements, UE4M3 scale per 16, FP32 scale per tensor",
            4.5, [RoundOption], (spec, canonical) => new NvFp4Codec(ParseRounding(spec), canonical));
        foreach (FormatTraits nxfp in NxfpFormats.Traits())
            yield return nxfp;
    }

    private static FormatTraits Mx(string name, string[] aliases, ElementFormat element, string summary) =>
        new(name, aliases, summary, element.Bits + 8.0 / MxCodec.MxBlockSize, [ScaleOption, RoundOption],
            (spec, canonical) => new MxCodec(element, ParseScaleRule(spec), ParseRounding(spec), canonical));

    private static MxScaleRule ParseScaleRule(FormatSpec spec) => spec["scale"] switch
    {
        null or "floor" => MxScaleRule.Floor,
        "ceil" => MxScaleRule.Ceil,
        "mse" => MxScaleRule.Mse,
        var other => throw new FormatSpecException(spec.ToString(), $"unknown scale rule '{other}'"),
    };

    private static RoundingMode ParseRounding(FormatSpec spec) => spec["round"] switch
    {
        null or "even" => RoundingMode.NearestEven,
        "away" => RoundingMode.NearestAway,
        var other => throw new FormatSpecException(spec.ToString(), $"unknown rounding '{other}'"),
    };
}
