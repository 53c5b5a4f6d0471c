using Nanoscale.Tensors;

namespace Nanoscale.Formats;

/// <summary>What to do with a NaN or ±Inf weight (SPEC §4).</summary>
public enum NonFinitePolicy
{
    /// <summary>Refuse: throw <see cref="NonFiniteValueException"/> naming the element index (default).</summary>
    Throw,

    /// <summary>Keep going: the block's scale becomes the scale format's NaN code and its element codes are 0,
    /// so the whole block decodes to NaN.</summary>
    PassThrough,
}

/// <summary>Which implementation of a codec runs. All produce byte-identical output.</summary>
public enum CodecKernel
{
    /// <summary>Fastest available: vectorized (Vector256/AVX2) where supported, else <see cref="Scalar"/>.</summary>
    Fast,

    /// <summary>The fast bit-manipulation algorithm without vector instructions.</summary>
    Scalar,

    /// <summary>The plain reference (table search in double precision); slow, single-threaded, obviously correct.</summary>
    Reference,
}

/// <summary>Run-time options of a codec: they never change the stored bytes (what does, such as the rounding mode
/// and the scale rule, is part of the format's spec string).</summary>
public sealed record CodecOptions
{
    public static CodecOptions Default { get; } = new();

    public NonFinitePolicy NonFinite { get; init; } = NonFinitePolicy.Throw;

    /// <summary>Threads for the fast kernels over rows (default: every core).</summary>
    public Parallelism Parallelism { get; init; }

    public CodecKernel Kernel { get; init; } = CodecKernel.Fast;
}
