using System.Runtime.InteropServices;
using Nanoscale.IO;

namespace Nanoscale.Lossless;

/// <summary>
/// Options of the uniform variable-precision type <c>vp:mant=k</c> (SPEC §10): keep the sign, keep the exponent
/// (entropy-coded), round the mantissa to nearest even at <see cref="MantissaBits"/> bits, and flush values whose
/// biased exponent field is below <see cref="ExponentFloor"/> to a signed zero.
/// </summary>
public sealed record VariablePrecisionOptions
{
    /// <summary>Mantissa bits kept, 0 … the dtype's mantissa width (7 for BF16, 10 for F16, 23 for F32).</summary>
    public int MantissaBits { get; init; } = 3;

    /// <summary>Biased exponent fields below this become ±0 (0 = keep subnormals; 1 = flush subnormals).</summary>
    public int ExponentFloor { get; init; }

    /// <summary>Options of the lossless coder that stores the rounded tensor.</summary>
    public LosslessOptions Lossless { get; init; } = LosslessOptions.Default with { MinimumSavings = 0 };
}

/// <summary>Size and error of one tensor stored as <c>vp:mant=k</c>.</summary>
public readonly record struct VariablePrecisionReport(int MantissaBits, int ExponentFloor, long ElementCount, long EncodedBytes,
    long FlushedToZero, double RelativeError)
{
    /// <summary>Bits per weight from the coded size (header, tables and checksums included).</summary>
    public double BitsPerWeight => ElementCount == 0 ? 0 : 8.0 * EncodedBytes / ElementCount;

    /// <summary>SQNR in dB = −10·log10(relative error); +∞ when the rounding was exact.</summary>
    public double SqnrDb => RelativeError == 0 ? double.PositiveInfinity : -10 * Math.Log10(RelativeError);
}

/// <summary>
/// <c>vp:mant=k</c>: the tensor is rounded in its own dtype (low mantissa bits become zero) and then coded with
/// <see cref="LosslessCodec"/>. Nothing special is needed in the coder: in the BF16 (or F32) sign+mantissa plane only
/// 2^(k+1) byte values remain, and an order-0 coder spends about k + 1 bits on them, while the exponent plane is
/// coded as before. Decoding is <see cref="LosslessCodec.Decode(ReadOnlySpan{byte}, Span{byte}, string?, LosslessOptions?)"/>
/// and yields the rounded tensor.
/// </summary>
public static class VariablePrecision
{
    /// <summary>
    /// Rounds each element of <paramref name="source"/> (BF16, F16 or F32) to <c>MantissaBits</c> bits, nearest even,
    /// and flushes exponents below the floor, writing the same dtype to <paramref name="destination"/>.
    /// Infinities stay; NaNs stay NaN (payload rounded, but never rounded into an infinity). A carry out of the
    /// mantissa moves to the next binade, and from the largest finite binade to infinity, as IEEE rounding does.
    /// Returns the number of values flushed to zero.
    /// </summary>
    public static long Round(ReadOnlySpan<byte> source, DType dtype, VariablePrecisionOptions options, Span<byte> destination)
    {
        int mantissaWidth = dtype.MantissaBits(), exponentBits = dtype.ExponentBits();
        if (dtype is not (DType.BF16 or DType.F16 or DType.F32))
            throw new ArgumentException($"vp types take BF16, F16 or F32, not {dtype}", nameof(dtype));
        if (options.MantissaBits < 0 || options.MantissaBits > mantissaWidth)
            throw new ArgumentOutOfRangeException(nameof(options), options.MantissaBits, $"mantissa bits must be within 0…{mantissaWidth} for {dtype}");
        if (options.ExponentFloor < 0 || options.ExponentFloor >= (1 << exponentBits))
            throw new ArgumentOutOfRangeException(nameof(options), options.ExponentFloor, "exponent floor outside the exponent field");
        if (source.Length != destination.Length || source.Length % dtype.ElementSize() != 0)
            throw new ArgumentException("source and destination must be the same whole number of elements");

        long flushed = 0;
        if (dtype == DType.F32)
        {
            var src = MemoryMarshal.Cast<byte, uint>(source);
            var dst = MemoryMarshal.Cast<byte, uint>(destination);
            for (int i = 0; i < src.Length; i++) dst[i] = RoundBits(src[i], 32, exponentBits, mantissaWidth, options, ref flushed);
        }
        else
        {
            var src = MemoryMarshal.Cast<byte, ushort>(source);
            var dst = MemoryMarshal.Cast<byte, ushort>(destination);
            for (int i = 0; i < src.Length; i++) dst[i] = (ushort)RoundBits(src[i], 16, exponentBits, mantissaWidth, options, ref flushed);
        }
        return flushed;
    }

    private static uint RoundBits(uint w, int width, int exponentBits, int mantissaWidth, VariablePrecisionOptions options, ref long flushed)
    {
        uint sign = w & (1u << (width - 1));
        uint magnitude = w ^ sign;
        uint exponentMax = (1u << exponentBits) - 1;
        uint exponent = magnitude >> mantissaWidth;
        if (exponent == exponentMax)
        {
            // Inf stays; a NaN keeps its top mantissa bit set so rounding can never turn it into an infinity.
            if ((magnitude & ((1u << mantissaWidth) - 1)) == 0) return w;
            return sign | (exponentMax << mantissaWidth) | (1u << (mantissaWidth - 1));
        }
        if (exponent < (uint)options.ExponentFloor)
        {
            if (magnitude != 0) flushed++;
            return sign;
        }
        int drop = mantissaWidth - options.MantissaBits;
        if (drop == 0) return w;
        // Round to nearest, ties to even, on the magnitude's bit pattern: adding half − 1 + lsb then truncating.
        // A carry out of the mantissa increments the exponent, which is exactly rounding up into the next binade.
        uint lsb = (magnitude >> drop) & 1;
        magnitude = (magnitude + ((1u << (drop - 1)) - 1) + lsb) & ~((1u << drop) - 1);
        return sign | magnitude;
    }

    /// <summary>Rounds, codes losslessly and measures: the coded stream (what a checkpoint stores) and its report.</summary>
    public static byte[] Encode(ReadOnlySpan<byte> source, DType dtype, VariablePrecisionOptions options, out VariablePrecisionReport report)
    {
        var rounded = new byte[source.Length];
        long flushed = Round(source, dtype, options, rounded);
        var encoded = LosslessCodec.Encode(rounded, dtype, options.Lossless);
        report = new VariablePrecisionReport(options.MantissaBits, options.ExponentFloor, source.Length / dtype.ElementSize(),
            encoded.Length, flushed, RelativeError(source, rounded, dtype));
        return encoded;
    }

    /// <summary>‖Ŵ − W‖² / ‖W‖² over elements where both are finite (SPEC §1), in double precision.</summary>
    public static double RelativeError(ReadOnlySpan<byte> original, ReadOnlySpan<byte> approximation, DType dtype)
    {
        int n = original.Length / dtype.ElementSize();
        var a = new float[n];
        var b = new float[n];
        TensorData.ToFloat(original, dtype, a);
        TensorData.ToFloat(approximation, dtype, b);
        double error = 0, energy = 0;
        for (int i = 0; i < n; i++)
        {
            if (!float.IsFinite(a[i]) || !float.IsFinite(b[i])) continue;
            double d = (double)b[i] - a[i];
            error += d * d;
            energy += (double)a[i] * a[i];
        }
        return energy == 0 ? 0 : error / energy;
    }
}
