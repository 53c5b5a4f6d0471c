using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Interop;

/// <summary>
/// Our GGUF files run in llama.cpp (its own library, loaded in the test): the vocabulary we embed tokenizes text as our
/// tokenizer does, and the weights and hyperparameters give the logits our runtime gives.
/// </summary>
public class GgufExportTests
{
    private static string Sample(int chars) => File.ReadAllText(SharedData.Path("text", "tinystories-sample.txt"))[..chars];

    /// <summary>Largest |a − b| over the largest |b| of a row, over all rows.</summary>
    internal static double RelativeError(float[][] ours, float[][] theirs)
    {
        double worst = 0;
        for (int t = 0; t < ours.Length; t++)
        {
            double scale = theirs[t].Max(Math.Abs), diff = 0;
            for (int v = 0; v < ours[t].Length; v++) diff = Math.Max(diff, Math.Abs(ours[t][v] - theirs[t][v]));
            worst = Math.Max(worst, diff / scale);
        }
        return worst;
    }

    internal static float[][] OurLogits(LlamaModel model, int[] tokens)
    {
        var flat = new float[tokens.Length * model.Config.VocabSize];
        model.CreateSession(tokens.Length).Forward(tokens, flat);
        return [.. Enumerable.Range(0, tokens.Length).Select(t => flat.AsSpan(t * model.Config.VocabSize, model.Config.VocabSize).ToArray())];
    }

    [Fact]
    public void Stories260KInF32RunsInLlamaCppWithOurTokensAndLogits()
    {
        using var dir = new TempDir();
        var gguf = dir.File("stories260K.gguf");
        var report = GgufExport.Export(SharedData.Stories260K, gguf, new GgufExportOptions { Type = "f32" });
        Assert.Equal("llama", report.Vocabulary);
        Assert.Empty(report.Fallbacks);

        using var llama = new LlamaCppRuntime(gguf);
        Assert.Equal(512, llama.VocabSize);
        var tokenizer = Llama2cTokenizer.Load(SharedData.Path("models", "stories260K", "tok512.bin"));
        var text = Sample(2000);
        Assert.Equal(tokenizer.Encode(text, addBos: false), llama.Tokenize(text));

        using var checkpoint = CheckpointLoader.Open(SharedData.Stories260K);
        var model = LlamaModel.Load(checkpoint);
        int[] tokens = [1, .. tokenizer.Encode(text, addBos: false).Take(200)];
        Assert.InRange(RelativeError(OurLogits(model, tokens), llama.Logits(tokens)), 0, 1e-4); // measured: 1.1e-6
    }

    /// <summary>A SentencePiece <c>.model</c> (tok512 rebuilt as a ModelProto) exports to the same <c>llama</c>
    /// vocabulary as its tokenizer.bin — tokens, scores and types — and llama.cpp tokenizes with it as we do.</summary>
    [Fact]
    public void ASentencePieceModelExportsAsTheLlamaVocabulary()
    {
        using var dir = new TempDir();
        var model = Runtime.SentencePieceTokenizerTests.WriteModel(dir.File("tok512.model"));
        var fromModel = dir.File("m.gguf");
        var fromBin = dir.File("b.gguf");
        var report = GgufExport.Export(SharedData.Stories260K, fromModel, new GgufExportOptions { Type = "f32", TokenizerPath = model });
        Assert.Equal("llama", report.Vocabulary);
        GgufExport.Export(SharedData.Stories260K, fromBin, new GgufExportOptions { Type = "f32" });
        using (var a = GgufFile.Open(fromModel))
        using (var b = GgufFile.Open(fromBin))
        {
            Assert.Equal(b.Vocabulary!.Tokens, a.Vocabulary!.Tokens);
            Assert.Equal(b.Vocabulary.Scores, a.Vocabulary.Scores);
            Assert.Equal((b.Vocabulary.Bos, b.Vocabulary.Eos), (a.Vocabulary.Bos, a.Vocabulary.Eos));
        }
        using var llama = new LlamaCppRuntime(fromModel);
        var tokenizer = Llama2cTokenizer.Load(SharedData.Tok512);
        var text = Sample(2000);
        Assert.Equal(tokenizer.Encode(text, addBos: false), llama.Tokenize(text));

        var broken = dir.File("broken.model");
        File.WriteAllBytes(broken, File.ReadAllBytes(model)[..1000]);
        var error = Assert.Throws<CheckpointFormatException>(() => GgufExport.Export(SharedData.Stories260K, dir.File("x.gguf"), new GgufExportOptions { Type = "f32", TokenizerPath = broken }));
        Assert.Contains("broken.model", error.Message);
        Assert.False(File.Exists(dir.File("x.gguf")));
    }

