namespace Nanoscale.Tensors;

/// <summary>Element types of checkpoint tensors, named as in the safetensors header.</summary>
public enum DType
{
    F64, F32, F16, BF16, F8_E4M3, F8_E5M2,
    I64, I32, I16, I8,
    U64, U32, U16, U8,
    BOOL,
}

/// <summary>Facts about each <see cref="DType"/>: the safetensors name, size, and floating-point layout.</summary>
public static class DTypes
{
    public static int ElementSize(this DType dtype) => dtype switch
    {
        DType.F64 or DType.I64 or DType.U64 => 8,
        DType.F32 or DType.I32 or DType.U32 => 4,
        DType.F16 or DType.BF16 or DType.I16 or DType.U16 => 2,
        _ => 1,
    };

    /// <summary>The name used in safetensors headers (e.g. <c>BF16</c>).</summary>
    public static string Name(this DType dtype) => dtype.ToString();

    public static bool IsFloat(this DType dtype) =>
        dtype is DType.F64 or DType.F32 or DType.F16 or DType.BF16 or DType.F8_E4M3 or DType.F8_E5M2;

    /// <summary>Width of the exponent field for floating-point dtypes, 0 otherwise.</summary>
    public static int ExponentBits(this DType dtype) => dtype switch
    {
        DType.F64 => 11,
        DType.F32 or DType.BF16 => 8,
        DType.F16 or DType.F8_E5M2 => 5,
        DType.F8_E4M3 => 4,
        _ => 0,
    };

    /// <summary>Width of the mantissa field for floating-point dtypes, 0 otherwise.</summary>
    public static int MantissaBits(this DType dtype) => dtype switch
    {
        DType.F64 => 52,
        DType.F32 => 23,
        DType.F16 => 10,
        DType.BF16 => 7,
        DType.F8_E5M2 => 2,
        DType.F8_E4M3 => 3,
        _ => 0,
    };

    public static bool TryParse(string name, out DType dtype) =>
        Enum.TryParse(name, ignoreCase: false, out dtype) && Enum.IsDefined(dtype) && name == dtype.ToString();

    public static IReadOnlyList<string> AllNames { get; } = Enum.GetNames<DType>();
}
