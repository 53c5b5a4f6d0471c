using Nanoscale.IO;
using Nanoscale.Tests.Support;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.IO;

public class SafetensorsTests
{
    [Fact]
    public void ReadsRealGpt2AttentionCheckpoint()
    {
        using var file = SafetensorsFile.Open(SharedData.Gpt2Attn);
        Assert.Equal(171, file.Tensors.Count);
        Assert.Equal(48, file.Tensors.Count(t => t.DType == DType.BF16));
        Assert.Equal(123, file.Tensors.Count(t => t.DType == DType.F32));
        Assert.Equal(["source", "note"], file.Metadata.Select(m => m.Key));

        var q = file.Find("h.0.attn.q_proj.weight")!;
        Assert.Equal(new long[] { 768, 768 }, q.Shape);
        Assert.Equal(768 * 768 * 2, q.ByteLength);
        using var view = file.Map(q);
        var values = view.ToFloatArray();
        Assert.All(values, v => Assert.True(float.IsFinite(v)));
        double rms = Math.Sqrt(values.Average(v => (double)v * v));
        Assert.InRange(rms, 0.05, 1.0); // real trained weights, not zeros or garbage
    }

    [Fact]
    public void UnchangedCheckpointIsWrittenBackByteForByte()
    {
        using var dir = new TempDir();
        var copy = dir.File("copy.safetensors");
        using (var file = SafetensorsFile.Open(SharedData.Gpt2Attn))
            SafetensorsWriter.CopyOf(file, copy);
        Assert.Equal(File.ReadAllBytes(SharedData.Gpt2Attn), File.ReadAllBytes(copy));
        Assert.Single(Directory.GetFiles(dir.Path)); // no temporary left behind
    }

    [Fact]
    public void WriterRoundTripsEveryDTypeAndEscapesMetadata()
    {
        using var dir = new TempDir();
        var path = dir.File("all.safetensors");
        var writer = new SafetensorsWriter(path).AddMetadata("quote\"and\\slash", "line\nbreak é");
        int index = 0;
        foreach (var dtype in Enum.GetValues<DType>())
        {
            var bytes = Enumerable.Range(0, 3 * dtype.ElementSize()).Select(i => (byte)(i * 7 + index)).ToArray();
            writer.Add($"t{index++}.{dtype}", dtype, [3], bytes);
        }
        writer.Add("empty", DType.F32, [0, 5], Array.Empty<byte>());
        writer.Commit();

        using var file = SafetensorsFile.Open(path);
        Assert.Equal("line\nbreak é", file.Metadata.Single().Value);
        Assert.Equal(Enum.GetValues<DType>().Length + 1, file.Tensors.Count);
        index = 0;
        foreach (var dtype in Enum.GetValues<DType>())
        {
            var tensor = file.Tensors[index];
            Assert.Equal(dtype, tensor.DType);
            using var view = file.Map(tensor);
            Assert.Equal(Enumerable.Range(0, 3 * dtype.ElementSize()).Select(i => (byte)(i * 7 + index)), view.Bytes.ToArray());
            index++;
        }
        Assert.Equal(0, file.Find("empty")!.ByteLength);
        Assert.Equal(0, (8 + file.HeaderLength) % 8); // header padded to 8 bytes
    }

    /// <summary>With aligned data (compressed checkpoints) the data starts on a 64-byte boundary, the header still a
    /// multiple of 8 and the file still readable; by default the reference implementation's 8-byte padding.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void AlignedDataStartsOnACacheLine(bool aligned)
    {
        using var dir = new TempDir();
        var path = dir.File("a.safetensors");
        var writer = new SafetensorsWriter(path);
        if (aligned) writer.WithAlignedData();
        writer.Add("w", DType.BF16, [4, 8], new byte[64]);
        writer.Add("name-of-another-length", DType.F32, [3], new byte[12]);
        writer.Commit();
        using var file = SafetensorsFile.Open(path);
        Assert.Equal(0, (8 + file.HeaderLength) % 8);
        if (aligned) Assert.Equal(0, (8 + file.HeaderLength) % 64);
        else Assert.NotEqual(0, (8 + file.HeaderLength) % 64); // this header's compact length is not 56 mod 64
        Assert.Equal(new byte[12], file.Map(file.Find("name-of-another-length")!).Bytes.ToArray());
    }

    /// <summary>A compressed checkpoint (run from its mapping) has its data on a cache line.</summary>
    [Fact]
    public void CompressedCheckpointsAlignTheirData()
    {
        using var dir = new TempDir();
        var compressed = dir.File("c.safetensors");
        Nanoscale.Pipeline.CompressionRun.Run(SharedData.Stories260K, compressed, new Nanoscale.Pipeline.CompressionRequest { Format = "bf16", MeasureError = false });
        using var file = SafetensorsFile.Open(compressed);
        Assert.Equal(0, (8 + file.HeaderLength) % 64);
    }

