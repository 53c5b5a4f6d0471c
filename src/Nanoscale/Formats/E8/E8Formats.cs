namespace Nanoscale.Formats.E8;

/// <summary>The E8 row of the format table: <c>e8</c> (<c>bits=2</c>, the only width built so far).</summary>
internal static class E8Formats
{
    public static IEnumerable<FormatTraits> Traits()
    {
        yield return new FormatTraits("e8", [], "E8 lattice: 8 weights per 16-bit index into a 2^16-point codebook, UE4M3 scale per 32, FP32 scale per tensor",
            2.25, [new FormatOption("bits", "2", ["2"], "codebook bits per weight (a residual stage for 3–4 bits is not built yet)")],
            (_, canonical) => new E8Codec(canonical));
    }
}
