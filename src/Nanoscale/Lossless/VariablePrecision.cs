using System.Runtime.InteropServices;
using Nanoscale.Tensors;

namespace Nanoscale.Lossless;

/// <summary>
/// Options of the uniform variable-precision type <c>vp:mant=k</c> (SPEC §10): keep the sign, keep the exponent
/// (entropy-coded), round the mantissa to nearest even at <see cref="MantissaBits"/> bits, and flush values whose
/// biased exponent field is below <see cref="ExponentFloor"/> to a signed zero.
/// </summary>
internal sealed record VariablePrecisionOptions
{
    /// <summary>Mantissa bits kept, 0 … the dtype's mantissa width (7 for BF16, 10 for F16, 23 for F32).</summary>
    public int MantissaBits { get; init; } = 3;

    /// <summary>Biased exponent fields below this become ±0 (0 = keep subnormals; 1 = flush subnormals).</summary>
    public int ExponentFloor { get; init; }

    /// <summary>
    /// Tapered precision (0 = uniform <c>vp:mant=k</c>): mantissa bits dropped per binade of distance beyond
    /// <see cref="TaperWidth"/> from the centre exponent, m(e) = max(0, k − taper·max(0, |e − centre| − width)).
    /// Spec string: <c>vp:mant=k,taper=t,width=w[,center=c]</c>. The decoder needs none of this: the rounded tensor
    /// is stored as is, and the coder adapts to whatever bits remain.
    /// </summary>
    public int TaperBitsPerBinade { get; init; }

    /// <summary>Binades on each side of the centre that keep all <see cref="MantissaBits"/>.</summary>
    public int TaperWidth { get; init; } = 2;

    /// <summary>Biased exponent field of the centre; null = the tensor's most frequent exponent (its typical magnitude).</summary>
    public int? TaperCenter { get; init; }

    /// <summary>Options of the lossless coder that stores the rounded tensor.</summary>
    public LosslessOptions Lossless { get; init; } = LosslessOptions.Default with { MinimumSavings = 0 };

    /// <summary>The canonical spec string, e.g. <c>vp:mant=3</c> or <c>vp:mant=4,taper=1,width=3,center=126</c>.</summary>
    public override string ToString()
    {
        var parts = new List<string> { $"mant={MantissaBits}" };
        if (ExponentFloor != 0) parts.Add($"floor={ExponentFloor}");
        if (TaperBitsPerBinade != 0)
        {
            parts.Add($"taper={TaperBitsPerBinade}");
            parts.Add($"width={TaperWidth}");
            if (TaperCenter is { } c) parts.Add($"center={c}");
        }
        return "vp:" + string.Join(",", parts);
    }
}

/// <summary>Size and error of one tensor stored as <c>vp:mant=k</c>.</summary>
internal readonly record struct VariablePrecisionReport(int MantissaBits, int ExponentFloor, int TaperBitsPerBinade, long ElementCount,
    long EncodedBytes, long FlushedToZero, double RelativeError)
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
internal static class VariablePrecision
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

        if (options.TaperBitsPerBinade < 0 || options.TaperWidth < 0)
            throw new ArgumentOutOfRangeException(nameof(options), "taper and width must not be negative");

        var keep = MantissaBitsPerExponent(source, dtype, options);
        long flushed = 0;
        if (dtype == DType.F32)
        {
            var src = MemoryMarshal.Cast<byte, uint>(source);
            var dst = MemoryMarshal.Cast<byte, uint>(destination);
            for (int i = 0; i < src.Length; i++) dst[i] = RoundBits(src[i], 32, exponentBits, mantissaWidth, keep, options.ExponentFloor, ref flushed);
        }
        else
        {
            var src = MemoryMarshal.Cast<byte, ushort>(source);
            var dst = MemoryMarshal.Cast<byte, ushort>(destination);
            for (int i = 0; i < src.Length; i++) dst[i] = (ushort)RoundBits(src[i], 16, exponentBits, mantissaWidth, keep, options.ExponentFloor, ref flushed);
        }
        return flushed;
    }

    /// <summary>m(e) for every biased exponent field e of the dtype (all equal to k when the taper is 0).</summary>
    public static int[] MantissaBitsPerExponent(ReadOnlySpan<byte> source, DType dtype, VariablePrecisionOptions options)
    {
        int exponentBits = dtype.ExponentBits(), mantissaWidth = dtype.MantissaBits();
        var keep = new int[1 << exponentBits];
        int center = options.TaperCenter ?? (options.TaperBitsPerBinade == 0 ? 0 : ModalExponent(source, dtype));
        for (int e = 0; e < keep.Length; e++)
        {
            int distance = Math.Max(0, Math.Abs(e - center) - options.TaperWidth);
            keep[e] = Math.Max(0, options.MantissaBits - (int)Math.Min(int.MaxValue, (long)options.TaperBitsPerBinade * distance));
        }
        return keep;
    }

    private static int ModalExponent(ReadOnlySpan<byte> source, DType dtype)
    {
        int mantissaWidth = dtype.MantissaBits(), size = dtype.ElementSize();
        int mask = (1 << dtype.ExponentBits()) - 1;
        var counts = new long[mask + 1];
        for (int i = 0; i + size <= source.Length; i += size)
        {
            uint w = size == 4 ? MemoryMarshal.Read<uint>(source[i..]) : MemoryMarshal.Read<ushort>(source[i..]);
            counts[(int)(w >> mantissaWidth) & mask]++;
        }
        int best = 0;
        for (int e = 1; e < mask; e++) if (counts[e] > counts[best]) best = e; // ignore Inf/NaN's field
        return best;
    }

    private static uint RoundBits(uint w, int width, int exponentBits, int mantissaWidth, int[] keep, int exponentFloor, ref long flushed)
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
        if (exponent < (uint)exponentFloor)
        {
            if (magnitude != 0) flushed++;
            return sign;
        }
        int drop = mantissaWidth - keep[exponent];
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
        report = new VariablePrecisionReport(options.MantissaBits, options.ExponentFloor, options.TaperBitsPerBinade, source.Length / dtype.ElementSize(),
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
