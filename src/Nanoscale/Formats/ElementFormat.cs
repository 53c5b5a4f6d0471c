using System.Runtime.CompilerServices;

namespace Nanoscale.Formats;

/// <summary>Which codes of a minifloat are not finite numbers (SPEC §2).</summary>
public enum SpecialCodes
{
    /// <summary>Every code is a finite number (FP6, FP4 and the NxFP widths).</summary>
    None,

    /// <summary>OCP FP8 E4M3: only S.1111.111 is NaN; there is no infinity.</summary>
    AllOnesIsNaN,

    /// <summary>IEEE-like (OCP FP8 E5M2): the all-ones exponent holds ±Inf (mantissa 0) and NaN (otherwise).</summary>
    Ieee,
}

/// <summary>
/// An element format: how one element code of <see cref="Bits"/> bits maps to a value, and the exact cast back.
/// </summary>
/// <remarks>
/// <para>One rule covers every minifloat ExMy of SPEC §2: 1 sign bit, x exponent bits, y mantissa bits,
/// bias 2^(x−1)−1; exponent field e &gt; 0 gives 2^(e−bias)·(1 + m/2^y), e = 0 gives 2^(1−bias)·(m/2^y).
/// E0My (x = 0) has no normal range; Nanoscale gives it bias 0, so it is the sign-magnitude integer grid
/// m·2^(1−y), the same grid as MXINT of width y+1 but with a negative-zero code instead of −2.</para>
/// <para>INTn (<see cref="ElementEncoding.TwosComplement"/>) is value = code·2^−(n−2): n = 8 is MXINT8.</para>
/// <para><see cref="Encode"/> rounds to nearest (ties per <see cref="RoundingMode"/>) and saturates to ±<see cref="Max"/>.
/// A value that rounds to zero encodes as the +0 code: encoders never emit the negative-zero code (decoders
/// accept it as −0), so NxFP code recycling can give that code a new meaning. The positive codes
/// 0..<see cref="MaxMagnitudeCode"/> are in ascending order of value, which the exact encoder relies on.</para>
/// </remarks>
public sealed class ElementFormat
{
    private readonly float[] _decode;
    private readonly double[] _magnitudes; // value of positive code k, k = 0..MaxMagnitudeCode (ascending)
    private readonly uint _maxBits;        // float bits of Max: anything at or above saturates

    private ElementFormat(string name, int bits, int exponentBits, int mantissaBits, int bias,
        ElementEncoding encoding, SpecialCodes specials)
    {
        Name = name;
        Bits = bits;
        ExponentBits = exponentBits;
        MantissaBits = mantissaBits;
        Bias = bias;
        Encoding = encoding;
        Specials = specials;
        MinNormalExponent = 1 - bias;

        _decode = new float[1 << bits];
        for (int code = 0; code < _decode.Length; code++)
            _decode[code] = DecodeFromFields(code);

        // Largest positive finite code: positive codes ascend, so walk down from the top past NaN/Inf.
        int top = (1 << (bits - 1)) - 1;
        while (!float.IsFinite(_decode[top])) top--;
        MaxMagnitudeCode = top;
        Max = _decode[top];
        _maxBits = BitConverter.SingleToUInt32Bits(Max);
        Emax = ExactFloorLog2(Max);

        _magnitudes = new double[top + 1];
        for (int k = 0; k <= top; k++)
            _magnitudes[k] = _decode[k];
    }

    /// <summary>Lower-case name, e.g. <c>e2m1</c>, <c>e4m3</c>, <c>int8</c>.</summary>
    public string Name { get; }

    /// <summary>Width of one code in bits (2..8).</summary>
    public int Bits { get; }

    public int ExponentBits { get; }

    /// <summary>Mantissa bits; for INTn this is n−1 (the magnitude bits).</summary>
    public int MantissaBits { get; }

    public int Bias { get; }

    public ElementEncoding Encoding { get; }

    public SpecialCodes Specials { get; }

    /// <summary>Largest finite value.</summary>
    public float Max { get; }

    /// <summary><c>floor(log2(Max))</c>: the exponent MX uses to choose the shared scale (SPEC §4).</summary>
    public int Emax { get; }

    /// <summary>The positive code of <see cref="Max"/>.</summary>
    public int MaxMagnitudeCode { get; }

    /// <summary>1 − bias: the exponent of the smallest normal (and the scale of the subnormal range).</summary>
    internal int MinNormalExponent { get; }

    /// <summary>Float bits of <see cref="Max"/>.</summary>
    internal uint MaxBits => _maxBits;

    /// <summary>The code that decodes to −0, or −1 when there is none (two's complement).</summary>
    public int NegativeZeroCode => Encoding == ElementEncoding.SignMagnitude ? 1 << (Bits - 1) : -1;

