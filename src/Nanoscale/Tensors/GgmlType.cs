namespace Nanoscale.Tensors;

/// <summary>
/// A ggml tensor type as GGUF files name it (ggml.h's <c>enum ggml_type</c>): its id, its name, and its block geometry
/// (elements per block, bytes per block; 1 and the element size for the plain types). Shared vocabulary of the GGUF
/// reader and writer (IO) and of the ggml block formats (Formats/Ggml), hence here.
/// </summary>
/// <remarks>Only the types Nanoscale reads or writes are listed; the ids and sizes are ggml's (checked against
/// <c>ggml_type_name</c>, <c>ggml_blck_size</c> and <c>ggml_type_size</c> of llama.cpp's library in a test).</remarks>
internal sealed record GgmlType(int Id, string Name, int BlockSize, int BytesPerBlock, DType? Plain = null)
{
    public static readonly GgmlType F32 = new(0, "f32", 1, 4, DType.F32);
    public static readonly GgmlType F16 = new(1, "f16", 1, 2, DType.F16);
    public static readonly GgmlType Q4_0 = new(2, "q4_0", 32, 18);
    public static readonly GgmlType Q4_1 = new(3, "q4_1", 32, 20);
    public static readonly GgmlType Q5_0 = new(6, "q5_0", 32, 22);
    public static readonly GgmlType Q5_1 = new(7, "q5_1", 32, 24);
    public static readonly GgmlType Q8_0 = new(8, "q8_0", 32, 34);
    public static readonly GgmlType Q4_K = new(12, "q4_K", 256, 144);
    public static readonly GgmlType Q5_K = new(13, "q5_K", 256, 176);
    public static readonly GgmlType Q6_K = new(14, "q6_K", 256, 210);
    public static readonly GgmlType BF16 = new(30, "bf16", 1, 2, DType.BF16);
    public static readonly GgmlType Mxfp4 = new(39, "mxfp4", 32, 17);

    public static IReadOnlyList<GgmlType> All { get; } = [F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16, Mxfp4];

    public static GgmlType? FromId(long id) => All.FirstOrDefault(t => t.Id == id);

    public static GgmlType? FromName(string name) => All.FirstOrDefault(t => string.Equals(t.Name, name, StringComparison.OrdinalIgnoreCase));

    public bool IsQuantized => Plain is null;

    /// <summary>ggml's name of any type id (for messages about types that are not read), or the number.</summary>
    public static string NameOf(long id) => FromId(id)?.Name ?? (id >= 0 && id < AllNames.Length && AllNames[id].Length > 0 ? AllNames[id] : id.ToString());

    private static readonly string[] AllNames =
    [
        "f32", "f16", "q4_0", "q4_1", "", "", "q5_0", "q5_1", "q8_0", "q8_1", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K",
        "iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq4_nl", "iq3_s", "iq2_s", "iq4_xs", "i8", "i16", "i32", "i64", "f64", "iq1_m",
        "bf16", "", "", "", "tq1_0", "tq2_0", "", "", "", "mxfp4", "nvfp4",
    ];

    /// <summary>Bytes of a row of <paramref name="columns"/> elements, or null when the row is not whole blocks
    /// (ggml stores no partial block).</summary>
    public long? RowBytes(long columns) => columns % BlockSize == 0 ? columns / BlockSize * BytesPerBlock : null;

    public override string ToString() => Name;
}
