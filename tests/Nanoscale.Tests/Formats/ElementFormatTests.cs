using Nanoscale.Formats;

namespace Nanoscale.Tests.Formats;

public class ElementFormatTests
{
    /// <summary>Every element format: the OCP ones, MXINT2..8 and every ExMy width 2..8 of the general rule.</summary>
    public static IEnumerable<ElementFormat> AllFormats()
    {
        yield return ElementFormat.E4M3;
        yield return ElementFormat.E5M2;
        for (int n = 2; n <= 8; n++)
            yield return ElementFormat.Int(n);
        for (int x = 0; x <= 7; x++)
        for (int y = 0; x + y <= 7; y++)
            if (1 + x + y >= 2)
                yield return ElementFormat.Minifloat(x, y);
    }

    public static TheoryData<string> FormatNames()
    {
        var data = new TheoryData<string>();
        foreach (ElementFormat f in AllFormats())
            data.Add(Key(f));
        return data;
    }

    private static string Key(ElementFormat f) => f.Specials == SpecialCodes.None ? f.Name : f.Name + "-ocp";

    private static ElementFormat ByKey(string key) => AllFormats().First(f => Key(f) == key);

    [Theory]
    [InlineData("e4m3-ocp", 448f, 8)]
    [InlineData("e5m2-ocp", 57344f, 15)]
    [InlineData("e3m2", 28f, 4)]
    [InlineData("e2m3", 7.5f, 2)]
    [InlineData("e2m1", 6f, 2)]
    [InlineData("int8", 127f / 64, 0)]
    [InlineData("int4", 7f / 4, 0)]
    [InlineData("int2", 1f, 0)]
    public void MaxAndEmaxMatchSpec(string key, float max, int emax)
    {
        ElementFormat f = ByKey(key);
        Assert.Equal(max, f.Max);
        Assert.Equal(emax, f.Emax);
    }

    [Fact]
    public void E2M1DecodesToTheOcpMagnitudes()
    {
        float[] expected = [0, 0.5f, 1, 1.5f, 2, 3, 4, 6];
        for (int c = 0; c < 8; c++)
        {
            Assert.Equal(expected[c], ElementFormat.E2M1.Decode(c));
            Assert.Equal(-expected[c], ElementFormat.E2M1.Decode(c | 8));
        }
        Assert.True(float.IsNegative(ElementFormat.E2M1.Decode(8))); // −0
    }

    [Fact]
    public void SpecialCodesAreWhereOcpPutsThem()
    {
        Assert.True(float.IsNaN(ElementFormat.E4M3.Decode(0x7F)));
        Assert.True(float.IsNaN(ElementFormat.E4M3.Decode(0xFF)));
        Assert.Equal(448f, ElementFormat.E4M3.Decode(0x7E));
        Assert.Equal(float.PositiveInfinity, ElementFormat.E5M2.Decode(0x7C));
        Assert.Equal(float.NegativeInfinity, ElementFormat.E5M2.Decode(0xFC));
        for (int c = 0x7D; c <= 0x7F; c++)
            Assert.True(float.IsNaN(ElementFormat.E5M2.Decode(c)));
        Assert.Equal(57344f, ElementFormat.E5M2.Decode(0x7B));
        Assert.Equal(MathF.ScaleB(1, -9), ElementFormat.E4M3.Decode(1));
        Assert.Equal(MathF.ScaleB(1, -16), ElementFormat.E5M2.Decode(1));
        Assert.Equal(-2f, ElementFormat.Int8.Decode(0x80));
        Assert.Equal(-127f / 64, ElementFormat.Int8.Decode(0x81));
        Assert.Equal(1f / 64, ElementFormat.Int8.Decode(1));
    }

