using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Pipeline;

/// <summary>
/// Integrity everywhere (SPEC §15): a single flipped bit anywhere in a container Nanoscale writes — in the codes, the
/// scales, a coded stream, a plain tensor, or the header's table — is found both by <c>verify</c> and by the first read
/// of what it damaged, and the message names the tensor or part; never a silently different weight.
/// </summary>
public class IntegrityTests
{
    /// <summary>Every name of the format table (CALDERA kept short) and the container option.</summary>
    public static TheoryData<string> Formats()
    {
        var data = new TheoryData<string>();
        foreach (var traits in CodecRegistry.Table.Traits)
            data.Add(traits.Name == "caldera" ? "caldera:rank=2,iters=1" : traits.Name);
        data.Add("mxfp4:entropy=rans");
        return data;
    }

    [Theory]
    [MemberData(nameof(Formats))]
    public void EverySingleBitFlipIsFoundByVerifyAndByTheFirstRead(string format)
    {
        using var dir = new TempDir();
        var original = dir.File("c.safetensors");
        CompressionRun.Run(SharedData.Stories260K, original, new CompressionRequest { Format = format, MeasureError = false });
        Assert.True(Verification.Verify(original).Ok);
        var bytes0 = File.ReadAllBytes(original);
        long headerEnd = 8 + BitConverter.ToInt64(bytes0, 0);
        // Seeded from the name's characters (string.GetHashCode differs from run to run): the same flips every run.
        var random = new Random(format.Aggregate(17, (h, c) => unchecked(h * 31 + c)));
        for (int trial = 0; trial < 8; trial++)
        {
            // Six flips in the data region (where almost every byte is), two in the header's JSON.
            long at = trial < 6 ? headerEnd + random.NextInt64(bytes0.Length - headerEnd) : 8 + random.NextInt64(headerEnd - 8);
            var bytes = (byte[])bytes0.Clone();
            bytes[at] ^= (byte)(1 << random.Next(8));
            var path = dir.File($"flip{trial}.safetensors");
            File.WriteAllBytes(path, bytes);
            string where = $"{format}: bit flipped at byte {at}";

            var report = Verification.Verify(path);
            Assert.False(report.Ok, $"{where}: verify found nothing");
            Assert.All(report.Problems, p => Assert.StartsWith(path, p));

            // The first read of every tensor, as eval or decompress would read them.
            var error = Assert.Throws<CheckpointFormatException>(() => ReadEverything(path));
            Assert.StartsWith(path, error.Message);
            if (at >= headerEnd)
                Assert.True(error.Where is not null, $"{where}: the error names the tensor or part ({error.Message})");
            File.Delete(path);
        }
    }

    [Fact]
    public void AFlipInTheRecordsOwnKeyDoesNotHideTheRecord()
    {
        using var dir = new TempDir();
        var original = dir.File("c.safetensors");
        CompressionRun.Run(SharedData.Stories260K, original, new CompressionRequest { Format = "mxfp4", MeasureError = false });
        var bytes = File.ReadAllBytes(original);
        int key = System.Text.Encoding.ASCII.GetString(bytes).IndexOf("\"nanoscale.xxh3\"", StringComparison.Ordinal);
        Assert.True(key > 0);
        bytes[key + 14] ^= 1; // nanoscale.xxh3 → nanoscale.xxh2: no record under the name readers look for
        var path = dir.File("flipped.safetensors");
        File.WriteAllBytes(path, bytes);
        Assert.False(Verification.Verify(path).Ok);
        var error = Assert.Throws<CheckpointFormatException>(() => ReadEverything(path));
        Assert.Contains("the integrity record is missing", error.Message);
    }

    private static void ReadEverything(string path)
    {
        using var checkpoint = LogicalCheckpoint.Open(path);
        checkpoint.ReadEveryTensor();
    }

    [Fact]
    public void ATableThatDisagreesWithItsPartsIsAnError()
    {
        using var dir = new TempDir();
        var path = dir.File("c.safetensors");
        CompressionRun.Run(SharedData.Stories260K, path, new CompressionRequest { Format = "mxfp4", MeasureError = false });
        // A part the table does not list: rewrite the file with one extra array named like a part.
        using (var source = CheckpointLoader.Open(path))
        {
            var writer = new SafetensorsWriter(dir.File("extra.safetensors")).WithChecksums().AddMetadata(source.Metadata.Where(m => m.Key != "nanoscale.xxh3"));
            foreach (var t in source.Tensors) writer.Add(t.Name, t.DType, t.Shape, stream => SafetensorsWriter.CopyTensor(source, t, stream));
            var first = source.Tensors.First(t => t.Name.EndsWith(".blocks", StringComparison.Ordinal)).Name;
            writer.Add(first[..^".blocks".Length] + ".extra", Nanoscale.Tensors.DType.U8, [4], new byte[4]).Commit();
        }
        var e = Assert.Throws<CheckpointFormatException>(() => LogicalCheckpoint.Open(dir.File("extra.safetensors")).Dispose());
        Assert.Contains("does not list it", e.Message);
        Assert.False(Verification.Verify(dir.File("extra.safetensors")).Ok);
    }

    [Fact]
    public void AShapeNoDecoderReadsIsALocatedErrorNotACrash()
    {
        using var dir = new TempDir();
        var path = dir.File("c.safetensors");
        CompressionRun.Run(SharedData.Stories260K, path, new CompressionRequest { Format = "mxfp4", MeasureError = false });
        using (var source = CheckpointLoader.Open(path))
        {
            var metadata = source.Metadata.Where(m => m.Key != "nanoscale.xxh3")
                .Select(m => m.Key == "nanoscale.tensors"
                    ? new KeyValuePair<string, string>(m.Key, System.Text.RegularExpressions.Regex.Replace(m.Value, @"""shape"":\[172,64\]", @"""shape"":[2147483648,2147483648]"))
                    : m).ToList();
            var writer = new SafetensorsWriter(dir.File("huge.safetensors")).WithChecksums().AddMetadata(metadata);
            foreach (var t in source.Tensors) writer.Add(t.Name, t.DType, t.Shape, stream => SafetensorsWriter.CopyTensor(source, t, stream));
            writer.Commit();
        }
        var e = Assert.Throws<CheckpointFormatException>(() => LogicalCheckpoint.Open(dir.File("huge.safetensors")).Dispose());
        Assert.Contains("2^31", e.Message);
    }
}
