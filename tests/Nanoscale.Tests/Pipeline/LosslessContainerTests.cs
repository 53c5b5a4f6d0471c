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
