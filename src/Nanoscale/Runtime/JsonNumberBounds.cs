using System.Globalization;
using System.Numerics;
using System.Text.Json;

namespace Nanoscale.Runtime;

/// <summary>
/// A number's bounds in a JSON schema — <c>minimum</c>, <c>maximum</c>, <c>exclusiveMinimum</c>, <c>exclusiveMaximum</c>
/// (numbers, or draft 4's booleans) and <c>multipleOf</c> — in exact decimal arithmetic, so a bound such as 0.1 is 0.1
/// and not the nearest double. <see cref="JsonConstraint"/> asks <see cref="Reachable"/> after each character of a
/// number (is there a number beginning so, within the characters left, that holds?) and <see cref="Holds"/> when the
/// number ends. Numbers held to bounds are written without an exponent: with one, any beginning could still reach any
/// magnitude.
/// </summary>
internal sealed class JsonNumberBounds
{
    /// <summary>Exponents beyond this in a schema's bound leave that bound out (no huge integers from a request).</summary>
    private const int MaxExponent = 400;

    private readonly Exact? _min, _max, _step;
    private readonly bool _minExclusive, _maxExclusive;

    private JsonNumberBounds(Exact? min, bool minExclusive, Exact? max, bool maxExclusive, Exact? step) =>
        (_min, _minExclusive, _max, _maxExclusive, _step) = (min, minExclusive, max, maxExclusive, step);

