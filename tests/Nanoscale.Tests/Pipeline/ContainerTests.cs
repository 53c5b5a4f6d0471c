using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Codecs;
using Nanoscale.Tests.Support;
using Nanoscale.Tensors;
using Nanoscale.Formats;

namespace Nanoscale.Tests.Pipeline;

public class ContainerTests
{
    [Fact]
    public void Bf16CastRoundTripsStories260KThroughTheContainer()
    {
        using var dir = new TempDir();
        var compressed = dir.File("s.safetensors");
        var restored = dir.File("r.safetensors");
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var report = Compressor.Compress(source, compressed, new CompressOptions { Codec = CastCodec.BF16 });
        Assert.Equal(35, report.Tensors.Count(t => t.Codec == "bf16"));
        Assert.Equal(16, report.EncodedBitsPerWeight, 9);

        using (var input = LogicalCheckpoint.Open(compressed))
        {
            Assert.True(input.IsCompressed);
            Assert.Equal("bf16", input.Format);
            Assert.Equal(source.Config, input.Config); // the model config travels in the metadata
            Assert.Equal(source.Tensors.Select(t => t.Name), input.Tensors.Select(t => t.Name));
            var errors = ErrorMetrics.Compare(source, input);
            Assert.All(errors, e => Assert.InRange(e.Error.SqnrDb, 50, 60)); // 8 significant bits
            Decompressor.Decompress(input, restored, new DecompressOptions { DType = DType.F32 });
        }

        using var back = SafetensorsFile.Open(restored);
        foreach (var tensor in source.Tensors)
        {
            using var a = source.Map(tensor);
            using var b = back.Map(back.Find(tensor.Name)!);
            var expected = a.ToFloatArray();
            if (TensorSelection.Default.Selects(tensor))
                expected = expected.Select(v => TensorData.BFloat16ToSingle(TensorData.SingleToBFloat16(v))).ToArray();
            Assert.Equal(expected, b.ToFloatArray());
        }
        Assert.Equal(2, Directory.GetFiles(dir.Path).Length); // no spill or partial files left
    }

    [Fact]
    public void NonFiniteWeightIsRefusedAndNothingIsWritten()
    {
        using var dir = new TempDir();
        var path = dir.File("nan.safetensors");
        var values = new float[64];
        values[37] = float.NaN;
        var bytes = new byte[256];
        TensorData.FromFloat(values, DType.F32, bytes);
        new SafetensorsWriter(path).Add("layer.weight", DType.F32, [2, 32], bytes).Commit();
        using var source = CheckpointLoader.Open(path);
        var output = dir.File("out.safetensors");
        var error = Assert.Throws<NonFiniteValueException>(() => Compressor.Compress(source, output, new CompressOptions { Codec = CastCodec.BF16 }));
        Assert.Contains("layer.weight", error.Message);
        Assert.Contains("element 37", error.Message);
        Assert.Contains(path, error.Message);
        Assert.Equal([path], Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void CompressedCheckpointIsNotCompressedTwice()
    {
        using var dir = new TempDir();
        var once = dir.File("once.safetensors");
        using (var source = CheckpointLoader.Open(SharedData.Stories260K))
            Compressor.Compress(source, once, new CompressOptions { Codec = CastCodec.F16 });
        using var again = CheckpointLoader.Open(once);
        var error = Assert.Throws<InputException>(() => Compressor.Compress(again, dir.File("twice.safetensors"), new CompressOptions { Codec = CastCodec.F16 }));
        Assert.Contains("already a compressed checkpoint", error.Message);
    }

    [Fact]
    public void DamagedTableOrMissingPartIsNamed()
    {
        using var dir = new TempDir();
        var path = dir.File("bad.safetensors");
        new SafetensorsWriter(path)
            .AddMetadata(CompressedLayout.TensorsKey, """{"w":{"codec":"bf16","dtype":"F32","shape":[2,2],"parts":["data"],"params":{}}}""")
            .Add("x", DType.F32, [1], new byte[4]).Commit();
        var missing = Assert.Throws<CheckpointFormatException>(() => LogicalCheckpoint.Open(path).Dispose());
        Assert.Contains("w.data", missing.Message);

        new SafetensorsWriter(path).AddMetadata(CompressedLayout.TensorsKey, "{not json").Add("x", DType.F32, [1], new byte[4]).Commit();
        var malformed = Assert.Throws<CheckpointFormatException>(() => LogicalCheckpoint.Open(path).Dispose());
        Assert.Contains("nanoscale.tensors", malformed.Message);
    }

    [Fact]
    public void UnknownFormatListsValidOnes()
    {
        var error = Assert.Throws<Nanoscale.Formats.FormatSpecException>(() => CodecRegistry.Create("mxfp3.5"));
        Assert.Contains("valid names:", error.Message);
        Assert.Contains("bf16", error.Message);
        Assert.Contains("mxfp4", error.Message);
        Assert.Throws<Nanoscale.Formats.FormatSpecException>(() => CodecRegistry.Create("bf16:scale=ceil"));
    }

    [Fact]
    public void ErrorMetricsFollowTheSpecDefinitions()
    {
        var e = ErrorMetrics.Of([1f, 2f, 2f], [1f, 2f, 3f]);
        Assert.Equal(1.0 / 3, e.Mse, 12);
        Assert.Equal(1.0 / 9, e.RelativeError, 12);
        Assert.Equal(-10 * Math.Log10(1.0 / 9), e.SqnrDb, 12);
        Assert.Equal(double.PositiveInfinity, ErrorMetrics.Of([1f], [1f]).SqnrDb);
    }
}
