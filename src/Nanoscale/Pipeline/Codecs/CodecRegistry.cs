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
        LowRank.CalderaTensorCodec.Traits);

    public static IEnumerable<string> Names => Formats.Names;

    /// <summary>The codec a spec string names.</summary>
    /// <exception cref="FormatSpecException">Unknown name, key or value (the message lists the valid ones).</exception>
    public static ITensorCodec Create(string spec) => Formats.Create(spec) switch
    {
        ITensorCodec codec => codec,
        IBlockCodec block => new BlockTensorCodec(block),
        var other => throw new FormatSpecException(spec, $"{other.GetType().Name} cannot be stored in a checkpoint"),
    };

    private static FormatTraits Cast(string name, CastCodec codec, string summary, double bits) =>
        new(name, [], summary, bits, [], (_, _) => codec);
}
