using Nanoscale.Formats;

namespace Nanoscale.Tests.Formats;

public class FormatListTests
{
    [Theory]
    [InlineData("mxfp4,nvfp4", new[] { "mxfp4", "nvfp4" })]
    [InlineData("vp:mant=4,taper=1,width=3,mxfp4", new[] { "vp:mant=4,taper=1,width=3", "mxfp4" })]
    [InlineData("nxfp4:nm=2,am=e2m1|e1m2,cr=5, mxfp6:scale=mse", new[] { "nxfp4:nm=2,am=e2m1|e1m2,cr=5", "mxfp6:scale=mse" })]
    [InlineData("vp:mant=3;vp:mant=2,floor=100", new[] { "vp:mant=3", "vp:mant=2,floor=100" })]
    [InlineData("caldera:rank=8,q=mxfp4:scale=mse;round=away,lr=mxint4,mxfp4", new[] { "caldera:rank=8,q=mxfp4:scale=mse;round=away,lr=mxint4", "mxfp4" })]
    public void SpecStringsWithCommasStayWhole(string list, string[] expected) => Assert.Equal(expected, FormatSpec.SplitList(list));

    [Theory]
    [InlineData("scale=mse,mxfp4", "has no format before it")]
    [InlineData("mxfp4;scale=mse", "has no format before it")]
    [InlineData("scale=mse;mxfp4", "has no format before it")]
    [InlineData(" , ;", "empty")]
    public void MalformedListsAreRefused(string list, string expected) =>
        Assert.Contains(expected, Assert.Throws<FormatSpecException>(() => FormatSpec.SplitList(list)).Message);
}
