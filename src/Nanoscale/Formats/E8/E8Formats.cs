namespace Nanoscale.Formats.E8;

/// <summary>The E8 row of the format table: <c>e8</c>, <c>bits=2</c> (default), 3 or 4.</summary>
internal static class E8Formats
{
    public static IEnumerable<FormatTraits> Traits()
    {
        yield return new FormatTraits("e8", [], "E8 lattice: 8 weights per 16-bit index into a 2^16-point codebook, UE4M3 scale per 32, FP32 scale per tensor; bits=3|4 add a residual stage",
            2.25, [new FormatOption("bits", "2", ["2", "3", "4"], "bits per weight of the codes: 2 (one index per 8 weights), 3 (and a sign per weight on the residual), 4 (and a second index on the residual)")],
            (spec, canonical) => new E8Codec(canonical, int.Parse(spec["bits"] ?? "2", System.Globalization.CultureInfo.InvariantCulture)));
    }
}
