namespace Nanoscale.Formats.Ggml;

/// <summary>
/// The ggml rows of the format table: llama.cpp's legacy block formats under ggml's own names (<c>q8_0</c>,
/// <c>q4_0</c>, <c>q4_1</c>, <c>q5_0</c>, <c>q5_1</c>) and <c>ggml-mxfp4</c> (OCP MXFP4 values in ggml's block
/// layout). They are here so that GGUF files can be written and read tensor for tensor, and so that llama.cpp's
/// formats are measured beside MX, NVFP4 and NxFP by the same commands.
/// </summary>
internal static class GgmlFormats
{
    public static IEnumerable<FormatTraits> Traits()
    {
        yield return Row(GgmlKind.Q8_0, "q8_0", "llama.cpp Q8_0: int8 codes, f16 scale amax/127 per 32 (8.5 bpw)");
        yield return Row(GgmlKind.Q4_0, "q4_0", "llama.cpp Q4_0: 4-bit codes q−8, f16 scale per 32 (4.5 bpw)");
        yield return Row(GgmlKind.Q4_1, "q4_1", "llama.cpp Q4_1: 4-bit codes, f16 scale and f16 minimum per 32 (5 bpw)");
        yield return Row(GgmlKind.Q5_0, "q5_0", "llama.cpp Q5_0: 5-bit codes q−16, f16 scale per 32 (5.5 bpw)");
        yield return Row(GgmlKind.Q5_1, "q5_1", "llama.cpp Q5_1: 5-bit codes, f16 scale and f16 minimum per 32 (6 bpw)");
        yield return new FormatTraits("ggml-mxfp4", [], "MXFP4 values in ggml's block layout (17 bytes per 32; GGUF's mxfp4)",
            4.25, [], (_, canonical) => new GgmlMxfp4Codec(canonical));
    }

    private static FormatTraits Row(GgmlKind kind, string name, string summary) =>
        new(name, [], summary, GgmlCodec.BytesOf(kind) * 8.0 / GgmlCodec.QK, [], (_, canonical) => new GgmlCodec(kind, canonical));
}
