using Nanoscale.Tensors;

namespace Nanoscale.Lossless;

/// <summary>Options for <see cref="LosslessCodec"/>. Immutable; share one instance across threads freely.</summary>
public sealed record LosslessOptions
{
    public static LosslessOptions Default { get; } = new();

    /// <summary>
    /// Input bytes per independent chunk (rounded down to whole elements). Smaller chunks adapt their tables more
    /// often and parallelise finer; each costs about 8 bytes of checksum, 4 of directory and one table per coded plane.
    /// </summary>
    public int ChunkSizeBytes { get; init; } = 256 << 10;

    /// <summary>Threads over chunks (default: every core).</summary>
    public Parallelism Parallelism { get; init; }

    /// <summary>
    /// A plane is entropy-coded only when that saves at least this fraction of its raw size (0 = whenever it pays
    /// at all). The default 1% leaves the near-random sign+mantissa plane of bf16 raw (it would save ~0.3%) and so
    /// doubles decode speed for a 0.2% larger stream; see docs/lossless.md for both settings measured.
    /// </summary>
    public double MinimumSavings { get; init; } = 0.01;

    /// <summary>Interleaved rANS states of each coded plane: 0 (the default) chooses by size — <see cref="Rans.WideStates"/>
    /// when a chunk holds at least <see cref="LosslessCodec.WideStreamMinElements"/> elements (the vector decoder's
    /// four chains; the 96 extra state bytes a plane are ≤ 0.2% there), else <see cref="Rans.NarrowStates"/> (small
    /// tensors, where those bytes would show). Tests set 8 or 32 to pin one.</summary>
    internal int InterleavedStates { get; init; }

    internal void Validate()
    {
        if (InterleavedStates != 0 && !Rans.IsStateCount(InterleavedStates))
            throw new ArgumentOutOfRangeException(nameof(InterleavedStates), InterleavedStates, $"must be 0 (by size), {Rans.NarrowStates} or {Rans.WideStates}");
        if (ChunkSizeBytes < 1 || ChunkSizeBytes > LosslessCodec.MaxChunkSizeBytes)
            throw new ArgumentOutOfRangeException(nameof(ChunkSizeBytes), ChunkSizeBytes, $"must be within 1…{LosslessCodec.MaxChunkSizeBytes}");
        if (!(MinimumSavings >= 0 && MinimumSavings < 1))
            throw new ArgumentOutOfRangeException(nameof(MinimumSavings), MinimumSavings, "must be within [0, 1)");
    }
}
