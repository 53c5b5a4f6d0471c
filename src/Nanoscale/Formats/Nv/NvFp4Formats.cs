namespace Nanoscale.Formats.Nv;

/// <summary>The NVFP4 row of the format table (SPEC §5, §7): <c>nvfp4</c> with <c>round=even|away</c>.</summary>
internal static class NvFp4Formats
{
    public static IEnumerable<FormatTraits> Traits()
    {
        yield return new FormatTraits("nvfp4", [], "NVFP4: E2M1 elements, UE4M3 scale per 16, FP32 scale per tensor",
            4.5, [FormatOption.Round, FormatOption.Zero], (spec, canonical) => new NvFp4Codec(FormatOption.Rounding(spec), canonical, FormatOption.SignedZero(spec)));
    }
}