    /// <summary>Code → value for every code (NaN codes decode to NaN, Inf codes to ±Inf).</summary>
    public ReadOnlySpan<float> DecodeTable => _decode;

    public override string ToString() => Name;

    /// <summary>True when <paramref name="code"/> is NaN or ±Inf.</summary>
    public bool IsSpecial(int code) => !float.IsFinite(_decode[code]);

    public float Decode(int code) => _decode[code];

    // ---- factories ---------------------------------------------------------------------------------------------

    /// <summary>General minifloat ExMy with the SPEC §2 bias (E0My: bias 0, see remarks).</summary>
    public static ElementFormat Minifloat(int exponentBits, int mantissaBits, SpecialCodes specials = SpecialCodes.None)
    {
        int bits = 1 + exponentBits + mantissaBits;
        if (exponentBits < 0 || mantissaBits < 0 || bits < 2 || bits > 8)
            throw new ArgumentOutOfRangeException(nameof(exponentBits),
                $"E{exponentBits}M{mantissaBits}: a minifloat needs 1 sign + x + y bits with 2 ≤ width ≤ 8.");
        if (exponentBits == 0 && specials != SpecialCodes.None)
            throw new ArgumentException("E0My has no exponent field to hold special codes.", nameof(specials));
        int bias = exponentBits == 0 ? 0 : (1 << (exponentBits - 1)) - 1;
        return new ElementFormat($"e{exponentBits}m{mantissaBits}", bits, exponentBits, mantissaBits, bias,
            ElementEncoding.SignMagnitude, specials);
    }

    /// <summary>INTn for MXINT (SPEC §7): two's complement, value = code·2^−(n−2), n = 2..8.</summary>
    public static ElementFormat Int(int bits)
    {
        if (bits < 2 || bits > 8)
            throw new ArgumentOutOfRangeException(nameof(bits), bits, "INTn needs 2 ≤ n ≤ 8.");
        return new ElementFormat($"int{bits}", bits, 0, bits - 1, 0, ElementEncoding.TwosComplement, SpecialCodes.None);
    }

    /// <summary>OCP FP8 E4M3: max 448, S.1111.111 is NaN.</summary>
    public static ElementFormat E4M3 { get; } = Minifloat(4, 3, SpecialCodes.AllOnesIsNaN);

    /// <summary>OCP FP8 E5M2: max 57344, IEEE Inf/NaN.</summary>
    public static ElementFormat E5M2 { get; } = Minifloat(5, 2, SpecialCodes.Ieee);

    /// <summary>OCP FP6 E3M2: max 28.</summary>
    public static ElementFormat E3M2 { get; } = Minifloat(3, 2);

    /// <summary>OCP FP6 E2M3: max 7.5.</summary>
    public static ElementFormat E2M3 { get; } = Minifloat(2, 3);

    /// <summary>OCP FP4 E2M1: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6.</summary>
    public static ElementFormat E2M1 { get; } = Minifloat(2, 1);

    /// <summary>MXINT8 elements: code·2^−6, emitted range ±127.</summary>
    public static ElementFormat Int8 { get; } = Int(8);

    // ---- decode ------------------------------------------------------------------------------------------------

    private float DecodeFromFields(int code)
    {
        if (Encoding == ElementEncoding.TwosComplement)
        {
            int signed = code >= 1 << (Bits - 1) ? code - (1 << Bits) : code;
            return (float)Math.ScaleB(signed, -(Bits - 2));
        }

        bool negative = (code >> (Bits - 1)) != 0;
        int e = (code >> MantissaBits) & ((1 << ExponentBits) - 1);
        int m = code & ((1 << MantissaBits) - 1);
        int eAllOnes = (1 << ExponentBits) - 1;
        double magnitude;
        if (Specials == SpecialCodes.Ieee && e == eAllOnes)
            magnitude = m == 0 ? double.PositiveInfinity : double.NaN;
        else if (Specials == SpecialCodes.AllOnesIsNaN && e == eAllOnes && m == (1 << MantissaBits) - 1)
            magnitude = double.NaN;
        else if (e == 0)
            magnitude = Math.ScaleB(m, 1 - Bias - MantissaBits);
        else
            magnitude = Math.ScaleB((1 << MantissaBits) + m, e - Bias - MantissaBits);
        return (float)(negative ? -magnitude : magnitude);
    }

    // ---- encode ------------------------------------------------------------------------------------------------

