using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Codecs;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Pipeline;

public class EntropyCodedBlocksTests
{
    [Theory]
    [InlineData("mxfp4")]
    [InlineData("nvfp4")]
    [InlineData("mxfp6-e3m2:scale=mse")]
    public void EntropyCodingChangesTheSizeButNotOneDecodedValue(string format)
    {
        using var dir = new TempDir();
        using var source = CheckpointLoader.Open(SharedData.Gpt2Attn);
        var selection = new TensorSelection(exclude: "^h\\.([2-9]|1[01])\\.");  // layers 0 and 1 keep the test quick
        var plainCodec = CodecRegistry.Create(format);
        var codedCodec = CodecRegistry.Create($"{format}{(format.Contains(':') ? "," : ":")}entropy=rans");
        Assert.EndsWith("entropy=rans", codedCodec.Spec);
        var plain = Compressor.Compress(source, dir.File("p.safetensors"), new CompressOptions { Codec = plainCodec, Selection = selection });
        var coded = Compressor.Compress(source, dir.File("c.safetensors"), new CompressOptions { Codec = codedCodec, Selection = selection });
        Assert.True(coded.EncodedBitsPerWeight < plain.EncodedBitsPerWeight - 0.1, $"{coded.EncodedBitsPerWeight} vs {plain.EncodedBitsPerWeight}");

        using var a = LogicalCheckpoint.Open(dir.File("p.safetensors"));
        using var b = LogicalCheckpoint.Open(dir.File("c.safetensors"));
        Assert.Equal(codedCodec.Spec, b.Format);
        foreach (var tensor in a.Tensors.Where(t => t.Encoded is not null))
        {
            using var da = a.OpenDecoder(tensor);
            using var db = b.OpenDecoder(b.Find(tensor.Name)!);
            var x = new float[768 * 768];
            var y = new float[768 * 768];
            da.ReadRows(0, 768, x);
            db.ReadRows(0, 768, y);
            Assert.Equal(x, y);
        }
    }

    [Theory]
    [InlineData("lossless:entropy=rans", "block formats only")]
    [InlineData("mxfp4:entropy=zstd", "entropy=rans")]
    [InlineData("mxfp4:entropy=rans,entropy=rans", "entropy=rans")]
    public void MisusedEntropyOptionIsRefused(string spec, string expected)
    {
        var error = Assert.Throws<FormatSpecException>(() => CodecRegistry.Create(spec));
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void EntropyCodedCheckpointEvaluatesLikeThePlainFormat()
    {
        var plain = CliProcess.Run("eval", SharedData.Stories260K, "--text", SharedData.TinyStoriesText, "-f", "mxfp4", "--json").Json();
        var coded = CliProcess.Run("eval", SharedData.Stories260K, "--text", SharedData.TinyStoriesText, "-f", "mxfp4:entropy=rans", "--json").Json();
        Assert.Equal(plain.GetProperty("mean_nll").GetDouble(), coded.GetProperty("mean_nll").GetDouble());
        Assert.True(coded.GetProperty("bits_per_weight").GetDouble() < plain.GetProperty("bits_per_weight").GetDouble());
    }
}
