using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>How the runtime uses the machine. Travels with the model; there is no global state (STYLE §4).</summary>
public sealed record RuntimeOptions
{
    /// <summary>Worker threads for matrix products and attention (default: every core).</summary>
    public Parallelism Parallelism { get; init; }

    /// <summary>
    /// Work below this many multiply-adds runs on the calling thread: for tiny models (stories260K has dim 64) the
    /// cost of waking workers exceeds the work.
    /// </summary>
    public long MinParallelMultiplyAdds { get; init; } = 1 << 16;

    /// <summary>
    /// One token's products run on the stored codes where a codec has such a kernel (<see cref="RowDecodedLinearWeight"/>),
    /// instead of decoding rows to floats first. Off: always decode (the reference path the fused kernels are checked against).
    /// </summary>
    public bool FusedKernels { get; init; } = true;

    /// <summary>
    /// Products of up to this many tokens run on the stored codes (with <see cref="FusedKernels"/>): 1 by default (the
    /// generation step; windows decode tiles, so perplexities are the decoding path's); the token factory's steps of
    /// several sequences raise it (<see cref="InferenceSession.StepMany"/>). At most 16.
    /// </summary>
    public int FusedTokens { get; init; } = 1;

    /// <summary>
    /// Windows of any length (a generation prompt) also run on the stored codes, <see cref="FusedTokens"/> at a time,
    /// where the storage multiplies several vectors on its codes with one unpack (the 4-bit integer kernels). Off by
    /// default, so perplexity measures the weights alone (int8 activations would add their own rounding); generation
    /// turns it on for prompts (<see cref="Generation"/>, the token factory, <c>bench --generate</c>).
    /// </summary>
    public bool FusedWindows { get; init; }

    /// <summary>How sessions store their key/value cache: f32 by default (exact), or 16 or 8 bits a number
    /// (<see cref="KvCacheType"/>).</summary>
    public KvCacheType KvCache { get; init; }

    /// <summary>Bytes of <paramref name="numbers"/> cached numbers under <see cref="KvCache"/> (whole rows; a KV budget
    /// counts these).</summary>
    public long KvCacheBytes(long numbers) => KvRows.Bytes(KvCache, numbers);

    public static RuntimeOptions Default { get; } = new();

    /// <summary>Runs <paramref name="body"/> for chunk indices 0..chunks-1, in parallel when the work is large enough.</summary>
    internal void For(int chunks, long multiplyAdds, Action<int> body)
    {
        (multiplyAdds < MinParallelMultiplyAdds ? Parallelism.SingleThread : Parallelism).For(chunks, body);
    }
}
