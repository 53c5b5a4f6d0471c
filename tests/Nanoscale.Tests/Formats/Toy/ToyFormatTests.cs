using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Formats.Toy;

/// <summary>
/// Adding a format touches one folder and one table line (docs/architecture.md): the toy format of this folder, added
/// to a copy of the table with one line, is parsed, canonicalised, checked against its reference twin and stored in a
/// real compressed checkpoint through the same driver and container as the built-in formats.
/// </summary>
public class ToyFormatTests
{
    // The one line: the table with the toy's rows added.
    private static readonly FormatRegistry Table = CodecRegistry.Table.With([.. ToyInt4Formats.Traits()]);

    private static IBlockCodec Toy => Assert.IsAssignableFrom<IBlockCodec>(Table.Create(" ToyInt4 "));

    [Fact]
    public void TheTableKnowsTheToy()
    {
        Assert.Contains("toyint4", Table.Names);
        Assert.Equal("toyint4", Toy.Spec);
        Assert.Equal(4.5, Toy.BitsPerWeight(64, 4096), 12);
        Assert.Contains("takes no options", Assert.Throws<FormatSpecException>(() => Table.Create("toyint4:scale=mse")).Message);
        Assert.DoesNotContain("toyint4", CodecRegistry.Table.Names); // the library's table is unchanged
    }

    [Theory]
    [InlineData(7, 16)]
    [InlineData(5, 50)]   // a short final block
    [InlineData(33, 768)] // several threads
    public void FastKernelMatchesTheReferenceByteForByte(int rows, int cols)
    {
        var rng = new Random(rows * 1000 + cols);
        var values = new float[rows * cols];
        for (int i = 0; i < values.Length; i++) values[i] = (float)((rng.NextDouble() - 0.5) * Math.Exp(rng.Next(-20, 5)));
        var reference = CodecHarness.Quantize(Toy, values, rows, cols, new CodecOptions { Kernel = CodecKernel.Reference });
        var fast = CodecHarness.Quantize(Toy, values, rows, cols, new CodecOptions { Parallelism = new(2) });
        Assert.Equal(reference.Blocks, fast.Blocks);
        Assert.Equal(reference.Scales, fast.Scales);
    }

    [Fact]
    public void TheToyIsStoredLikeEveryBlockFormat()
    {
        using var dir = new TempDir();
        var output = dir.File("toy.safetensors");
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var report = Compressor.Compress(source, output, new CompressOptions { Codec = new BlockTensorCodec(Toy) });
        Assert.InRange(report.EncodedBitsPerWeight, 4.5, 4.53); // 4.5, and a little more for the 172-wide rows' short blocks

        // The stored parts are the codec's own bytes, under the block layout every block format uses.
        using var written = CheckpointLoader.Open(output);
        Assert.Contains(written.Metadata, m => m.Key == "nanoscale.format" && m.Value == "toyint4");
        var tensor = source.Tensors.First(t => t.Name.Contains("mlp.down_proj")); // 172 columns: short final blocks
        using var view = source.Map(tensor);
        var expected = CodecHarness.Quantize(Toy, view.ToFloatArray(), (int)tensor.Rows, (int)tensor.Columns);
        using (var blocks = written.Map(written.Find($"{tensor.Name}.blocks")!)) Assert.Equal(expected.Blocks, blocks.Bytes.ToArray());
        using (var scales = written.Map(written.Find($"{tensor.Name}.scales")!)) Assert.Equal(expected.Scales, scales.Bytes.ToArray());
    }
}
