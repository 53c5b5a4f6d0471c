using LLama;
using LLama.Common;
using LLama.Native;

namespace Nanoscale.Tests.Support;

/// <summary>
/// llama.cpp itself (libllama from LLamaSharp's CPU backend, through LLamaSharp's bindings of its C API): loads a GGUF
/// file, tokenizes text with the file's own vocabulary and returns the logits of every position, so our GGUF files and
/// our runtime are checked against the implementation users run.
/// </summary>
internal sealed class LlamaCppRuntime : IDisposable
{
    private static readonly Lazy<bool> Configured = new(() =>
    {
        NativeLibraryConfig.All.WithLibrary(LlamaCppGgml.LibraryPath("libllama.so"), null);
        NativeLibraryConfig.All.WithLogCallback((_, _) => { });
        NativeApi.llama_empty_call(); // loads the library now: the quantizer's entry points do not trigger it themselves
        return true;
    });

    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;

    public LlamaCppRuntime(string ggufPath, int contextSize = 512)
    {
        _ = Configured.Value;
        var parameters = new ModelParams(ggufPath)
        {
            ContextSize = (uint)contextSize,
            BatchSize = (uint)contextSize,
            UBatchSize = (uint)contextSize,
            GpuLayerCount = 0,
            Threads = 2,
            // llama.cpp's defaults keep the KV cache in f16; f32 compares the arithmetic, not the cache's rounding.
            TypeK = GGMLType.GGML_TYPE_F32,
            TypeV = GGMLType.GGML_TYPE_F32,
            FlashAttention = false,
        };
        _weights = LLamaWeights.LoadFromFile(parameters);
        _context = _weights.CreateContext(parameters);
    }

    public int VocabSize => _weights.Vocab.Count;

    /// <summary>llama.cpp's rendering of a conversation with the file's <c>tokenizer.chat_template</c>
    /// (<c>llama_chat_apply_template</c>: it recognises the template's family and renders it in its own code), with
    /// the assistant's turn opened.</summary>
    public string ApplyChatTemplate(IEnumerable<Nanoscale.Pipeline.ChatMessage> messages)
    {
        var template = new LLamaTemplate(_weights, strict: true) { AddAssistant = true };
        foreach (var m in messages) template.Add(m.Role, m.Content ?? "");
        return LLamaTemplate.Encoding.GetString(template.Apply());
    }

    /// <summary>llama.cpp's own quantizer (<c>llama_model_quantize</c>, what <c>llama-quantize</c> runs): writes
    /// <paramref name="output"/> from <paramref name="input"/> in one of its mixes, e.g. <c>MOSTLY_Q4_K_M</c>.</summary>
    public static void Quantize(string input, string output, LLamaFtype type)
    {
        _ = Configured.Value;
        if (!LLamaQuantizer.Quantize(input, output, type, nthread: 2))
            throw new InvalidOperationException($"llama.cpp could not quantize {input} to {type}");
    }

    /// <summary>llama.cpp's tokenization, without BOS; <paramref name="special"/> parses special-token text (as the
    /// Hugging Face tokenizers library always does for added tokens).</summary>
    public int[] Tokenize(string text, bool addBos = false, bool special = false) =>
        [.. _context.Tokenize(text, addBos, special).Select(t => (int)t)];

    /// <summary>Logits [tokens.Length, vocab] of one fresh sequence of <paramref name="tokens"/>.</summary>
    public float[][] Logits(IReadOnlyList<int> tokens)
    {
        _context.NativeHandle.MemoryClear();
        var batch = new LLamaBatch();
        for (int i = 0; i < tokens.Count; i++) batch.Add(tokens[i], i, LLamaSeqId.Zero, logits: true);
        var result = _context.NativeHandle.Decode(batch);
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode returned {result}");
        var logits = new float[tokens.Count][];
        for (int i = 0; i < tokens.Count; i++) logits[i] = _context.NativeHandle.GetLogitsIth(i).ToArray();
        return logits;
    }

    /// <summary>Which tokens llama.cpp's grammar sampler (<c>llama_sampler_init_grammar</c>, the one llama-server holds a
    /// <c>grammar</c> with) lets come next after <paramref name="accepted"/>: a logit left finite by its apply.</summary>
    public bool[] GrammarAllows(string grammar, IReadOnlyList<int> accepted, string root = "root")
    {
        using var chain = SafeLLamaSamplerChainHandle.Create(LLamaSamplerChainParams.Default());
        chain.AddGrammar(_weights.NativeHandle.Vocab, grammar, root);
        foreach (int token in accepted) chain.Accept((LLamaToken)token);
        var array = LLamaTokenDataArray.Create(new float[VocabSize]);
        using (LLamaTokenDataArrayNative.Create(array, out var native)) chain.Apply(ref native);
        var allowed = new bool[VocabSize];
        foreach (var data in array.Data.Span) allowed[(int)data.ID] = !float.IsNegativeInfinity(data.Logit);
        return allowed;
    }

    /// <summary>Whether llama.cpp ends generation at this token (its end-of-generation set: EOS, EOT and tokens it
    /// recognises by their text, such as a regular <c>&lt;/s&gt;</c> in a BPE vocabulary).</summary>
    public bool IsEndOfGeneration(int token) => ((LLamaToken)token).IsEndOfGeneration(_weights.NativeHandle.Vocab);

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }
}