    [Theory]
    [MemberData(nameof(FormatNames))]
    public void EveryCodeRoundTrips(string key)
    {
        ElementFormat f = ByKey(key);
        for (int c = 0; c < 1 << f.Bits; c++)
        {
            float v = f.Decode(c);
            if (float.IsNaN(v))
                continue;
            int expected = c;
            if (c == f.NegativeZeroCode)
                expected = 0; // −0 encodes as the canonical +0 code
            else if (float.IsInfinity(v))
                expected = f.ApplySignForTest(f.MaxMagnitudeCode, v < 0); // Inf saturates
            else if (f.Encoding == ElementEncoding.TwosComplement && c == 1 << (f.Bits - 1))
                expected = c + 1; // −2 is decoded but saturates to the symmetric −(2^(n−1)−1)
            foreach (RoundingMode mode in Enum.GetValues<RoundingMode>())
            {
                Assert.Equal(expected, f.Encode(v, mode));
                Assert.Equal(expected, f.EncodeReference(v, mode));
            }
        }
    }

    [Theory]
    [MemberData(nameof(FormatNames))]
    public void FastEncodeMatchesReferenceAtEveryMidpointAndNeighbour(string key)
    {
        ElementFormat f = ByKey(key);
        var values = new List<float>();
        float[] magnitudes = [.. Enumerable.Range(0, f.MaxMagnitudeCode + 1).Select(f.Decode)];
        for (int k = 0; k < magnitudes.Length; k++)
        {
            float lo = magnitudes[k], hi = k + 1 < magnitudes.Length ? magnitudes[k + 1] : magnitudes[k] * 2;
            float mid = (float)(((double)lo + hi) / 2); // exact: neighbours differ by few bits
            Assert.Equal(((double)lo + hi) / 2, mid);
            foreach (float v in new[] { lo, hi, mid, MathF.BitDecrement(mid), MathF.BitIncrement(mid), MathF.BitIncrement(lo), MathF.BitDecrement(hi) })
                values.AddRange([v, -v]);
        }
        values.AddRange([0f, -0f, float.Epsilon, -float.Epsilon, 1e-40f, 1e-30f, float.MaxValue, -float.MaxValue,
            float.PositiveInfinity, float.NegativeInfinity, f.Max * 1.0001f, MathF.ScaleB(1, -126)]);
        var random = new Random(1234);
        for (int i = 0; i < 20000; i++)
            values.Add(MathF.ScaleB((float)(random.NextDouble() * 2 - 1), random.Next(-30, 20)));
        foreach (float v in values)
        foreach (RoundingMode mode in Enum.GetValues<RoundingMode>())
            Assert.True(f.Encode(v, mode) == f.EncodeReference(v, mode),
                $"{f.Name} {mode}: {v:R} fast {f.Encode(v, mode)} reference {f.EncodeReference(v, mode)}");
    }

    [Theory]
    [MemberData(nameof(FormatNames))]
    public void ReferenceEncodeIsTheNearestValueByBruteForce(string key)
    {
        ElementFormat f = ByKey(key);
        var random = new Random(99);
        for (int i = 0; i < 3000; i++)
        {
            double x = Math.ScaleB(random.NextDouble() * 2 - 1, random.Next(-12, 10));
            int code = f.EncodeReference(x);
            double error = Math.Abs(f.Decode(code) - x);
            for (int c = 0; c < 1 << f.Bits; c++)
            {
                float v = f.Decode(c);
                if (!float.IsFinite(v)) continue;
                if (f.Encoding == ElementEncoding.TwosComplement && c == 1 << (f.Bits - 1)) continue; // never emitted
                Assert.True(error <= Math.Abs(v - x), $"{f.Name}: {x} → code {code} but code {c} is nearer");
            }
        }
    }

    [Theory]
    [MemberData(nameof(FormatNames))]
    public void EncodeIsMonotonic(string key)
    {
        ElementFormat f = ByKey(key);
        float previous = float.NegativeInfinity;
        for (double x = -2.5 * f.Max; x <= 2.5 * f.Max; x += f.Max / 997)
        {
            float decoded = f.Decode(f.Encode((float)x));
            Assert.True(decoded >= previous, $"{f.Name}: decode(encode({x})) = {decoded} < {previous}");
            previous = decoded;
        }
    }

