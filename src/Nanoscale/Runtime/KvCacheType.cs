namespace Nanoscale.Runtime;

/// <summary>
/// How a session's key/value cache stores each number (<see cref="RuntimeOptions.KvCache"/>). The cache grows with
/// every position of every running sequence, so in a server it is most of the memory beyond the weights; 16-bit halves
/// it, and a KV budget then holds twice the positions.
/// </summary>
public enum KvCacheType
{
    /// <summary>float32: exact; the default, so perplexities and the llama.cpp cross-checks are unchanged.</summary>
    F32,

    /// <summary>IEEE half, rounded to nearest even (as llama.cpp's default cache): 11 significant bits. Magnitudes above
    /// 65504 are stored as ±65504 instead of becoming infinite (an infinite key would make every score NaN).</summary>
    F16,

    /// <summary>bfloat16, rounded to nearest even: float32's range, 8 significant bits.</summary>
    BF16,
}