    [Fact]
    public void PerplexityInLlamaCppEqualsOursUnderTheSameProtocol()
    {
        using var dir = new TempDir();
        var gguf = dir.File("stories260K.gguf");
        GgufExport.Export(SharedData.Stories260K, gguf, new GgufExportOptions { Type = "f32" });
        using var checkpoint = CheckpointLoader.Open(SharedData.Stories260K);
        var model = LlamaModel.Load(checkpoint);
        var tokenizer = Llama2cTokenizer.Load(SharedData.Tok512);
        var text = File.ReadAllText(SharedData.TinyStoriesText);
        var ours = Perplexity.Evaluate(model, tokenizer, text);

        // The same documents (BOS first, each within one 512-token window) scored from llama.cpp's logits.
        using var llama = new LlamaCppRuntime(gguf);
        double nll = 0;
        long predicted = 0;
        foreach (var document in Perplexity.SplitDocuments(text, "<|endoftext|>"))
        {
            int[] tokens = [1, .. llama.Tokenize(document)];
            Assert.InRange(tokens.Length, 2, 512);
            var logits = llama.Logits(tokens);
            for (int i = 0; i + 1 < tokens.Length; i++) nll += Kernels.NegativeLogLikelihood(logits[i], tokens[i + 1]);
            predicted += tokens.Length - 1;
        }
        Assert.Equal(ours.PredictedTokens, predicted);
        double theirs = Math.Exp(nll / predicted);
        Assert.InRange(Math.Abs(theirs / ours.Perplexity - 1), 0, 1e-3); // measured: 1.1e-8
    }

    /// <summary>A Llama-3.2-shaped model (GQA, head_dim 16, Llama-3 RoPE scaling, tied head; small widths, the real
    /// 128256-token vocabulary) with Llama-3's real tokenizer.json: llama.cpp reads our gpt2 vocabulary with the
    /// llama-bpe pre-tokenizer, tokenizes both sample texts as we do, and computes our logits (Hugging Face q/k rows
    /// permuted to llama.cpp's pairs, the scaling as rope_freqs).</summary>
    [Fact]
    public void Llama3ShapedModelWithItsRealTokenizerRunsInLlamaCpp()
    {
        using var dir = new TempDir();
        var folder = SampleCheckpoint.Write(dir.File("llama3"), new SampleOptions
        {
            Dim = 64, HiddenDim = 128, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 128256, MaxSeqLen = 4096,
            RopeTheta = 500000f, RopeScaling = new RopeScaling(32f, 1f, 4f, 8192), TiedEmbeddings = true,
            TokenizerFrom = SharedData.Path("tokenizers", "llama3"),
        });
        var gguf = dir.File("llama3.gguf");
        var report = GgufExport.Export(folder, gguf, new GgufExportOptions { Type = "f32" });
        Assert.Equal(("gpt2", "llama-bpe"), (report.Vocabulary, report.PreTokenizer));
        Assert.Contains(report.Tensors, t => t.GgufName == "rope_freqs.weight");

        using var llama = new LlamaCppRuntime(gguf);
        using var tokenizer = HuggingFaceTokenizer.Load(SharedData.Path("tokenizers", "llama3"));
        foreach (var file in new[] { "tinystories-sample.txt", "unicode-stress.txt" })
        {
            var text = File.ReadAllText(SharedData.Path("text", file));
            Assert.Equal(tokenizer.Encode(text, addBos: false), llama.Tokenize(text));
        }

        using var loaded = LoadedModel.Open(folder);
        int[] tokens = [128000, .. tokenizer.Encode(Sample(1500), addBos: false).Take(150)];
        Assert.InRange(RelativeError(OurLogits(loaded.Model, tokens), llama.Logits(tokens)), 0, 1e-4); // measured: 7.0e-7

        AssertEmbeddedTokenizerIs(gguf, tokenizer);
        AssertChatTemplateTravels(folder, gguf, report, llama, stripBos: "<|begin_of_text|>");

        // Read back, the GGUF file runs here too, with the rotary divisors it carries.
        using var back = LoadedModel.Open(gguf, new ModelLoadOptions { TokenizerPath = SharedData.Path("tokenizers", "llama3") });
        Assert.NotNull(back.Config.RopeFrequencyFactors);
        Assert.InRange(RelativeError(OurLogits(back.Model, tokens), llama.Logits(tokens)), 0, 1e-4);
    }