    [Theory]
    [InlineData(0.25f, 0f, 0.5f)]
    [InlineData(0.75f, 1f, 1f)]
    [InlineData(1.25f, 1f, 1.5f)]
    [InlineData(1.75f, 2f, 2f)]
    [InlineData(2.5f, 2f, 3f)]
    [InlineData(3.5f, 4f, 4f)]
    [InlineData(5f, 4f, 6f)]
    [InlineData(-2.5f, -2f, -3f)]
    [InlineData(100f, 6f, 6f)]
    public void E2M1TiesGoToEvenOrAway(float x, float even, float away)
    {
        Assert.Equal(even, ElementFormat.E2M1.Decode(ElementFormat.E2M1.Encode(x, RoundingMode.NearestEven)));
        Assert.Equal(away, ElementFormat.E2M1.Decode(ElementFormat.E2M1.Encode(x, RoundingMode.NearestAway)));
    }

    [Fact]
    public void IntTiesGoToEvenIntegers()
    {
        ElementFormat f = ElementFormat.Int8;
        Assert.Equal(2, f.Encode(2.5f / 64));
        Assert.Equal(4, f.Encode(3.5f / 64));
        Assert.Equal(0xFE, f.Encode(-2.5f / 64)); // −2 in two's complement
        Assert.Equal(3, f.Encode(2.5f / 64, RoundingMode.NearestAway));
        Assert.Equal(0x81, f.Encode(-100f)); // symmetric saturation: −127
        Assert.Equal(0x7F, f.Encode(100f));
    }

    [Fact]
    public void NegativeZeroIsNeverEmitted()
    {
        foreach (ElementFormat f in AllFormats())
        {
            Assert.Equal(0, f.Encode(-0f));
            Assert.Equal(0, f.Encode(-f.Decode(1) / 4));
            Assert.Equal(0, f.EncodeReference(-0.0));
            if (f.Encoding == ElementEncoding.SignMagnitude)
                Assert.True(float.IsNegative(f.Decode(f.NegativeZeroCode)) && f.Decode(f.NegativeZeroCode) == 0);
        }
    }

    [Fact]
    public void NaNEncodesToTheNaNCodeOrThrows()
    {
        Assert.True(float.IsNaN(ElementFormat.E4M3.Decode(ElementFormat.E4M3.Encode(float.NaN))));
        Assert.True(float.IsNaN(ElementFormat.E5M2.Decode(ElementFormat.E5M2.Encode(float.NaN))));
        Assert.Throws<ArgumentException>(() => ElementFormat.E2M1.Encode(float.NaN));
    }

    [Fact]
    public void FloorLog2IsExactForSubnormalsAndNormals()
    {
        Assert.Equal(-149, ElementFormatTestAccess.FloorLog2(float.Epsilon));
        Assert.Equal(-127, ElementFormatTestAccess.FloorLog2(MathF.ScaleB(1.5f, -127)));
        Assert.Equal(-126, ElementFormatTestAccess.FloorLog2(MathF.ScaleB(1, -126)));
        Assert.Equal(9, ElementFormatTestAccess.FloorLog2(960f));
        Assert.Equal(127, ElementFormatTestAccess.FloorLog2(float.MaxValue));
        Assert.Equal(0, ElementFormatTestAccess.FloorLog2(MathF.BitDecrement(2f)));
    }

    [Fact]
    public void InvalidWidthsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => ElementFormat.Minifloat(5, 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => ElementFormat.Int(9));
        Assert.Throws<ArgumentOutOfRangeException>(() => ElementFormat.Minifloat(0, 0));
    }
}

internal static class ElementFormatTestAccess
{
    public static int FloorLog2(float x) => ElementFormat.ExactFloorLog2(x);

    public static int ApplySignForTest(this ElementFormat f, int magnitude, bool negative) =>
        f.ApplySign(magnitude, negative ? 1u : 0u);
}
