using Nanoscale.Tensors;

namespace Nanoscale.Lossless;

/// <summary>Stable one-byte dtype codes of the stream header (docs/lossless.md); independent of enum order.</summary>
internal static class DTypeCodes
{
    private static readonly (DType DType, byte Code)[] Table =
    [
        (DType.F64, 1), (DType.F32, 2), (DType.F16, 3), (DType.BF16, 4), (DType.F8_E4M3, 5), (DType.F8_E5M2, 6),
        (DType.I64, 7), (DType.I32, 8), (DType.I16, 9), (DType.I8, 10),
        (DType.U64, 11), (DType.U32, 12), (DType.U16, 13), (DType.U8, 14), (DType.BOOL, 15),
    ];

    public static byte ToCode(DType dtype)
    {
        foreach (var (d, code) in Table) if (d == dtype) return code;
        throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "no lossless stream code");
    }

    public static bool TryFromCode(byte code, out DType dtype)
    {
        foreach (var (d, c) in Table)
            if (c == code) { dtype = d; return true; }
        dtype = default;
        return false;
    }
}