    [Fact]
    public void FailedWriteLeavesNoFile()
    {
        using var dir = new TempDir();
        var path = dir.File("out.safetensors");
        var writer = new SafetensorsWriter(path)
            .Add("ok", DType.F32, [2], new byte[8])
            .Add("short", DType.F32, [4], stream => stream.Write(new byte[4]));
        var error = Assert.Throws<InvalidOperationException>(() => writer.Commit());
        Assert.Contains("short wrote 4 bytes", error.Message);
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    public static TheoryData<string, byte[], string> CorruptFiles()
    {
        var data = SafetensorsBytes.ValidData;
        var valid = SafetensorsBytes.ValidHeader;
        return new TheoryData<string, byte[], string>
        {
            { "file shorter than 8 bytes", [1, 2, 3], "starts with an 8-byte header length" },
            { "header length past the end", SafetensorsBytes.Build(valid, data, 5000), "runs past the end of the file" },
            { "huge declared header", SafetensorsBytes.Build(valid, data, ulong.MaxValue - 3), "exceeds the" },
            { "truncated data", SafetensorsBytes.Build(valid, data[..20]), "run past the data region" },
            { "bad JSON", SafetensorsBytes.Build("""{"a":{"dtype":"F32",""", data), "not valid JSON" },
            { "header not an object", SafetensorsBytes.Build("[1,2,3]", data), "must be a JSON object" },
            { "unknown dtype", SafetensorsBytes.Build(valid.Replace("\"BF16\"", "\"Q4_K\""), data), "unknown dtype \"Q4_K\"" },
            { "shape/dtype mismatch", SafetensorsBytes.Build(valid.Replace("[2,3]", "[2,4]"), data), "needs 32 bytes but data_offsets span 24" },
            { "overlapping tensors", SafetensorsBytes.Build(valid.Replace("[24,32]", "[20,28]"), data), "overlaps a" },
            { "offsets outside", SafetensorsBytes.Build(valid.Replace("[24,32]", "[32,40]"), data), "run past the data region" },
            { "begin after end", SafetensorsBytes.Build(valid.Replace("[24,32]", "[32,24]"), data), "begin <= end" },
            { "negative dimension", SafetensorsBytes.Build(valid.Replace("[4]", "[-4]"), data), "non-negative integer" },
            { "overflowing shape", SafetensorsBytes.Build(valid.Replace("[4]", "[4611686018427387904,4]"), data), "overflows" },
            { "duplicate tensor", SafetensorsBytes.Build(valid.Replace("\"b\":", "\"a\":"), data), "appears twice" },
            { "metadata not strings", SafetensorsBytes.Build(valid.Replace("\"pt\"", "7"), data), "metadata values must be strings" },
            { "missing data_offsets", SafetensorsBytes.Build(valid.Replace(",\"data_offsets\":[24,32]", ""), data), "data_offsets" },
        };
    }

    [Theory]
    [MemberData(nameof(CorruptFiles))]
    public void CorruptFileIsRefusedWithLocatedError(string kind, byte[] bytes, string expected)
    {
        using var dir = new TempDir();
        var path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, bytes);
        var error = Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.True(error.Message.Contains(expected, StringComparison.Ordinal), $"{kind}: {error.Message}");
        Assert.StartsWith(path, error.Message);
    }

    [Fact]
    public void ErrorsNameTensorAndOffset()
    {
        using var dir = new TempDir();
        var path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, SafetensorsBytes.Build(SafetensorsBytes.ValidHeader.Replace("[24,32]", "[20,28]"), SafetensorsBytes.ValidData));
        var error = Assert.Throws<CheckpointFormatException>(() => SafetensorsFile.Open(path).Dispose());
        Assert.Equal("b", error.Where);
        Assert.Equal(8 + SafetensorsBytes.ValidHeader.Length + 20, error.Offset);
    }

    [Fact]
    public void ValidHandBuiltFileReads()
    {
        using var dir = new TempDir();
        var path = dir.File("ok.safetensors");
        File.WriteAllBytes(path, SafetensorsBytes.Build(SafetensorsBytes.ValidHeader, SafetensorsBytes.ValidData));
        using var file = SafetensorsFile.Open(path);
        using var view = file.Map(file.Find("b")!);
        Assert.Equal(SafetensorsBytes.ValidData[24..], view.Bytes.ToArray());
    }
}