    /// <summary>
    /// Exact cast of <paramref name="x"/> to the nearest code (ties per <paramref name="mode"/>), saturating to ±Max;
    /// ±Inf saturate too. NaN gives the format's NaN code, or throws when it has none. With
    /// <paramref name="signedZero"/>, a negative nonzero <paramref name="x"/> that rounds to zero keeps its sign: the
    /// −0 code of a sign-magnitude format, as microxcaling (the OCP reference) and hardware conversions give it; ±0.0
    /// itself always gives +0 (the reference's <c>sign(−0.0)</c> is 0). Without it (NxFP, whose code recycling gives
    /// the −0 code another meaning) every zero is +0.
    /// </summary>
    /// <remarks>Works on the float's bits: drop all significand bits below the grid step of the target binade
    /// (the subnormal binade below 2^(1−bias)), and round on the dropped remainder. The code is
    /// <c>((max(e, emin) − emin) &lt;&lt; y) + q</c>: a carry out of the mantissa lands in the exponent field, which is
    /// exactly the next code.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Encode(float x, RoundingMode mode = RoundingMode.NearestEven, bool signedZero = false)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        uint a = bits & 0x7FFF_FFFFu;
        if (a > 0x7F80_0000u)
            return NaNCodeOrThrow();
        int magnitude = EncodeMagnitude(a, mode);
        return ApplySign(magnitude, bits >> 31, signedZero && a != 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int EncodeMagnitude(uint absBits, RoundingMode mode)
    {
        if (absBits >= _maxBits)
            return MaxMagnitudeCode;
        int y = MantissaBits, emin = MinNormalExponent;
        int e = (int)(absBits >> 23) - 127;
        if (e < emin - y - 1) // below half the smallest subnormal step (float zero/subnormals included)
            return 0;
        int ec = Math.Max(e, emin);
        int shift = 23 - y + (ec - e); // 16 ≤ shift ≤ 24
        uint significand = (absBits & 0x7F_FFFFu) | 0x80_0000u;
        uint q = significand >> shift;
        uint remainder = significand - (q << shift);
        uint half = 1u << (shift - 1);
        int code = ((ec - emin) << y) + (int)q;
        if (remainder > half || (remainder == half && (mode == RoundingMode.NearestAway || (code & 1) != 0)))
            code++;
        return code;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal int ApplySign(int magnitude, uint sign, bool keepNegativeZero = false)
    {
        if (sign == 0 || (magnitude == 0 && !(keepNegativeZero && Encoding == ElementEncoding.SignMagnitude)))
            return magnitude;
        return Encoding == ElementEncoding.TwosComplement
            ? (-magnitude) & ((1 << Bits) - 1)
            : magnitude | (1 << (Bits - 1));
    }

    /// <summary>
    /// Reference cast: nearest entry of the ascending magnitude table by exact comparison with the midpoints of
    /// neighbouring values (midpoints of two floats are exact in double). Slow and obviously correct; the
    /// fast <see cref="Encode"/> must agree with it for every input.
    /// </summary>
    public int EncodeReference(double x, RoundingMode mode = RoundingMode.NearestEven, bool signedZero = false)
    {
        if (double.IsNaN(x))
            return NaNCodeOrThrow();
        double a = Math.Abs(x);
        double[] m = _magnitudes;
        int k;
        if (a >= m[^1])
            k = m.Length - 1;
        else
        {
            // Largest k with m[k] <= a (m[0] = 0 <= a).
            int lo = 0, hi = m.Length - 1;
            while (hi - lo > 1)
            {
                int mid = (lo + hi) >>> 1;
                if (m[mid] <= a) lo = mid; else hi = mid;
            }
            k = lo;
            if (a != m[k])
            {
                double midpoint = (m[k] + m[k + 1]) / 2;
                if (a > midpoint || (a == midpoint && (mode == RoundingMode.NearestAway || (k & 1) != 0)))
                    k++;
            }
        }
        return ApplySign(k, double.IsNegative(x) ? 1u : 0u, signedZero && x != 0);
    }

    private int NaNCodeOrThrow()
    {
        for (int code = 0; code < _decode.Length; code++)
            if (float.IsNaN(_decode[code]))
                return code;
        throw new ArgumentException($"{Name} has no NaN code; NaN cannot be encoded.");
    }

    /// <summary>floor(log2(|x|)) of a finite non-zero float, exactly from its bits (subnormals included).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ExactFloorLog2(float x) => ExactFloorLog2Bits(BitConverter.SingleToUInt32Bits(x) & 0x7FFF_FFFFu);

    /// <inheritdoc cref="ExactFloorLog2(float)"/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int ExactFloorLog2Bits(uint absBits) =>
        absBits >= 0x80_0000u
            ? (int)(absBits >> 23) - 127
            : 31 - System.Numerics.BitOperations.LeadingZeroCount(absBits) - 149;
}
