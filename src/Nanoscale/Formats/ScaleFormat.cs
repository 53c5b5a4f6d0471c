namespace Nanoscale.Formats;

/// <summary>
/// An unsigned block-scale format (SPEC §3): E8M0 for MX, UE4M3 for NVFP4, and the general UExMy of NxFP.
/// </summary>
/// <remarks>
/// Value of a finite code with exponent field E and mantissa field M: <c>2^(E−bias)·(1 + M/2^y)</c>, or, when
/// <see cref="HasSubnormals"/> and E = 0, <c>2^(1−bias)·(M/2^y)</c>. Finite codes ascend in value with the code,
/// so the casts below are binary searches over the decode table.
/// </remarks>
public sealed class ScaleFormat
{
    private readonly float[] _decode;     // every storable code (NaN where not a finite scale)
    private readonly int[] _finiteCodes;  // finite codes, ascending by value

    private ScaleFormat(string name, int storageBits, int exponentBits, int mantissaBits, int bias,
        bool hasSubnormals, int nanCode)
    {
        Name = name;
        StorageBits = storageBits;
        ExponentBits = exponentBits;
        MantissaBits = mantissaBits;
        Bias = bias;
        HasSubnormals = hasSubnormals;
        NaNCode = nanCode;

        _decode = new float[1 << storageBits];
        var finite = new List<int>();
        int fieldBits = exponentBits + mantissaBits;
        for (int code = 0; code < _decode.Length; code++)
        {
            if (code == nanCode || code >> fieldBits != 0)
            {
                _decode[code] = float.NaN;
                continue;
            }
            int e = code >> mantissaBits, m = code & ((1 << mantissaBits) - 1);
            double value = hasSubnormals && e == 0
                ? Math.ScaleB(m, 1 - bias - mantissaBits)
                : Math.ScaleB((1 << mantissaBits) + m, e - bias - mantissaBits);
            _decode[code] = (float)value;
            if (_decode[code] != value)
                throw new ArgumentOutOfRangeException(nameof(bias), $"{name}: code {code} is not representable as float.");
            finite.Add(code);
        }
        _finiteCodes = [.. finite];
        MinCode = _finiteCodes[0];
        MaxCode = _finiteCodes[^1];
    }

    /// <summary>Lower-case name, e.g. <c>e8m0</c>, <c>ue4m3</c>, <c>ue5m2</c>.</summary>
    public string Name { get; }

    /// <summary>Bits one stored scale occupies (8 for every format here; UExMy wider than 8 bits uses 16).</summary>
    public int StorageBits { get; }

    public int ExponentBits { get; }

    public int MantissaBits { get; }

    public int Bias { get; }

    public bool HasSubnormals { get; }

    /// <summary>The NaN code, or −1 when every storable code is finite.</summary>
    public int NaNCode { get; }

    /// <summary>Code of the smallest value (E8M0: 0x00 = 2^−127; UE4M3: 0x00 = 0).</summary>
    public int MinCode { get; }

    /// <summary>Code of the largest finite value.</summary>
    public int MaxCode { get; }

    public float Max => _decode[MaxCode];

    /// <summary>Code → value for every storable code (NaN for the NaN code and for codes outside the format).</summary>
    public ReadOnlySpan<float> DecodeTable => _decode;

    public float Decode(int code) => _decode[code];

    public override string ToString() => Name;

    /// <summary>E8M0 (MX): value 2^(code−127), codes 0..254, 0xFF = NaN, no zero.</summary>
    public static ScaleFormat E8M0 { get; } = new("e8m0", 8, 8, 0, 127, hasSubnormals: false, nanCode: 0xFF);

    /// <summary>UE4M3 (NVFP4): E4M3 without its sign bit, 0 .. 448 with subnormals down to 2^−9; 0x7F = NaN.</summary>
    public static ScaleFormat UE4M3 { get; } = new("ue4m3", 8, 4, 3, 7, hasSubnormals: true, nanCode: 0x7F);

    /// <summary>
    /// General unsigned UExMy (NxFP NanoMantissa): no subnormals, every code finite; <paramref name="bias"/>
    /// defaults to 2^(x−1)−1. Stored in 8 bits when x + y ≤ 8, else 16.
    /// </summary>
    public static ScaleFormat UExMy(int exponentBits, int mantissaBits, int? bias = null)
    {
        int width = exponentBits + mantissaBits;
        if (exponentBits < 1 || mantissaBits < 0 || width > 16)
            throw new ArgumentOutOfRangeException(nameof(exponentBits), $"UE{exponentBits}M{mantissaBits}: need x ≥ 1, y ≥ 0, x + y ≤ 16.");
        return new ScaleFormat($"ue{exponentBits}m{mantissaBits}", width <= 8 ? 8 : 16, exponentBits, mantissaBits,
            bias ?? (1 << (exponentBits - 1)) - 1, hasSubnormals: false, nanCode: -1);
    }

    /// <summary>Nearest finite code to <paramref name="value"/> (ties per <paramref name="mode"/>: even code, or larger),
    /// saturating to the smallest/largest code. NaN throws.</summary>
    public int Encode(double value, RoundingMode mode = RoundingMode.NearestEven)
    {
        int i = FloorIndex(value);
        if (i < 0) return MinCode;
        if (i == _finiteCodes.Length - 1) return MaxCode;
        double lo = _decode[_finiteCodes[i]], hi = _decode[_finiteCodes[i + 1]];
        if (value == lo) return _finiteCodes[i];
        double midpoint = (lo + hi) / 2;
        bool up = value > midpoint ||
                  (value == midpoint && (mode == RoundingMode.NearestAway || (_finiteCodes[i] & 1) != 0));
        return _finiteCodes[up ? i + 1 : i];
    }

    /// <summary>Largest code whose value is ≤ <paramref name="value"/>, or <see cref="MinCode"/> when none is.</summary>
    public int FloorCode(double value)
    {
        int i = FloorIndex(value);
        return i < 0 ? MinCode : _finiteCodes[i];
    }

    /// <summary>Smallest code whose value is ≥ <paramref name="value"/>, or <see cref="MaxCode"/> when none is.</summary>
    public int CeilCode(double value)
    {
        int i = FloorIndex(value);
        if (i < 0) return MinCode;
        if (_decode[_finiteCodes[i]] == value || i == _finiteCodes.Length - 1) return _finiteCodes[i];
        return _finiteCodes[i + 1];
    }

    // Index into _finiteCodes of the largest value <= value, or -1.
    private int FloorIndex(double value)
    {
        if (double.IsNaN(value))
            throw new ArgumentException($"{Name}: a NaN scale cannot be encoded.", nameof(value));
        int lo = -1, hi = _finiteCodes.Length; // invariant: value(lo) <= value < value(hi)
        while (hi - lo > 1)
        {
            int mid = (lo + hi) >>> 1;
            if (_decode[_finiteCodes[mid]] <= value) lo = mid; else hi = mid;
        }
        return lo;
    }
}
