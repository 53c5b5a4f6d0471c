using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Codecs;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Pipeline;

public class LosslessContainerTests
{
    [Fact]
    public void Gpt2FileRoundTripsByteForByte()
    {
        using var dir = new TempDir();
        var coded = dir.File("g.safetensors");
        var back = dir.File("back.safetensors");
        Assert.Equal(0, CliProcess.Run("compress", SharedData.Gpt2Attn, "-f", "lossless", "-o", coded, "--no-error").ExitCode);
        Assert.Equal(0, CliProcess.Run("decompress", coded, "-o", back).ExitCode);
        Assert.Equal(File.ReadAllBytes(SharedData.Gpt2Attn), File.ReadAllBytes(back));
        Assert.True(new FileInfo(coded).Length < new FileInfo(SharedData.Gpt2Attn).Length * 0.70);
    }

    [Fact]
    public void EveryTensorIsCodedAndStories260KStaysBitExact()
    {
        using var dir = new TempDir();
        var coded = dir.File("s.safetensors");
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var report = Compressor.Compress(source, coded, new CompressOptions { Codec = EntropyTensorCodec.Lossless, Selection = TensorSelection.For(EntropyTensorCodec.Lossless) });
        Assert.All(report.Tensors, t => Assert.Equal("lossless", t.Codec)); // norms and embeddings too
        using var compressed = LogicalCheckpoint.Open(coded);
        foreach (var tensor in compressed.Tensors)
        {
            using var decoder = compressed.OpenDecoder(tensor);
            using var stream = new MemoryStream();
            decoder.ReadOriginal(stream);
            using var view = source.Map(source.Find(tensor.Name)!);
            Assert.True(view.Bytes.SequenceEqual(stream.ToArray()), tensor.Name);
        }
    }

    /// <summary>Issue 14: a coded tensor is streamed chunk by chunk into rows, never decoded whole — reading all of an
    /// 8 MB bf16 tensor in tiles allocates well under its size — and the rows equal the original values, across chunk
    /// boundaries that fall inside rows.</summary>
    [Theory]
    [InlineData("lossless")]
    [InlineData("vp:mant=3")]
    public void CodedRowsAreStreamedChunkByChunk(string spec)
    {
        using var dir = new TempDir();
        const int rows = 2048, cols = 2000; // 2000 bf16 columns: 256 KiB chunks end inside rows
        var random = new Random(3);
        var values = new float[rows * cols];
        for (int i = 0; i < values.Length; i++) values[i] = (float)(random.NextDouble() * 2 - 1) * 0.05f;
        var bytes = new byte[values.Length * 2];
        Nanoscale.Tensors.TensorData.FromFloat(values, Nanoscale.Tensors.DType.BF16, bytes);
        var plain = dir.File("p.safetensors");
        new SafetensorsWriter(plain).Add("w", Nanoscale.Tensors.DType.BF16, [rows, cols], bytes).Commit();
        var coded = dir.File("c.safetensors");
        using (var source = CheckpointLoader.Open(plain))
            Compressor.Compress(source, coded, new CompressOptions { Codec = CodecRegistry.Create(spec), Selection = TensorSelection.For(CodecRegistry.Create(spec), "w") });
        var expected = new float[values.Length];
        if (spec == "lossless") Nanoscale.Tensors.TensorData.ToFloat(bytes, Nanoscale.Tensors.DType.BF16, expected);
        else
        {
            var rounded = new byte[bytes.Length];
            Nanoscale.Lossless.VariablePrecision.Round(bytes, Nanoscale.Tensors.DType.BF16, new Nanoscale.Lossless.VariablePrecisionOptions { MantissaBits = 3 }, rounded);
            Nanoscale.Tensors.TensorData.ToFloat(rounded, Nanoscale.Tensors.DType.BF16, expected);
        }

        using var compressed = LogicalCheckpoint.Open(coded);
        using var decoder = compressed.OpenDecoder(compressed.Find("w")!);
        const int tile = 48;
        var buffer = new float[tile * cols];
        long before = GC.GetAllocatedBytesForCurrentThread(); // from the first read: the index and one chunk's buffer count
        for (int r = 0; r < rows; r += tile)
        {
            int n = Math.Min(tile, rows - r);
            decoder.ReadRows(r, n, buffer);
            for (int i = 0; i < n * cols; i++)
                if (buffer[i] != expected[(long)r * cols + i]) Assert.Fail($"{spec}: row {r + i / cols}, column {i % cols}: {buffer[i]} vs {expected[(long)r * cols + i]}");
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < bytes.Length / 4, $"{spec}: reading every row allocated {allocated} bytes ({bytes.Length} decoded)");
    }