    /// <summary>The model's chat template is written as <c>tokenizer.chat_template</c>; llama.cpp renders a conversation
    /// with it as our Jinja renderer does (llama.cpp adds BOS when it tokenizes, where the template writes it into the
    /// text), and serving the GGUF file uses it.</summary>
    private static void AssertChatTemplateTravels(string folder, string gguf, GgufExportReport report, LlamaCppRuntime llama, string stripBos)
    {
        Assert.EndsWith("tokenizer_config.json", report.ChatTemplateFrom);
        ChatMessage[] conversation = [("system", "Be brief."), ("user", " Hi! "), ("assistant", "Hello."), ("user", "Grüße 🌍")];
        var ours = ChatTemplate.Find(folder).Render(conversation);
        Assert.StartsWith(stripBos, ours);
        Assert.Equal(ours[stripBos.Length..], llama.ApplyChatTemplate(conversation));
        using var file = GgufFile.Open(gguf);
        var carried = ChatTemplate.FromGguf(file)!;
        Assert.Equal("GGUF tokenizer.chat_template", carried.Name);
        Assert.Equal(ours, carried.Render(conversation));
    }

    /// <summary>Quantized exports run in llama.cpp on the same stored weights our runtime reads back from the file.
    /// llama.cpp multiplies these types against activations it rounds to 8 bits (Q8_0 per 32), so the logits agree to
    /// that rounding, not to float precision: measured worst rows 2.0e-2 (q8_0), 1.8e-2 (q4_0) and 2.5e-2 (mxfp4) of the
    /// row's largest logit (docs/gguf.md); the bound leaves a margin.</summary>
    [Theory]
    [InlineData("q8_0")]
    [InlineData("q4_0")]
    [InlineData("mxfp4")]
    public void QuantizedExportsRunInLlamaCppAsTheyRunHere(string type)
    {
        using var dir = new TempDir();
        var gguf = dir.File($"stories260K-{type}.gguf");
        var report = GgufExport.Export(SharedData.Stories260K, gguf, new GgufExportOptions { Type = type });
        // w2 rows are 172 wide: not whole blocks, so they stay F16 and say so.
        Assert.All(report.Fallbacks, t => Assert.Equal("f16", t.Type));
        Assert.Equal(5, report.Fallbacks.Count());

        using var loaded = LoadedModel.Open(gguf, new ModelLoadOptions { TokenizerPath = SharedData.Tok512 });
        Assert.True(loaded.Checkpoint.IsCompressed);
        using var llama = new LlamaCppRuntime(gguf);
        int[] tokens = [1, .. loaded.Tokenizer.Encode(Sample(1500), addBos: false).Take(200)];
        Assert.InRange(RelativeError(OurLogits(loaded.Model, tokens), llama.Logits(tokens)), 0, 0.04);
    }

