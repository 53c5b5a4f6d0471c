namespace Nanoscale.Runtime;

/// <summary>
/// How a session's key/value cache stores each number (<see cref="RuntimeOptions.KvCache"/>). The cache grows with
/// every position of every running sequence, so in a server it is most of the memory beyond the weights; 16-bit halves
/// it (8 bits about 3.6×, 4 bits 6.4×), and a KV budget then holds that many more positions.
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

    /// <summary>int8 per block of 32 numbers with a float32 scale (amax/127, round to nearest even; as llama.cpp's
    /// <c>q8_0</c> cache, whose scale is f16): 1.125 bytes a number. Needs key/value rows of whole blocks of 32.</summary>
    Q8,

    /// <summary>4-bit codes per block of 32 numbers with a float32 scale, as llama.cpp's <c>q4_0</c> cache (scale = the
    /// block's largest-magnitude number ÷ −8, codes −8…7 rounded to nearest even; its scale is f16): 0.625 bytes a number.
    /// Needs key/value rows of whole blocks of 32.</summary>
    Q4,
}

/// <summary>The cache types' names as the command line, <c>/health</c> and the messages spell them.</summary>
public static class KvCacheTypes
{
    /// <summary><c>f32</c>, <c>f16</c>, <c>bf16</c>, <c>q8</c> or <c>q4</c>.</summary>
    public static string Name(this KvCacheType type) => type.ToString().ToLowerInvariant();
}
