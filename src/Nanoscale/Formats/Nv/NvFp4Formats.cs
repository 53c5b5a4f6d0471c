namespace Nanoscale.Formats.Nv;

/// <summary>The NVFP4 row of the format table (SPEC §5, §7): <c>nvfp4</c> with <c>round=even|away</c>,
/// <c>zero=signed|positive</c> and <c>global=scale|divisor</c> (how the tensor data is applied).</summary>
internal static class NvFp4Formats
{
    /// <summary><c>global=scale|divisor</c>: s_b·s_t (NVIDIA's formula) or s_b/g (compressed-tensors' weight_global_scale
    /// g = 2688/amax, how checkpoints of that layout are read).</summary>
    public static FormatOption Global { get; } = new("global", "scale", ["scale", "divisor"],
        "scale: elements × s_b·s_t (tensor data s_t = amax/2688, NVIDIA's); divisor: elements × s_b/g (tensor data g = 2688/amax, compressed-tensors')");

    public static IEnumerable<FormatTraits> Traits()
    {
        yield return new FormatTraits("nvfp4", [], "NVFP4: E2M1 elements, UE4M3 scale per 16, FP32 scale per tensor",
            4.5, [FormatOption.Round, FormatOption.Zero, Global],
            (spec, canonical) => new NvFp4Codec(FormatOption.Rounding(spec), canonical, FormatOption.SignedZero(spec), spec["global"]?.Trim().ToLowerInvariant() == "divisor"));
    }
}
