using CsCheck;
using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Pipeline;

/// <summary>
/// Properties of the tensor codecs as compress drives them (docs/reliability.md): the stored bytes do not depend on the
/// thread count, for any shape and values (up to 300K weights, so the rows are split over the threads: 65,536 each), for block formats, their rANS-coded forms, casts, lossless and vp; and
/// lossless coding gives back any bytes exactly, NaN payloads and all. A failure shrinks and prints its seed.
/// </summary>
public class CodecPropertyTests
{
    /// <summary>Every format of the registry (CALDERA at rank 1, which every random shape holds; its fit runs per tensor on one thread of the
    /// pool either way), and the entropy-coded forms of three block formats.</summary>
    public static TheoryData<string> Specs() =>
        [.. CodecRegistry.Table.Traits.Select(t => t.Name == "caldera" ? "caldera:rank=1,iters=1" : t.Name),
         "vp:mant=3", "mxfp4:entropy=rans", "nxfp4:entropy=rans", "nvfp4:entropy=rans"];

    private static TensorView MapOne(TempDir dir, DType dtype, long[] shape, byte[] data, out ICheckpoint file)
    {
        var path = dir.File($"t{Guid.NewGuid():N}.safetensors");
        new SafetensorsWriter(path).Add("w", dtype, shape, data).Commit();
        file = CheckpointLoader.Open(path);
        return file.Map(file.Tensors[0]);
    }

    [Theory]
    [MemberData(nameof(Specs))]
    public void TheStoredBytesDoNotDependOnTheThreadCount(string spec)
    {
        var codec = CodecRegistry.Create(spec);
        using var dir = new TempDir();
        Gen.Int[1, 1500].SelectMany(rows => Gen.Int[1, 200].SelectMany(cols =>
                Gen.Frequency((4, Gen.Float[-8f, 8f]), (1, Gen.Float[-1e-4f, 1e-4f]), (1, Gen.Const(0f))).Array[rows * cols]
                    .Select(values => (rows, cols, values))))
            .Sample(t =>
            {
                var bytes = new byte[t.values.Length * 4];
                TensorData.FromFloat(t.values, DType.F32, bytes);
                using var view = MapOne(dir, DType.F32, [t.rows, t.cols], bytes, out var file);
                using (file)
                {
                    var one = codec.Encode(view, new EncodeOptions { Parallelism = Parallelism.SingleThread });
                    var two = codec.Encode(view, new EncodeOptions { Parallelism = new Parallelism(2) });
                    Assert.Equal(one.Parts.Select(p => (p.Suffix, p.DType, string.Join("×", p.Shape))), two.Parts.Select(p => (p.Suffix, p.DType, string.Join("×", p.Shape))));
                    for (int i = 0; i < one.Parts.Count; i++)
                        Assert.True(one.Parts[i].Data.Span.SequenceEqual(two.Parts[i].Data.Span), $"{spec} [{t.rows}×{t.cols}]: part {one.Parts[i].Suffix} differs");
                }
            }, iter: 10);
    }

    [Theory]
    [InlineData("BF16")]
    [InlineData("F16")]
    [InlineData("F32")]
    public void LosslessGivesBackAnyBytes(string dtypeName)
    {
        var dtype = Enum.Parse<DType>(dtypeName);
        int size = dtype.ElementSize();
        using var dir = new TempDir();
        Gen.Int[1, 6].SelectMany(rows => Gen.Int[1, 300].SelectMany(cols =>
                Gen.Frequency((3, Gen.Byte), (1, Gen.Const((byte)0)), (1, Gen.Const((byte)0xFF))).Array[rows * cols * size]
                    .Select(data => (rows, cols, data))))
            .Sample(t =>
            {
                using var view = MapOne(dir, dtype, [t.rows, t.cols], t.data, out var file);
                using (file)
                {
                    var encoded = EntropyTensorCodec.Lossless.Encode(view, new EncodeOptions { AllowNonFinite = true });
                    var path = dir.File($"c{Guid.NewGuid():N}.safetensors");
                    EncodedContainer.Write(path, [new EncodedContainer.Item("w", dtype, [t.rows, t.cols], EntropyTensorCodec.Lossless.Spec, encoded)]);
                    using var container = LogicalCheckpoint.Open(path);
                    using var decoder = container.OpenDecoder(container.Tensors[0]);
                    using var back = new MemoryStream();
                    decoder.ReadOriginal(back);
                    Assert.True(back.ToArray().AsSpan().SequenceEqual(t.data), $"{dtypeName} [{t.rows}×{t.cols}] differs after the round trip");
                }
            }, iter: 30);
    }
}
