namespace Nanoscale.Runtime;

/// <summary>
/// The keys and values of a sequence's first positions, held once and read by every session that begins with the same
/// tokens (a system prompt shared by many requests: vLLM's prefix caching and llama.cpp's shared prompt do the same
/// with blocks of the cache). Immutable once made: a session that references it (<see cref="InferenceSession.Prefix"/>)
/// writes its own positions after it into its own rows, and attention reads the prefix's rows, then its own. The
/// positions are a whole number of <see cref="Granule"/>, so a step's attention scores eight positions at a time in the
/// same groups as over one contiguous cache: a session on a prefix computes exactly what a session holding a copy of it
/// does (<c>SharedPrefixTests</c>).
/// </summary>
internal sealed class KvPrefix
{
    /// <summary>Positions come in whole groups of this many (the attention row's score groups).</summary>
    public const int Granule = 8;

    internal KvPrefix(LlamaModel model, int[] tokens, KvRows[] keys, KvRows[] values) : this(model, tokens, keys, values, null)
    {
    }

    private KvPrefix(LlamaModel model, int[] tokens, KvRows[] keys, KvRows[] values, KvPrefix? root)
    {
        if (tokens.Length == 0 || tokens.Length % Granule != 0)
            throw new ArgumentException($"a shared beginning of {tokens.Length} positions; it must be a positive multiple of {Granule}", nameof(tokens));
        Model = model;
        Tokens = tokens;
        Keys = keys;
        Values = values;
        Root = root ?? this;
        Bytes = root?.Bytes ?? model.Options.KvCacheBytes(2L * model.Config.Layers * tokens.Length * model.Config.KvDim);
    }

    /// <summary>The first <paramref name="positions"/> of this one (a whole number of <see cref="Granule"/>, fewer than
    /// it holds) as a shared beginning of their own, reading this one's rows: nothing is copied (a prompt that shares
    /// less of the system message than another did).</summary>
    public KvPrefix View(int positions)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(positions, Positions);
        return new KvPrefix(Model, Tokens[..positions], Keys, Values, Root);
    }

    /// <summary>The shared beginning whose rows these are: itself, or the longer one a <see cref="View"/> reads. Kept,
    /// pinned and counted are the roots (a view's request counts its root's bytes).</summary>
    public KvPrefix Root { get; }

    public LlamaModel Model { get; }

    /// <summary>The tokens whose keys and values it holds, one per position.</summary>
    public int[] Tokens { get; }

    public int Positions => Tokens.Length;

    /// <summary>Per layer, at least <see cref="Positions"/> rows (a view's are its root's).</summary>
    public KvRows[] Keys { get; }

    public KvRows[] Values { get; }

    /// <summary>Key/value bytes its rows hold (every layer's keys and values; a view's, its root's).</summary>
    public long Bytes { get; }

    /// <summary>Admitted requests counting it (a root) in their KV budget (<see cref="SessionPool.PinPrefix"/>), views'
    /// included; changed under the pool's lock.</summary>
    internal int Pins;

    /// <summary>The longest multiple of <see cref="Granule"/> not above <paramref name="positions"/>.</summary>
    public static int Whole(int positions) => positions / Granule * Granule;
}
