using Nanoscale.Formats;
using Nanoscale.Formats.E8;
using Nanoscale.Formats.Ggml;
using Nanoscale.Formats.Mx;
using Nanoscale.Formats.Nv;
using Nanoscale.Formats.Nx;

namespace Nanoscale.Codecs;

/// <summary>
/// The one format table of the library (SPEC §7) and its front door: every name a spec string can use, with the rows
/// contributed by each format's folder. Block formats (MX, NVFP4, NxFP) come from <c>Formats/</c> and gain the
/// container option <c>entropy=none|rans</c> here; casts, <c>lossless</c>, <c>vp</c> and <c>caldera</c> are container
/// codecs of this room. Adding a block format = its folder under <c>Formats/</c> plus one line in <see cref="Table"/>.
/// </summary>
public static class CodecRegistry
{
    /// <summary>The container option of every block format (SPEC §10): <c>entropy=rans</c> codes its stored codes and
    /// scales losslessly as well (<see cref="BlockTensorCodec"/>).</summary>
    // Declared before Table: static initializers run in text order.
    private static FormatOption EntropyOption { get; } = new("entropy", "none", ["none", "rans"],
        "rans: code the stored blocks and scales losslessly as well (same values, fewer bits)");

    /// <summary>The second container option of block formats: <c>ldlq=1</c> rounds each linear weight that has a
    /// calibration Hessian by LDLQ (GPTQ's rounding, docs/caldera.md) into the format's own stored layout.</summary>
    private static FormatOption LdlqOption { get; } = new("ldlq", "0", ["0", "1", "act"],
        "1: with --calib, round each linear weight by LDLQ (GPTQ) against its calibration Hessian; same stored layout, any reader decodes it; act: the same in act-order");

    /// <summary>The table: every format, in the order help texts list them.</summary>
    public static FormatRegistry Table { get; } = new(
    [
        .. MxFormats.Traits().Select(row => WithContainerOptions(row, ldlq: true)),
        .. NvFp4Formats.Traits().Select(row => WithContainerOptions(row, ldlq: true)),
        .. NxfpFormats.Traits().Select(row => WithContainerOptions(row, ldlq: true)),
        .. GgmlFormats.Traits().Select(row => WithContainerOptions(row, ldlq: false)),
        .. E8Formats.Traits().Select(row => WithContainerOptions(row, ldlq: true)),
        .. CastCodec.Traits(),
        .. EntropyTensorCodec.Traits(),
        CalderaTensorCodec.Traits,
    ]);

    /// <summary>All accepted names (canonical and aliases), sorted.</summary>
    public static IEnumerable<string> Names => Table.Names;

    /// <summary>The codec a spec string names.</summary>
    /// <exception cref="FormatSpecException">Unknown name, key or value (the message lists the valid ones).</exception>
    public static ITensorCodec Create(string spec) => Create(FormatSpec.Parse(spec));

    /// <summary>The codecs that only read (a GGUF file's K-quants): not in <see cref="Table"/>, since nothing writes them.</summary>
    private static readonly Dictionary<string, Func<ITensorCodec>> ReadOnly = new(StringComparer.Ordinal)
    {
        ["q4_K"] = () => new BlockTensorCodec(new GgmlKQuantCodec(GgmlKQuant.Q4_K, "q4_K")),
        ["q5_K"] = () => new BlockTensorCodec(new GgmlKQuantCodec(GgmlKQuant.Q5_K, "q5_K")),
        ["q6_K"] = () => new BlockTensorCodec(new GgmlKQuantCodec(GgmlKQuant.Q6_K, "q6_K")),
    };

    /// <summary>The codec that reads a stored tensor: any spec of the table, or one of the read-only ggml K-quants a
    /// GGUF file names (<c>q4_K</c>, <c>q5_K</c>, <c>q6_K</c>).</summary>
    internal static ITensorCodec CreateForReading(string spec) => ReadOnly.TryGetValue(spec, out var create) ? create() : Create(spec);

    /// <summary>The codec of a parsed (possibly nested) spec.</summary>
    public static ITensorCodec Create(FormatSpec spec)
    {
        if (spec[EntropyOption.Key] is { } entropy)
        {
            if (Table.Contains(spec.Name) && !Table.Find(spec.Name).Options.Contains(EntropyOption))
                throw new FormatSpecException(spec.ToString(), $"'entropy={entropy}' applies to block formats only");
            if (!EntropyOption.Values.Contains(entropy.Trim().ToLowerInvariant()))
                throw new FormatSpecException(spec.ToString(), "the entropy option takes one value: 'entropy=rans'");
        }
        if (spec[LdlqOption.Key] is { } ldlq && Table.Contains(spec.Name) && !Table.Find(spec.Name).Options.Contains(LdlqOption))
            throw new FormatSpecException(spec.ToString(), $"'ldlq={ldlq}' applies to the MX, NVFP4 and NxFP formats only: LDLQ rounds element by " +
                "element onto a block's levels, and ggml's formats keep their scale inside the block, e8's codes index 8-dimensional points");
        return (ITensorCodec)Table.Create(spec);
    }

    /// <summary>The block codec a spec names (without entropy coding).</summary>
    /// <exception cref="FormatSpecException">As <see cref="Create(string)"/>, or the format is not a plain block format.</exception>
    public static IBlockCodec CreateBlockCodec(string spec) =>
        Create(spec) is BlockTensorCodec { EntropyCoded: false } block
            ? block.Codec
            : throw new FormatSpecException(spec, "this format is not a block format (or is entropy-coded)");

    /// <summary>A block-format row as a container row: the format's own options, then <c>entropy</c> and (for formats
    /// LDLQ can round, <paramref name="ldlq"/>) <c>ldlq</c>; the factory builds the block codec from the spec without
    /// them and wraps it.</summary>
    private static FormatTraits WithContainerOptions(FormatTraits row, bool ldlq) => row with
    {
        Options = ldlq ? [.. row.Options, EntropyOption, LdlqOption] : [.. row.Options, EntropyOption],
        Create = (spec, canonical) =>
        {
            FormatSpec inner = spec.Without(EntropyOption.Key).Without(LdlqOption.Key);
            var codec = (IBlockCodec)row.Create(inner, inner.ToString());
            bool ldlq = spec[LdlqOption.Key] is "1" or "act";
            if (ldlq && !LowRank.BlockGrid.Accepts(codec, out string why))
                throw new FormatSpecException(spec.ToString(), $"ldlq=1 needs a format LDLQ can round element by element ({why}); MX, NVFP4, NxFP and E8 formats can");
            return new BlockTensorCodec(codec, entropyCoded: spec[EntropyOption.Key] == "rans", ldlq: ldlq,
                actOrder: spec[LdlqOption.Key] == "act");
        },
    };
}
