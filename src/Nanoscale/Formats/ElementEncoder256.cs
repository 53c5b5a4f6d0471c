using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Nanoscale.Formats;

/// <summary>
/// <see cref="ElementFormat.Encode"/> in 8 lanes, with the format's constants broadcast once. Inputs must be finite
/// (codecs check blocks for NaN/Inf before encoding).
/// </summary>
/// <remarks>
/// Same derivation as the scalar bit encoder, in float instead of integer shifts (AVX2 has no cheap per-lane
/// variable shift in the portable API): with e = unbiased exponent of |x| (saturated to Max) and ec = max(e, emin),
/// the grid step is 2^(ec−y); u = |x|/step is exact (power-of-two scaling), q = trunc(u) and frac = u − q are exact,
/// and the code is ((ec − emin) &lt;&lt; y) + q, plus 1 when frac &gt; ½ or frac = ½ and the code is odd (ties to even)
/// or frac ≥ ½ (ties away).
/// </remarks>
internal readonly struct ElementEncoder256
{
    private readonly Vector256<uint> _maxBits;
    private readonly Vector256<int> _emin;
    private readonly Vector256<int> _stepBias; // 127 + y: invStep exponent = 127 − (ec − y)
    private readonly Vector256<int> _codeMask;
    private readonly Vector256<int> _signBit;
    private readonly int _mantissaBits;
    private readonly bool _twosComplement;
    private readonly bool _away;
    private readonly bool _signedZero;

    /// <param name="format">The element format.</param>
    /// <param name="mode">Ties to even or away from zero.</param>
    /// <param name="signedZero">As <see cref="ElementFormat.Encode"/>: a negative nonzero input that rounds to zero
    /// gives the −0 code.</param>
    public ElementEncoder256(ElementFormat format, RoundingMode mode, bool signedZero = false)
    {
        _signedZero = signedZero;
        _maxBits = Vector256.Create(format.MaxBits);
        _emin = Vector256.Create(format.MinNormalExponent);
        _stepBias = Vector256.Create(127 + format.MantissaBits);
        _codeMask = Vector256.Create((1 << format.Bits) - 1);
        _signBit = Vector256.Create(1 << (format.Bits - 1));
        _mantissaBits = format.MantissaBits;
        _twosComplement = format.Encoding == ElementEncoding.TwosComplement;
        _away = mode == RoundingMode.NearestAway;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vector256<int> Encode(Vector256<float> x)
    {
        Vector256<uint> bits = x.AsUInt32();
        Vector256<int> negative = Vector256.ShiftRightArithmetic(bits.AsInt32(), 31);
        Vector256<uint> a = Vector256.Min(bits & Vector256.Create(0x7FFF_FFFFu), _maxBits);
        Vector256<int> e = Vector256.ShiftRightLogical(a, 23).AsInt32() - Vector256.Create(127);
        Vector256<int> ec = Vector256.Max(e, _emin);
        Vector256<float> invStep = Vector256.ShiftLeft(_stepBias - ec, 23).AsSingle();
        Vector256<float> u = a.AsSingle() * invStep;
        Vector256<int> q = Vector256.ConvertToInt32Native(u);
        Vector256<float> frac = u - Vector256.ConvertToSingle(q);
        Vector256<int> code = Vector256.ShiftLeft(ec - _emin, _mantissaBits) + q;
        Vector256<float> half = Vector256.Create(0.5f);
        Vector256<int> up = _away
            ? Vector256.GreaterThanOrEqual(frac, half).AsInt32()
            : Vector256.GreaterThan(frac, half).AsInt32() |
              (Vector256.Equals(frac, half).AsInt32() & Vector256.Equals(code & Vector256<int>.One, Vector256<int>.One));
        code -= up; // masks are −1
        Vector256<int> negativeNonZero = Vector256.AndNot(negative,
            _signedZero ? Vector256.Equals(a, Vector256<uint>.Zero).AsInt32() : Vector256.Equals(code, Vector256<int>.Zero));
        return _twosComplement
            ? Vector256.ConditionalSelect(negativeNonZero, (Vector256<int>.Zero - code) & _codeMask, code)
            : code | (negativeNonZero & _signBit);
    }
}
