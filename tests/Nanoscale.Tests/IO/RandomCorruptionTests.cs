using System.Buffers.Binary;
using Nanoscale.IO;
using Nanoscale.Tests.Support;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.IO;

/// <summary>
/// SPEC §15 on random damage: thousands of seeded corruptions of small valid files (byte flips and overwrites in the
/// header, truncation, extension) must each either open and read cleanly or fail with a located
/// <see cref="CheckpointFormatException"/> — never another exception, a hang or an unbounded allocation.
/// </summary>
public class RandomCorruptionTests
{
    private static byte[] SmallSafetensors()
    {
        using var dir = new TempDir();
        var path = dir.File("small.safetensors");
        var writer = new SafetensorsWriter(path).AddMetadata("format", "pt");
        var random = new Random(3);
        foreach (var (name, dtype, shape) in new (string, DType, long[])[]
                 {
                     ("a.weight", DType.F32, [4, 8]), ("a.bias", DType.BF16, [8]), ("b.weight", DType.F16, [3, 5]),
                     ("c", DType.I64, [2]), ("d", DType.U8, [7]), ("e", DType.BOOL, [3]),
                 })
        {
            var bytes = new byte[TensorShape.ElementCount(shape) * dtype.ElementSize()];
            random.NextBytes(bytes);
            writer.Add(name, dtype, shape, bytes);
        }
        writer.Commit();
        return File.ReadAllBytes(path);
    }

    private static byte[] SmallLlama2c()
    {
        // dim 8, hidden 16, 1 layer, 2 heads, 1 kv head, vocab 16 (shared classifier), seq_len 4.
        int[] header = [8, 16, 1, 2, 1, 16, 4];
        long floats = 16 * 8 + (8 + 8 * 8 + 2 * 4 * 8 + 8 * 8 + 8 + 3 * 16 * 8) + 8 + 4 * 4;
        var bytes = new byte[28 + 4 * floats];
        for (int i = 0; i < 7; i++) BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(4 * i), header[i]);
        for (long f = 0; f < floats; f++) BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan((int)(28 + 4 * f)), (f % 13 - 6) * 0.01f);
        return bytes;
    }

    private static byte[] SmallGguf()
    {
        using var dir = new TempDir();
        var path = dir.File("small.gguf");
        new GgufWriter(path)
            .AddMetadata("general.architecture", "tiny")
            .AddMetadata("general.alignment", 32u)
            .AddMetadata("tiny.list", new[] { "x", "yy", "zzz" })
            .AddMetadata("tiny.scale", 0.5f)
            .AddTensor("w", DType.F32, [4, 8], s => s.Write(new byte[128]))
            .AddTensor("b", DType.F16, [8], s => s.Write(new byte[16]))
            .Commit();
        return File.ReadAllBytes(path);
    }

    public static TheoryData<string> Kinds => new() { "safetensors", "llama2c", "gguf" };

    [Theory]
    [MemberData(nameof(Kinds))]
    public void RandomDamageNeverEscapesAsAnythingButALocatedError(string kind)
    {
        var (original, extension, open) = kind switch
        {
            "safetensors" => (SmallSafetensors(), ".safetensors", (Func<string, ICheckpoint>)(p => SafetensorsFile.Open(p))),
            "llama2c" => (SmallLlama2c(), ".bin", p => Llama2cCheckpoint.Open(p)),
            _ => (SmallGguf(), ".gguf", (Func<string, ICheckpoint>)(p => GgufFile.Open(p))),
        };
        using (var dir = new TempDir()) // the undamaged file opens and reads
        {
            var path = dir.File("ok" + extension);
            File.WriteAllBytes(path, original);
            Assert.True(ReadsCleanly(open, path, out var error), error?.ToString());
        }

        var random = new Random(kind.Length * 7919);
        int headerBytes = kind == "llama2c" ? 28 : Math.Min(original.Length, kind == "gguf" ? 300 : 8 + BitConverter.ToInt32(original, 0));
        int refused = 0, opened = 0;
        using var work = new TempDir();
        for (int trial = 0; trial < 1500; trial++)
        {
            var bytes = (byte[])original.Clone();
            switch (trial % 5)
            {
                case 0: // flip one bit in the header
                    bytes[random.Next(headerBytes)] ^= (byte)(1 << random.Next(8));
                    break;
                case 1: // overwrite a run of header bytes with random values
                    {
                        int at = random.Next(headerBytes), length = Math.Min(random.Next(1, 9), bytes.Length - at);
                        random.NextBytes(bytes.AsSpan(at, length));
                        break;
                    }
                case 2: // plant a huge little-endian integer where a length or count might be
                    {
                        int at = random.Next(Math.Max(1, headerBytes - 8));
                        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(at), (ulong)random.NextInt64() | (1UL << 62));
                        break;
                    }
                case 3: // truncate anywhere
                    bytes = bytes[..random.Next(bytes.Length)];
                    break;
                default: // append garbage
                    bytes = [.. bytes, .. Enumerable.Range(0, random.Next(1, 64)).Select(_ => (byte)random.Next(256))];
                    break;
            }
            var path = work.File($"t{trial}{extension}");
            File.WriteAllBytes(path, bytes);
            if (ReadsCleanly(open, path, out var error)) opened++;
            else if (error is CheckpointFormatException located)
            {
                Assert.StartsWith(path, located.Message);
                refused++;
            }
            else Assert.Fail($"{kind} trial {trial}: {error!.GetType().Name}: {error.Message}");
            File.Delete(path);
        }
        Assert.True(refused > 500, $"{refused} refused, {opened} opened");
    }

    /// <summary>Opens the file and reads every tensor as float32; false with the exception when anything throws.</summary>
    private static bool ReadsCleanly(Func<string, ICheckpoint> open, string path, out Exception? error)
    {
        error = null;
        try
        {
            using var checkpoint = open(path);
            foreach (var tensor in checkpoint.Tensors)
            {
                using var view = checkpoint.Map(tensor);
                if (tensor.ElementCount <= 1 << 20) view.ToFloatArray();
            }
            return true;
        }
        catch (Exception e)
        {
            error = e;
            return false;
        }
    }
}

