using Nanoscale.Formats;

namespace Nanoscale.Pipeline.Codecs;

/// <summary>
/// The codecs the CLI can name: the one format table (<see cref="FormatRegistry"/>, SPEC §7) extended with the
/// container-level codecs (casts; lossless; caldera). Spec strings are parsed and validated by the table; unknown names,
/// keys or values are errors that list what is valid.
/// </summary>
public static class CodecRegistry
{
    public static FormatRegistry Formats { get; } = FormatRegistry.Builtin.With(
        Cast("f32", CastCodec.F32, "float32 (baseline)", 32),
        Cast("bf16", CastCodec.BF16, "bfloat16, round to nearest even (baseline)", 16),
        Cast("f16", CastCodec.F16, "IEEE half, round to nearest even (baseline)", 16),
        new FormatTraits("lossless", [], "bit-exact: byte planes coded with rANS (any dtype; ~10.6 bpw on bf16 weights)", 10.6, [],
            (_, _) => EntropyTensorCodec.Lossless),
        new FormatTraits("vp", [], "variable precision: mantissa rounded to m(e) bits, exponent floor, then rANS-coded (SPEC §10)", 0,
        [
            new FormatOption("mant", "3", [], "mantissa bits kept near the typical magnitude"),
            new FormatOption("floor", "0", [], "biased exponents below this flush to zero"),
            new FormatOption("taper", "0", [], "mantissa bits dropped per binade beyond the window (0 = uniform)"),
            new FormatOption("width", "2", [], "binades each side of the centre that keep all bits"),
            new FormatOption("center", "", [], "biased exponent of the centre (default: each tensor's most frequent)"),
        ], (_, canonical) => EntropyTensorCodec.VariablePrecision(canonical)),
        LowRank.CalderaTensorCodec.Traits);

    public static IEnumerable<string> Names => Formats.Names;

    /// <summary>The codec a spec string names.</summary>
    /// <exception cref="FormatSpecException">Unknown name, key or value (the message lists the valid ones).</exception>
    /// <remarks>
    /// Any block format also takes <c>entropy=rans</c> (e.g. <c>mxfp4:entropy=rans</c>): its stored codes and scales
    /// are then coded losslessly as well (<see cref="BlockTensorCodec"/>).
    /// </remarks>
    public static ITensorCodec Create(string spec)
    {
        var (inner, entropy) = SplitEntropyOption(spec);
        var created = Formats.Create(inner);
        if (entropy && created is not IBlockCodec)
            throw new FormatSpecException(spec, $"'{BlockTensorCodec.EntropyOption}' applies to block formats only");
        return created switch
        {
            ITensorCodec codec => codec,
            IBlockCodec block => new BlockTensorCodec(block, entropy),
            var other => throw new FormatSpecException(spec, $"{other.GetType().Name} cannot be stored in a checkpoint"),
        };
    }

    /// <summary>Removes the container-level <c>entropy=…</c> option, which the format table does not know.</summary>
    private static (string Inner, bool Entropy) SplitEntropyOption(string spec)
    {
        int colon = spec.IndexOf(':');
        if (colon < 0) return (spec, false);
        var options = spec[(colon + 1)..].Split(',', StringSplitOptions.TrimEntries);
        var entropy = options.Where(o => o.StartsWith("entropy=", StringComparison.OrdinalIgnoreCase)).ToList();
        if (entropy.Count == 0) return (spec, false);
        if (entropy.Count > 1 || !entropy[0].Equals(BlockTensorCodec.EntropyOption, StringComparison.OrdinalIgnoreCase))
            throw new FormatSpecException(spec, $"the entropy option takes one value: '{BlockTensorCodec.EntropyOption}'");
        var rest = options.Where(o => !o.StartsWith("entropy=", StringComparison.OrdinalIgnoreCase)).ToList();
        return (rest.Count == 0 ? spec[..colon] : $"{spec[..colon]}:{string.Join(',', rest)}", true);
    }

    private static FormatTraits Cast(string name, CastCodec codec, string summary, double bits) =>
        new(name, [], summary, bits, [], (_, _) => codec);
}