    /// <summary>Qwen2.5-shaped (q/k/v biases) and Qwen3-shaped (q/k norms, head_dim wider than dim/heads) models with
    /// Qwen2.5's real tokenizer.json, exported as llama.cpp's qwen2 and qwen3 architectures: llama.cpp tokenizes as we do
    /// (the qwen2 pre-tokenizer) and computes our logits.</summary>
    [Theory]
    [InlineData("qwen2", 0)]
    [InlineData("qwen3", 32)]
    public void QwenShapedModelsRunInLlamaCpp(string modelType, int headDim)
    {
        using var dir = new TempDir();
        var tokenizerFolder = SharedData.Path("tokenizers", "qwen2_5");
        var folder = SampleCheckpoint.Write(dir.File(modelType), new SampleOptions
        {
            ModelType = modelType, Dim = 64, HiddenDim = 128, Layers = 2, Heads = 4, KvHeads = 2, HeadDim = headDim,
            VocabSize = 151936, MaxSeqLen = 4096, RopeTheta = 1000000f, NormEps = 1e-6f, TiedEmbeddings = true,
            TokenizerFrom = tokenizerFolder,
        });
        var gguf = dir.File(modelType + ".gguf");
        var report = GgufExport.Export(folder, gguf, new GgufExportOptions { Type = "f32" });
        Assert.Equal((modelType, "qwen2"), (report.Architecture, report.PreTokenizer));

        using var llama = new LlamaCppRuntime(gguf);
        using var tokenizer = HuggingFaceTokenizer.Load(tokenizerFolder);
        // TinyStories tokenizes identically (its <|endoftext|> markers are Qwen's special token in both); on
        // unicode-stress.txt llama.cpp's own qwen2 splitting differs from the reference tokenizers library (ours equals
        // the independent golden ids there), so it is not compared.
        var text = File.ReadAllText(SharedData.TinyStoriesText);
        Assert.Equal(tokenizer.Encode(text, addBos: false), llama.Tokenize(text, special: true));

        using var loaded = LoadedModel.Open(folder);
        int[] tokens = [.. tokenizer.Encode(Sample(1200), addBos: false).Take(120)];
        var ours = OurLogits(loaded.Model, tokens);
        Assert.InRange(RelativeError(ours, llama.Logits(tokens)), 0, 1e-4);

        AssertEmbeddedTokenizerIs(gguf, tokenizer);
        AssertChatTemplateTravels(folder, gguf, report, llama, stripBos: "");

        // And Nanoscale reads the file back as that architecture (biases, q/k norms, head width, NeoX rotation): the
        // same logits as the model folder it came from.
        using var back = LoadedModel.Open(gguf, new ModelLoadOptions { TokenizerPath = tokenizerFolder });
        Assert.Equal((modelType == "qwen2", modelType == "qwen3", loaded.Config.HeadDim), (back.Config.AttentionBias, back.Config.QkNorm, back.Config.HeadDim));
        Assert.InRange(RelativeError(OurLogits(back.Model, tokens), ours), 0, 1e-6);
    }

    /// <summary>Opened with no tokenizer given or beside it, a GGUF file's own <c>gpt2</c> vocabulary is its tokenizer:
    /// it encodes both sample texts (and BOS) exactly as the tokenizer.json it was exported from.</summary>
    private static void AssertEmbeddedTokenizerIs(string gguf, HuggingFaceTokenizer original)
    {
        var alone = Path.Combine(Path.GetDirectoryName(gguf)!, "alone");
        Directory.CreateDirectory(alone);
        var copy = Path.Combine(alone, Path.GetFileName(gguf));
        File.Copy(gguf, copy);
        using var model = LoadedModel.Open(copy);
        Assert.Equal(original.BosId, model.Tokenizer.BosId);
        foreach (var file in new[] { "tinystories-sample.txt", "unicode-stress.txt" })
        {
            var text = File.ReadAllText(SharedData.Path("text", file));
            Assert.Equal(original.Encode(text, addBos: true), model.Tokenizer.Encode(text, addBos: true));
            var ids = original.Encode(text, addBos: false);
            Assert.Equal(original.Decode(ids), model.Tokenizer.Decode(ids));
        }
    }
}
