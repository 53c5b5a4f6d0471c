using Nanoscale.Formats;

namespace Nanoscale.Tests.Formats;

public class ScaleFormatTests
{
    [Fact]
    public void E8M0EveryCodeIsAPowerOfTwoAndRoundTrips()
    {
        ScaleFormat f = ScaleFormat.E8M0;
        for (int c = 0; c <= 254; c++)
        {
            Assert.Equal(Math.ScaleB(1.0, c - 127), f.Decode(c));
            Assert.Equal(c, f.Encode(f.Decode(c)));
            Assert.Equal(c, f.FloorCode(f.Decode(c)));
            Assert.Equal(c, f.CeilCode(f.Decode(c)));
        }
        Assert.True(float.IsNaN(f.Decode(0xFF)));
        Assert.Equal(0, f.MinCode);
        Assert.Equal(254, f.MaxCode);
        Assert.Equal(0, f.Encode(0)); // no zero: the smallest scale
        Assert.Equal(127 + 1, f.Encode(3.0)); // tie between 2 (code 128, even) and 4 (129)
        Assert.Equal(127 + 2, f.Encode(3.0, RoundingMode.NearestAway));
        Assert.Equal(127 + 1, f.FloorCode(3.9));
        Assert.Equal(127 + 2, f.CeilCode(2.1));
    }

    [Fact]
    public void UE4M3EveryCodeRoundTripsAndMatchesTheE4M3Cast()
    {
        ScaleFormat f = ScaleFormat.UE4M3;
        for (int c = 0; c <= 0x7E; c++)
        {
            Assert.Equal(ElementFormat.E4M3.Decode(c), f.Decode(c));
            Assert.Equal(c, f.Encode(f.Decode(c)));
        }
        Assert.True(float.IsNaN(f.Decode(0x7F)));
        Assert.True(float.IsNaN(f.Decode(0x80)));
        Assert.Equal(448f, f.Max);
        Assert.Equal(MathF.ScaleB(1, -9), f.Decode(1));
        Assert.Equal(1f, f.Decode(0x38));
        var random = new Random(7);
        for (int i = 0; i < 50000; i++)
        {
            float t = MathF.ScaleB((float)random.NextDouble(), random.Next(-14, 11));
            Assert.Equal(f.Encode(t), ElementFormat.E4M3.Encode(t));
        }
    }

    [Fact]
    public void UExMyHasTheDefaultOrGivenBiasAndNoSubnormals()
    {
        ScaleFormat f = ScaleFormat.UExMy(5, 2);
        Assert.Equal(15, f.Bias);
        Assert.Equal(MathF.ScaleB(1, -15), f.Decode(0));
        Assert.Equal(MathF.ScaleB(1.75f, 16), f.Decode(127));
        Assert.Equal(-1, f.NaNCode);
        ScaleFormat g = ScaleFormat.UExMy(5, 3, bias: 24);
        Assert.Equal(MathF.ScaleB(1, -24), g.Decode(0));
        Assert.Equal(MathF.ScaleB(1.875f, 7), g.Decode(255));
        for (int c = 0; c < 256; c++)
            Assert.Equal(c, g.Encode(g.Decode(c)));
        Assert.Equal(0, g.Encode(1e-30));
        Assert.Equal(255, g.Encode(1e30));
        Assert.Equal(16, ScaleFormat.UExMy(6, 5).StorageBits);
    }
}
