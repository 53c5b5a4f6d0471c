using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Interop;

/// <summary>
/// GGUF files of ggml's block types, as llama.cpp's own quantizer makes them, read by Nanoscale: every supported type
/// decodes to exactly the floats ggml's dequantizer gives, and the file works with inspect, eval, decompress and
/// compress like any model.
/// </summary>
public class GgufImportTests
{
    public static TheoryData<string> Types => new() { "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4", "q4_K", "q5_K", "q6_K" };

    private static float[] RealWeights(string name)
    {
        using var file = SafetensorsFile.Open(SharedData.Gpt2Attn);
        using var view = file.Map(file.Find(name)!);
        return view.ToFloatArray();
    }

    [Theory]
    [MemberData(nameof(Types))]
    public void GgmlQuantizedTensorsDecodeBitForBitAsGgmlDoes(string type)
    {
        var ggml = LlamaCppGgml.Load();
        var weights = RealWeights("h.7.attn.v_proj.weight");
        const int rows = 768, cols = 768;
        var blocks = ggml.Quantize(type, weights, rows, cols);
        using var dir = new TempDir();
        var path = dir.File("ggml.gguf");
        new GgufWriter(path)
            .AddMetadata("general.architecture", "test")
            .AddTensor("blk.0.attn_v.weight", GgmlType.FromName(type)!, [rows, cols], s => s.Write(blocks))
            .AddTensor("norm.weight", DType.F32, [4], s => s.Write(new byte[16]))
            .Commit();

        using var logical = LogicalCheckpoint.Open(path);
        Assert.True(logical.IsCompressed);
        var tensor = logical.Find("blk.0.attn_v.weight")!;
        Assert.Equal(type == "mxfp4" ? "ggml-mxfp4" : type, tensor.Encoded!.Spec);
        Assert.Equal([rows, cols], tensor.Shape);
        var ours = new float[rows * cols];
        using (var decoder = logical.OpenDecoder(tensor)) decoder.ReadRows(0, rows, ours);
        var theirs = ggml.Dequantize(type, blocks, rows * cols);
        for (int i = 0; i < ours.Length; i++)
            Assert.Equal(BitConverter.SingleToInt32Bits(theirs[i]), BitConverter.SingleToInt32Bits(ours[i]));
    }

    [Fact]
    public void OurMxfp4ExportDecodesToOurMxfp4ValuesInLlamaCpp()
    {
        using var dir = new TempDir();
        var gguf = dir.File("mxfp4.gguf");
        GgufExport.Export(SharedData.Stories260K, gguf, new GgufExportOptions { Type = "mxfp4" });
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        using var exported = LogicalCheckpoint.Open(gguf);
        using var gguFile = (GgufFile)CheckpointLoader.Open(gguf);
        var mxfp4 = CodecRegistry.CreateBlockCodec("mxfp4");
        var ggml = LlamaCppGgml.Load();
        int checkedTensors = 0;
        foreach (var q in gguFile.Quantized)
        {
            var original = source.Find(q.Name)!;
            int rows = (int)original.Rows, cols = (int)original.Columns;
            using var view = source.Map(original);
            var expected = Formats.CodecHarness.RoundTrip(mxfp4, view.ToFloatArray(), rows, cols);
            using var blocks = gguFile.Map(gguFile.Find($"{q.Name}.blocks")!);
            var theirs = ggml.Dequantize("mxfp4", blocks.Bytes, rows * cols);
            var ours = new float[rows * cols];
            using (var decoder = exported.OpenDecoder(exported.Find(q.Name)!)) decoder.ReadRows(0, rows, ours);
            for (int i = 0; i < ours.Length; i++)
            {
                Assert.Equal(BitConverter.SingleToInt32Bits(theirs[i]), BitConverter.SingleToInt32Bits(ours[i]));
                Assert.Equal(expected[i], ours[i]);
            }
            checkedTensors++;
        }
        Assert.Equal(5 * 6 + 1, checkedTensors); // q, k, v, o, w1, w3 of 5 layers and the embedding (w2 stays F16)
    }

    /// <summary>A Q4_K_M file as llama.cpp's own quantizer writes it (Q4_K, Q6_K and whatever else its mix picks,
    /// from our F32 export of a Llama-3-shaped model): Nanoscale reads every tensor, runs it, and its logits agree
    /// with llama.cpp's on the same file to the activation rounding llama.cpp applies (Q8_K per 256 for K-quants;
    /// measured worst row 3.9e-2 of its largest logit).</summary>
    [Fact]
    public void LlamaCppsOwnQ4KMFileRunsHereAsInLlamaCpp()
    {
        using var dir = new TempDir();
        var tokenizerFolder = SharedData.Path("tokenizers", "llama3");
        var folder = SampleCheckpoint.Write(dir.File("llama3"), new SampleOptions
        {
            Dim = 256, HiddenDim = 512, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 128256, MaxSeqLen = 4096,
            RopeTheta = 500000f, TiedEmbeddings = true, TokenizerFrom = tokenizerFolder,
        });
        var f32 = dir.File("f32.gguf");
        GgufExport.Export(folder, f32, new GgufExportOptions { Type = "f32" });
        var q4km = dir.File("q4_k_m.gguf");
        LlamaCppRuntime.Quantize(f32, q4km, LLama.Native.LLamaFtype.MOSTLY_Q4_K_M);

        using var file = (GgufFile)CheckpointLoader.Open(q4km);
        var types = file.Quantized.Select(q => q.Type.Name).Distinct().ToList();
        Assert.Contains("q4_K", types);
        Assert.Contains("q6_K", types);

        using var loaded = LoadedModel.Open(q4km, new ModelLoadOptions { TokenizerPath = tokenizerFolder });
        using var llama = new LlamaCppRuntime(q4km);
        int[] tokens = [128000, .. loaded.Tokenizer.Encode(File.ReadAllText(SharedData.TinyStoriesText)[..800], addBos: false).Take(100)];
        double worst = GgufExportTests.RelativeError(GgufExportTests.OurLogits(loaded.Model, tokens), llama.Logits(tokens));
        Assert.InRange(worst, 0, 0.05);
    }

    /// <summary>A GGUF file's own <c>llama</c> vocabulary is its tokenizer when none is given: our export of
    /// stories260K evaluates and generates with no flags, tokenizing exactly as tok512.bin does.</summary>
    [Fact]
    public void AGgufFilesEmbeddedLlamaVocabularyIsItsTokenizer()
    {
        using var dir = new TempDir();
        var gguf = dir.File("s.gguf");
        GgufExport.Export(SharedData.Stories260K, gguf, new GgufExportOptions { Type = "q8_0" });
        using var embedded = LoadedModel.Open(gguf);
        var reference = Nanoscale.Runtime.Llama2cTokenizer.Load(SharedData.Tok512);
        var text = File.ReadAllText(SharedData.TinyStoriesText);
        Assert.Equal(reference.Encode(text, addBos: true), embedded.Tokenizer.Encode(text, addBos: true));
        Assert.StartsWith("Once upon a time, there was a little girl named Lily.", embedded.Generate("", 20).Text.TrimStart());
    }
}