    /// <summary>An exact decimal (a bound's value as written): <see cref="Units"/> × 10^−<see cref="Scale"/> (scale ≥ 0).</summary>
    internal readonly record struct Exact(BigInteger Units, int Scale)
    {
        public static Exact? Parse(string text)
        {
            int e = text.IndexOfAny(['e', 'E']);
            int exponent = 0;
            if (e >= 0 && !int.TryParse(text.AsSpan(e + 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out exponent)) return null;
            var mantissa = e >= 0 ? text[..e] : text;
            int dot = mantissa.IndexOf('.');
            int scale = dot < 0 ? 0 : mantissa.Length - dot - 1;
            if (Math.Abs(exponent) > MaxExponent || scale > MaxExponent) return null;
            if (!BigInteger.TryParse(dot < 0 ? mantissa : mantissa.Remove(dot, 1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var units))
                return null;
            scale -= exponent;
            return scale >= 0 ? new Exact(units, scale) : new Exact(units * BigInteger.Pow(10, -scale), 0);
        }

        public Exact At(int scale) => scale == Scale ? this : new(Units * BigInteger.Pow(10, scale - Scale), scale);

        public static int Compare(Exact a, Exact b)
        {
            int scale = Math.Max(a.Scale, b.Scale);
            return a.At(scale).Units.CompareTo(b.At(scale).Units);
        }

        public static Exact Negate(Exact a) => new(-a.Units, a.Scale);
    }

    /// <summary>The bounds <paramref name="schema"/> sets, or null when it sets none (or none usable).</summary>
    public static JsonNumberBounds? From(JsonElement schema)
    {
        Exact? Number(string name) =>
            schema.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? Exact.Parse(v.GetRawText()) : null;
        bool Flag(string name) => schema.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.True;

        Exact? min = Number("minimum"), max = Number("maximum");
        bool minExclusive = min is not null && Flag("exclusiveMinimum"), maxExclusive = max is not null && Flag("exclusiveMaximum");
        // Draft 6 and later: exclusive bounds are numbers of their own; the tighter bound wins.
        if (Number("exclusiveMinimum") is { } exMin && (min is not { } m0 || Exact.Compare(exMin, m0) >= 0)) (min, minExclusive) = (exMin, true);
        if (Number("exclusiveMaximum") is { } exMax && (max is not { } m1 || Exact.Compare(exMax, m1) <= 0)) (max, maxExclusive) = (exMax, true);
        var step = Number("multipleOf") is { Units.Sign: > 0 } s ? s : (Exact?)null;
        if (min is null && max is null && step is null) return null;
        return new JsonNumberBounds(min, minExclusive, max, maxExclusive, step);
    }

    /// <summary>Whether the whole number <paramref name="text"/> (JSON, no exponent) holds.</summary>
    public bool Holds(string text)
    {
        if (Exact.Parse(text) is not { } value) return false;
        return Exists(value, value, new Exact(1, value.Scale));
    }

    /// <summary>Whether some number that begins with <paramref name="prefix"/> (a JSON number's beginning without an
    /// exponent: sign, digits, a dot, digits) and has at most <paramref name="charactersLeft"/> more characters holds.</summary>
    public bool Reachable(string prefix, bool integerOnly, int charactersLeft)
    {
        bool negative = prefix.StartsWith('-');
        var body = negative ? prefix[1..] : prefix;
        if (body.Length == 0)
        {
            // A sign alone: any first digit.
            for (char d = '0'; d <= '9'; d++)
                if (charactersLeft >= 1 && Reachable(prefix + d, integerOnly, charactersLeft - 1)) return true;
            return false;
        }
        int dot = body.IndexOf('.');
        if (dot >= 0)
        {
            // The digits so far fix the value up to the next fraction digits: [P.F, P.F + 10^−m) on a grid of the
            // digits that can still come.
            int m = body.Length - dot - 1, f = charactersLeft;
            if (m + f == 0) return false;
            var low = Exact.Parse(body + (m == 0 ? "0" : ""))!.Value.At(m + f);
            var high = new Exact(low.Units + BigInteger.Pow(10, f) - 1, m + f);
            return Interval(low, high, negative, m + f);
        }
        var p = BigInteger.Parse(body, CultureInfo.InvariantCulture);
        // An integer part P: P itself, P followed by k more digits (not after a leading zero), each with fraction digits
        // in the characters then left.
        for (int k = 0; k <= (p.IsZero ? 0 : charactersLeft); k++)
        {
            int f = integerOnly ? 0 : Math.Max(0, charactersLeft - k - 1);
            var scale = BigInteger.Pow(10, k + f);
            var low = new Exact(p * scale, f);
            var high = new Exact((p + 1) * scale - 1, f);
            if (Interval(low, high, negative, f)) return true;
            // Past the maximum (or below the minimum, for negatives) longer integer parts only go further.
            if (!negative && _max is { } max && Exact.Compare(low, max) > 0) break;
            if (negative && _min is { } min && Exact.Compare(Exact.Negate(low), min) < 0) break;
        }
        return false;
    }

    /// <summary>Whether a number on the grid 10^−<paramref name="scale"/> in [<paramref name="low"/>, <paramref name="high"/>]
    /// (magnitudes; negated when <paramref name="negative"/>) holds.</summary>
    private bool Interval(Exact low, Exact high, bool negative, int scale) =>
        negative ? Exists(Exact.Negate(high), Exact.Negate(low), new Exact(1, scale)) : Exists(low, high, new Exact(1, scale));

    /// <summary>Whether some multiple of <paramref name="grid"/> (and of the step) in [<paramref name="low"/>,
    /// <paramref name="high"/>] is within the bounds.</summary>
    private bool Exists(Exact low, Exact high, Exact grid)
    {
        // Everything on one scale; the grid becomes the least common multiple of the grid and the step.
        int scale = new[] { low.Scale, high.Scale, grid.Scale, _min?.Scale ?? 0, _max?.Scale ?? 0, _step?.Scale ?? 0 }.Max();
        var lo = low.At(scale).Units;
        var hi = high.At(scale).Units;
        var g = grid.At(scale).Units;
        if (_step is { } step)
        {
            var s = step.At(scale).Units;
            g = g / BigInteger.GreatestCommonDivisor(g, s) * s;
        }
        // All values are on the grid of this scale's units, so "above an exclusive minimum" is "at least one unit above".
        if (_min is { } min) lo = BigInteger.Max(lo, _minExclusive ? min.At(scale).Units + 1 : min.At(scale).Units);
        if (_max is { } max) hi = BigInteger.Min(hi, _maxExclusive ? max.At(scale).Units - 1 : max.At(scale).Units);
        if (lo > hi) return false;
        // The least multiple of g at or above lo.
        var first = CeilingDivide(lo, g) * g;
        return first <= hi;
    }

    private static BigInteger CeilingDivide(BigInteger a, BigInteger b)
    {
        var q = BigInteger.DivRem(a, b, out var r);
        return r > 0 ? q + 1 : q;
    }
}
