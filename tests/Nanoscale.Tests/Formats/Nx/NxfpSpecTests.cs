using Nanoscale.Formats;
using Nanoscale.Formats.Nx;
using Nanoscale.Codecs;

namespace Nanoscale.Tests.Formats.Nx;

/// <summary>Spec strings (SPEC §7) of the NxFP rows: options, canonical form, metadata layout and validation.</summary>
public class NxfpSpecTests
{
    private static NxfpCodec Nx(string spec) => Assert.IsType<NxfpCodec>(CodecRegistry.CreateBlockCodec(spec));

    [Theory]
    [InlineData("nxfp3", 3)]
    [InlineData("nxfp4", 4)]
    [InlineData("nxfp5", 5)]
    [InlineData("nxfp6", 6)]
    public void PresetsKeepTheMxMetadataBudget(string spec, int bits)
    {
        NxfpCodec codec = Nx(spec);
        Assert.Equal(bits, codec.ElementBits);
        Assert.Equal(8, codec.ScaleExponentBits + codec.NanoMantissaBits + codec.FormatSelectorBits + codec.LevelSelectorBits);
        Assert.Equal(1, codec.ScaleBytesPerBlock);
        Assert.Equal(bits + 0.25, codec.BitsPerWeight(10, 4096), 12);
        Assert.Equal(bits + 0.25, CodecRegistry.Table.Find(spec).NominalBitsPerWeight, 12);
        Assert.Equal(spec, codec.Spec);
    }

    [Fact]
    public void IssueExampleParsesAndLaysOutTheMetadataWord()
    {
        // nm=2, two AM candidates (1 selector bit), one fixed recycled level (no selector): UE5M2 + 1 bit = 8 bits.
        NxfpCodec codec = Nx("nxfp4:nm=2,am=e2m1|e1m2,cr=5");
        Assert.Equal(["e2m1", "e1m2"], codec.Formats.Select(f => f.Name));
        Assert.Equal((5, 2, 1, 0), (codec.ScaleExponentBits, codec.NanoMantissaBits, codec.FormatSelectorBits, codec.LevelSelectorBits));
        Assert.Equal("ue5m2", codec.Scale.Name);
        Assert.Equal(23, codec.Scale.Bias);
        Assert.Equal(5f, codec.Level(0, 0));
        Assert.Equal(5f, codec.Level(1, 0));
        Assert.Equal(0b1_01101_10, codec.Word(0b01101_10, 1, 0));
        Assert.Equal((0b01101_10, 1, 0), codec.SplitWord(0b1_01101_10));
    }

    [Fact]
    public void CanonicalSpecDropsDefaultsAndNormalizesCase()
    {
        Assert.Equal("nxfp4", Nx("NXFP4:round=even").Spec);
        Assert.Equal("nxfp4:nm=0,am=e2m1,cr=ext", Nx("nxfp4:cr=EXT, am=E2M1, nm=0").Spec);
        Assert.Equal("nxfp4:cr=auto", Nx("nxfp4:cr=auto").Spec);
    }

    [Fact]
    public void AutoBudgetShrinksTheExponentAndOverflowsToASixteenBitWord()
    {
        NxfpCodec mxLike = Nx("nxfp4:nm=0,am=e2m1,cr=off");
        Assert.Equal((8, 128), (mxLike.ScaleExponentBits, mxLike.Scale.Bias)); // 2^−128 … 2^127
        NxfpCodec wide = Nx("nxfp4:nm=4,am=e2m1|e1m2|e3m0,cr=auto");   // 4 + 2 + 1 bits leave < 4: 16-bit word
        Assert.Equal((8, 2, 15), (wide.ScaleExponentBits, wide.ScaleBytesPerBlock, wide.MetadataBits));
        Assert.Equal(4.5, wide.BitsPerWeight(1, 4096), 12);
    }

    [Theory]
    [InlineData("nxfp4", "gap|ext", new[] { 5f, 8f })]        // E2M1: 4, 6 → gap 5, ext 8
    [InlineData("nxfp5:am=e2m2", "auto", new[] { 6.5f, 8f })] // E2M2 top: 6, 7 → 6.5, 8
    [InlineData("nxfp4:am=e1m2", "-gap|-ext|2.25", new[] { -3.25f, -4f, 2.25f })]
    public void SymbolicLevelsResolvePerFormat(string spec, string cr, float[] expected)
    {
        NxfpCodec codec = Nx($"{spec},cr={cr}".Replace("nxfp4,", "nxfp4:").Replace("nxfp5,", "nxfp5:"));
        Assert.Equal(expected, Enumerable.Range(0, codec.LevelCount).Select(l => codec.Level(0, l)));
    }

    [Theory]
    [InlineData("nxfp4:am=e2m2", "4-bit element format")]
    [InlineData("nxfp4:am=e2m1|e2m1", "twice")]
    [InlineData("nxfp4:cr=6", "already")]
    [InlineData("nxfp4:cr=0", "already")]
    [InlineData("nxfp4:cr=five", "not a valid cr level")]
    [InlineData("nxfp4:nm=9", "not a valid nm")]
    [InlineData("nxfp4:se=9", "not a valid se")]
    [InlineData("nxfp4:nm=8,se=8", "at most 16")]
    [InlineData("nxfp4:se=8,bias=200", "not a valid bias")]
    [InlineData("nxfp4:se=8,bias=-5,am=e2m1,nm=0", "not representable")]
    [InlineData("nxfp4:foo=1", "valid keys")]
    [InlineData("nxfp4:round=up", "valid values")]
    public void BadOptionsAreErrorsThatSayWhatIsValid(string spec, string fragment)
    {
        var e = Assert.Throws<FormatSpecException>(() => CodecRegistry.CreateBlockCodec(spec));
        Assert.Contains(fragment, e.Message);
    }

    [Fact]
    public void ListSplittingKeepsMultiOptionSpecsTogether()
    {
        Assert.Equal(["mxfp4", "nxfp4:nm=2,am=e2m1|e1m2,cr=5", "nvfp4"],
            FormatSpec.SplitList("mxfp4, nxfp4:nm=2,am=e2m1|e1m2,cr=5 ,nvfp4"));
        Assert.Equal(["nxfp4:nm=1", "nxfp4:nm=2,cr=gap"], FormatSpec.SplitList("nxfp4:nm=1;nxfp4:nm=2,cr=gap"));
    }
}