    [Fact]
    public void EvalOnLosslessWeightsEqualsFp32Exactly()
    {
        var plain = CliProcess.Run("eval", SharedData.Stories260K, "--text", SharedData.TinyStoriesText, "--json").Json();
        var coded = CliProcess.Run("eval", SharedData.Stories260K, "--text", SharedData.TinyStoriesText, "-f", "lossless", "--json").Json();
        Assert.Equal(plain.GetProperty("mean_nll").GetDouble(), coded.GetProperty("mean_nll").GetDouble());
        Assert.True(coded.GetProperty("bits_per_weight").GetDouble() < 32);
    }

    [Fact]
    public void CorruptCodedStreamIsReportedWithFileAndTensor()
    {
        using var dir = new TempDir();
        var coded = dir.File("g.safetensors");
        using (var source = CheckpointLoader.Open(SharedData.Gpt2Attn))
            Compressor.Compress(source, coded, new CompressOptions
            {
                Codec = EntropyTensorCodec.Lossless,
                Selection = new TensorSelection(include: "^h\\.0\\.attn\\.q_proj\\.weight$", exclude: "^(?!h\\.0\\.attn\\.q_proj\\.weight$)"),
            });
        long offset;
        using (var file = SafetensorsFile.Open(coded))
        {
            var part = file.Find("h.0.attn.q_proj.weight.ans")!;
            offset = part.FileOffset + part.ByteLength / 2;
        }
        var bytes = File.ReadAllBytes(coded);
        bytes[offset] ^= 0x10;
        File.WriteAllBytes(coded, bytes);
        using var compressed = LogicalCheckpoint.Open(coded);
        using var decoder = compressed.OpenDecoder(compressed.Find("h.0.attn.q_proj.weight")!);
        var error = Assert.Throws<CheckpointFormatException>(() => decoder.ReadRows(0, 1, new float[768]));
        Assert.Contains(coded, error.Message);
        // The file's integrity record sees the damage before the rANS stream's own chunk checksums would
        // (LosslessCorruptionTests covers those): the message names the part and its byte range.
        Assert.Contains("h.0.attn.q_proj.weight.ans", error.Message);
        Assert.Contains("checksum mismatch over bytes", error.Message);
    }

    [Fact]
    public void VariablePrecisionSitsBetweenLosslessAndBlockFormats()
    {
        using var dir = new TempDir();
        var result = CliProcess.Run("compress", SharedData.Gpt2Attn, "-f", "vp:mant=3", "-o", dir.File("vp.safetensors"), "--json");
        Assert.Equal(0, result.ExitCode);
        var json = result.Json();
        double bpw = json.GetProperty("encoded_bits_per_weight").GetDouble(), sqnr = json.GetProperty("error").GetProperty("sqnr_db").GetDouble();
        Assert.InRange(bpw, 5.5, 8);    // 3 mantissa bits + sign + a coded ~2.7-bit exponent
        Assert.InRange(sqnr, 29, 34);  // about 6 dB per mantissa bit
        var bad = CliProcess.Run("compress", SharedData.Gpt2Attn, "-f", "vp:bits=3", "-o", dir.File("x.safetensors"));
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("mant", bad.Stderr);
    }
}
