namespace Nanoscale.Pipeline.Codecs;

/// <summary>
/// Every codec the CLI can name, by the name part of its spec string (SPEC §7, <c>name[:key=value,…]</c>).
/// Each entry's factory receives the whole spec string and parses its own options, so a family's option
/// parsing lives with the family. Unknown names are errors that list what is valid.
/// </summary>
public static class CodecRegistry
{
    public sealed record Entry(string Name, string Description, Func<string, ITensorCodec> Create);

    private static readonly List<Entry> Entries =
    [
        new("f32", "float32 (baseline)", s => NoOptions(s, CastCodec.F32)),
        new("bf16", "bfloat16, round to nearest even (baseline)", s => NoOptions(s, CastCodec.BF16)),
        new("f16", "IEEE half, round to nearest even (baseline)", s => NoOptions(s, CastCodec.F16)),
    ];

    public static IReadOnlyList<Entry> All => Entries;

    /// <summary>The codec a spec string names.</summary>
    /// <exception cref="ArgumentException">Unknown name (the message lists the valid ones) or bad options.</exception>
    public static ITensorCodec Create(string spec)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(spec);
        var name = spec.Split(':', 2)[0].Trim().ToLowerInvariant();
        var entry = Entries.FirstOrDefault(e => e.Name == name)
            ?? throw new ArgumentException($"unknown format \"{name}\"; valid formats: {string.Join(", ", Entries.Select(e => e.Name))}");
        return entry.Create(spec.Trim());
    }

    /// <summary>Adds a codec family (done once at start-up by the family's owner).</summary>
    public static void Register(Entry entry)
    {
        lock (Entries)
        {
            if (Entries.Any(e => e.Name == entry.Name)) return;
            Entries.Add(entry);
        }
    }

    private static ITensorCodec NoOptions(string spec, ITensorCodec codec) =>
        spec.Contains(':') ? throw new ArgumentException($"format \"{codec.Spec}\" takes no options") : codec;
}
