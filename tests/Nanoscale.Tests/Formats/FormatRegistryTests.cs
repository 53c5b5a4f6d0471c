using Nanoscale.Formats;
using Nanoscale.Codecs;

namespace Nanoscale.Tests.Formats;

public class FormatRegistryTests
{
    private static readonly FormatRegistry Registry = CodecRegistry.Table;

    /// <summary>The names of the table's block formats.</summary>
    private static IEnumerable<string> BlockNames() => CodecRegistry.Table.Names.Where(n => CodecRegistry.Create(n) is BlockTensorCodec);

    public static TheoryData<string> AllNames()
    {
        var data = new TheoryData<string>();
        foreach (string name in BlockNames())
            data.Add(name);
        return data;
    }

    [Fact]
    public void BuiltinNamesAreTheSpecList()
    {
        string[] blocks = ["mxfp4", "mxfp5-e2m2", "mxfp5-e3m1", "mxfp6", "mxfp6-e2m3", "mxfp6-e3m2", "mxfp8", "mxfp8-e4m3", "mxfp8-e5m2",
            "mxint2", "mxint3", "mxint4", "mxint5", "mxint6", "mxint7", "mxint8", "nvfp4",
            "nxfp3", "nxfp4", "nxfp5", "nxfp6", "nxfp7", "nxfp8", "nxfp4-m16",
            // llama.cpp's formats, beyond SPEC §7 (docs/gguf.md): for GGUF files and side-by-side measurements.
            "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "ggml-mxfp4",
            // The E8 lattice vector quantizer (issue 16, docs/e8.md).
            "e8"];
        string[] container = ["f32", "bf16", "f16", "lossless", "vp", "caldera"];
        Assert.Equal(blocks.Concat(container).Order(StringComparer.Ordinal), Registry.Names);
        Assert.Equal(blocks.Order(StringComparer.Ordinal), BlockNames().Order(StringComparer.Ordinal));
    }

    [Theory]
    [InlineData("mxfp8", "mxfp8-e4m3")]
    [InlineData("mxfp6", "mxfp6-e2m3")]
    [InlineData("MXFP4", "mxfp4")]
    [InlineData(" mxfp4 : scale = ceil ", "mxfp4:scale=ceil")]
    [InlineData("mxfp4:scale=floor,round=even", "mxfp4")]
    [InlineData("mxfp4:round=away,scale=mse", "mxfp4:scale=mse,round=away")]
    [InlineData("nvfp4:round=away", "nvfp4:round=away")]
    [InlineData("mxint3:scale=Ceil", "mxint3:scale=ceil")]
    public void SpecsAreCanonicalised(string spec, string canonical) =>
        Assert.Equal(canonical, Registry.Create(spec).Spec);

    [Theory]
    [MemberData(nameof(AllNames))]
    public void EveryNameBuildsACodecWhoseSpecRoundTrips(string name)
    {
        IBlockCodec codec = CodecRegistry.CreateBlockCodec(name);
        Assert.Equal(codec.Spec, Registry.Create(codec.Spec).Spec);
        FormatTraits traits = Registry.Find(name);
        Assert.Equal(traits.NominalBitsPerWeight, codec.BitsPerWeight(4096, 4096), 4);
    }

    [Fact]
    public void UnknownNameListsTheValidNames()
    {
        var ex = Assert.Throws<FormatSpecException>(() => Registry.Create("mxfp5"));
        Assert.Contains("mxfp5", ex.Message);
        foreach (string name in Registry.Names)
            Assert.Contains(name, ex.Message);
    }

    [Fact]
    public void UnknownKeyListsTheValidKeys()
    {
        var ex = Assert.Throws<FormatSpecException>(() => Registry.Create("mxfp4:block=16"));
        Assert.Contains("block", ex.Message);
        Assert.Contains("scale", ex.Message);
        Assert.Contains("round", ex.Message);
    }

    [Fact]
    public void BadValueListsTheValidValues()
    {
        var ex = Assert.Throws<FormatSpecException>(() => Registry.Create("mxfp4:scale=max"));
        Assert.Contains("floor, ceil, mse", ex.Message);
    }

    [Theory]
    [InlineData("")]
    [InlineData(":scale=ceil")]
    [InlineData("mxfp4:")]
    [InlineData("mxfp4:scale")]
    [InlineData("mxfp4:scale=ceil,scale=floor")]
    [InlineData("mxfp4:scale=ceil,,round=even")]
    public void MalformedSpecsAreRejected(string spec) =>
        Assert.Throws<FormatSpecException>(() => Registry.Create(spec));

    [Fact]
    public void ParserKeepsOrderAndPipes()
    {
        FormatSpec s = FormatSpec.Parse("nxfp4:nm=2,am=e2m1|e1m2,cr=5");
        Assert.Equal("nxfp4", s.Name);
        Assert.Equal(["nm", "am", "cr"], s.Options.Select(o => o.Key));
        Assert.Equal("e2m1|e1m2", s["am"]);
        Assert.Null(s["x"]);
    }

    [Fact]
    public void RegistryIsExtensible()
    {
        var extra = new FormatTraits("lossless-test", ["lt"], "test row", 16, [],
            (spec, canonical) => new NamedCodec(canonical));
        FormatRegistry extended = Registry.With(extra);
        Assert.Equal("lossless-test", extended.Create("lt").Spec);
        Assert.IsNotAssignableFrom<IBlockCodec>(extended.Create("lt"));
        Assert.Throws<FormatSpecException>(() => extended.Create("lt:x=1"));
        Assert.Throws<ArgumentException>(() => extended.With(extra));
        Assert.Throws<FormatSpecException>(() => Registry.Create("lt")); // the builtin registry is unchanged
    }

    private sealed record NamedCodec(string Spec) : ICodec;
}