public class RandomContainerCorruptionTests
{
    [Theory]
    [InlineData("mxfp4")]
    [InlineData("nxfp4:entropy=rans")]
    [InlineData("lossless")]
    public void DamagedCompressedCheckpointsFailCleanly(string format)
    {
        using var work = new TempDir();
        var original = work.File("c.safetensors");
        using (var source = CheckpointLoader.Open(SharedData.Stories260K))
        {
            var codec = Nanoscale.Codecs.CodecRegistry.Create(format);
            Nanoscale.Pipeline.Compressor.Compress(source, original, new Nanoscale.Pipeline.CompressOptions
            {
                Codec = codec,
                Selection = Nanoscale.Pipeline.TensorSelection.For(codec, exclude: "layers\\.[1-4]\\."),
            });
        }
        var bytes0 = File.ReadAllBytes(original);
        int headerEnd = 8 + BitConverter.ToInt32(bytes0, 0);
        var random = new Random(format.Length * 31);
        int refused = 0;
        for (int trial = 0; trial < 300; trial++)
        {
            var bytes = (byte[])bytes0.Clone();
            // Half the damage lands in the header (table, shapes, offsets), half in the data (codes, coded streams).
            int at = trial % 2 == 0 ? random.Next(headerEnd) : headerEnd + random.Next(bytes.Length - headerEnd);
            random.NextBytes(bytes.AsSpan(at, Math.Min(random.Next(1, 6), bytes.Length - at)));
            if (trial % 7 == 0) bytes = bytes[..random.Next(bytes.Length)];
            var path = work.File($"t{trial}.safetensors");
            File.WriteAllBytes(path, bytes);
            try
            {
                using var compressed = Nanoscale.Codecs.LogicalCheckpoint.Open(path);
                foreach (var tensor in compressed.Tensors.Where(t => t.Encoded is not null))
                {
                    using var decoder = compressed.OpenDecoder(tensor);
                    decoder.ReadRows(0, (int)tensor.Encoded!.Rows, new float[tensor.ElementCount]);
                }
            }
            catch (CheckpointFormatException e)
            {
                Assert.StartsWith(path, e.Message);
                refused++;
            }
            File.Delete(path);
        }
        Assert.True(refused > 50, $"{refused} of 300 refused");
    }
}
