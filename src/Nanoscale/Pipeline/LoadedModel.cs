using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>How a model is opened to run (<see cref="LoadedModel.Open"/>).</summary>
public sealed record ModelLoadOptions
{
    /// <summary>Tokenizer file; null: the one beside the model (<see cref="TokenizerLoader.FindBeside"/>).</summary>
    public string? TokenizerPath { get; init; }

    /// <summary>The name of <see cref="TokenizerPath"/> in messages.</summary>
    public const string TokenizerPathName = nameof(ModelLoadOptions) + "." + nameof(TokenizerPath);

    /// <summary>Threads of the forward pass (default: every core).</summary>
    public Parallelism Parallelism { get; init; }

    /// <summary>How sessions store their key/value cache (<see cref="KvCacheType"/>; default f32).</summary>
    public KvCacheType KvCache { get; init; }

    /// <summary>The name of <see cref="KvCache"/> in messages.</summary>
    public const string KvCacheName = nameof(ModelLoadOptions) + "." + nameof(KvCache);

    /// <summary>Wraps the weight source before the model is built (calibration records the products' inputs this way).</summary>
    internal Func<ModelConfig, IWeightSource, IWeightSource>? WrapWeights { get; init; }
}

/// <summary>
/// The one model loader: a checkpoint of any kind Nanoscale reads, plain or compressed, opened as a runnable Llama
/// model with its configuration and tokenizer. Encoded tensors stay encoded and are decoded a tile of rows at a time
/// inside each product (<see cref="LogicalWeightSource"/>). Disposing closes the files.
/// </summary>
public sealed class LoadedModel : IDisposable
{
    private readonly LogicalWeightSource _weights;
    private readonly Lazy<IReadOnlyList<int>> _endTokens; // read once, at the first generation

    private LoadedModel(string path, LogicalCheckpoint checkpoint, LogicalWeightSource weights, LlamaModel model, ITokenizer tokenizer)
    {
        Path = path;
        Checkpoint = checkpoint;
        _weights = weights;
        Model = model;
        Tokenizer = tokenizer;
        _endTokens = new(GenerationConfigEndTokens);
    }

    /// <summary>The file or folder the model was opened from.</summary>
    public string Path { get; }

    /// <summary>The checkpoint, as its logical tensors.</summary>
    public LogicalCheckpoint Checkpoint { get; }

    public LlamaModel Model { get; }

    public ModelConfig Config => Model.Config;

    public ITokenizer Tokenizer { get; }

    /// <exception cref="CheckpointFormatException">The checkpoint describes no architecture, or a tensor does not fit it.</exception>
    /// <exception cref="FileNotFoundException">No tokenizer was given and none is beside the model.</exception>
    public static LoadedModel Open(string path, ModelLoadOptions? options = null)
    {
        options ??= new ModelLoadOptions();
        var checkpoint = LogicalCheckpoint.Open(path);
        LogicalWeightSource? weights = null;
        try
        {
            var config = checkpoint.Config ?? throw new CheckpointFormatException(path, "config", null,
                "the checkpoint does not describe a model architecture (no llama2.c header, config.json or nanoscale.config), so it cannot be run");
            if (KvRows.Unsupported(options.KvCache, config.KvDim) is { } problem)
                throw new InvalidOptionException(ModelLoadOptions.KvCacheName, $"{path}: {problem}");
            var tokenizerPath = options.TokenizerPath ?? TokenizerLoader.FindBeside(path);
            var tokenizer = tokenizerPath is not null ? TokenizerLoader.Open(tokenizerPath, config.VocabSize)
                : EmbeddedTokenizer(checkpoint.Container, config.VocabSize) ?? throw new InputException(
                    $"no tokenizer found beside {path} (tokenizer.model, tokenizer.bin or a single tok*.bin); give one with {ModelLoadOptions.TokenizerPathName}",
                    ModelLoadOptions.TokenizerPathName);
            weights = new LogicalWeightSource(checkpoint);
            IWeightSource source = options.WrapWeights is { } wrap ? wrap(config, weights) : weights;
            var model = LlamaModel.Load(config, source, new RuntimeOptions { Parallelism = options.Parallelism, KvCache = options.KvCache }, path);
            return new LoadedModel(path, checkpoint, weights, model, tokenizer);
        }
        catch
        {
            weights?.Dispose();
            checkpoint.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The tokenizer a GGUF file carries, when it is llama.cpp's <c>llama</c> (SentencePiece) vocabulary with scores:
    /// the same merge-by-score algorithm as a llama2.c <c>tokenizer.bin</c>, so it is read as one (pieces with U+2581 as
    /// spaces, BOS and EOS at the file's ids 1 and 2). Null for other vocabularies (give a tokenizer file).
    /// </summary>
    private static ITokenizer? EmbeddedTokenizer(ICheckpoint container, int vocabSize)
    {
        if (container is GgufFile { Vocabulary.Model: "gpt2" } bpe) return GgufVocabulary.OpenEmbedded(bpe, vocabSize);
        if (container is not GgufFile { Vocabulary: { Model: "llama" } vocabulary }
            || vocabulary.Scores.Count != vocabulary.Tokens.Count || vocabulary.Tokens.Count != vocabSize
            || vocabulary.Bos is not (null or Llama2cTokenizer.Bos) || vocabulary.Eos is not (null or Llama2cTokenizer.Eos))
            return null;
        using var bytes = new MemoryStream();
        var writer = new BinaryWriter(bytes);
        var pieces = vocabulary.Tokens.Select(t => System.Text.Encoding.UTF8.GetBytes(((string)t).Replace('\u2581', ' '))).ToList();
        writer.Write(Math.Max(1, pieces.Max(p => p.Length)));
        for (int i = 0; i < pieces.Count; i++)
        {
            writer.Write((float)(double)vocabulary.Scores[i]);
            writer.Write(pieces[i].Length);
            writer.Write(pieces[i]);
        }
        writer.Flush();
        return Llama2cTokenizer.Parse(bytes.ToArray(), container.Path + " (embedded vocabulary)", vocabSize);
    }

    /// <summary>Greedy generation from <paramref name="prompt"/> (<see cref="Generation.Greedy"/>), at most up to the
    /// model's maximum sequence length.</summary>
    public GenerationResult Generate(string prompt, int maxNewTokens, CancellationToken cancellationToken = default) =>
        Generate(prompt, maxNewTokens, new SamplingOptions(), null, cancellationToken);

    /// <summary>Generation from <paramref name="prompt"/> (<see cref="Generation.Generate(LlamaModel, ITokenizer, string, int, SamplingOptions, Action{string}?, CancellationToken)"/>), stopping also at the end
    /// tokens of a <c>generation_config.json</c> beside the model; <paramref name="onText"/> receives the text as it comes.</summary>
    /// <remarks>With <paramref name="jsonReply"/>, the new text is one JSON object following that schema (constrained
    /// decoding, <see cref="JsonConstraint"/>), and generation ends when it closes; with <paramref name="regexReply"/>,
    /// text that regular expression matches whole (<see cref="JsonConstraint.Matches"/>).</remarks>
    public GenerationResult Generate(string prompt, int maxNewTokens, SamplingOptions sampling, Action<string>? onText,
        CancellationToken cancellationToken = default, JsonSchema? jsonReply = null, string? regexReply = null, string? grammarReply = null) =>
        Generate(Tokenizer.Encode(prompt ?? "", addBos: Tokenizer.BosId is not null), maxNewTokens, sampling, onText, cancellationToken, jsonReply, regexReply,
            grammarReply);

    /// <summary>As <see cref="Generate(string, int, SamplingOptions, Action{string}?, CancellationToken, JsonSchema?, string?, string?)"/>, from prompt
    /// token ids already made.</summary>
    public GenerationResult Generate(int[] promptTokens, int maxNewTokens, SamplingOptions sampling, Action<string>? onText,
        CancellationToken cancellationToken = default, JsonSchema? jsonReply = null, string? regexReply = null, string? grammarReply = null)
    {
        sampling = sampling with { StopTokenIds = [.. sampling.StopTokenIds, .. _endTokens.Value] };
        return Generation.Generate(Model, Tokenizer, promptTokens, Math.Min(maxNewTokens, Config.MaxSeqLen - 1), sampling, onText, cancellationToken,
            Reply(jsonReply, regexReply, grammarReply));
    }

    /// <summary>Fill in the middle: the text between <paramref name="prefix"/> and <paramref name="suffix"/>
    /// (<see cref="GenerationResult.NewText"/>), from a prompt made with the tokenizer's fill-in-the-middle tokens as
    /// <c>serve</c>'s <c>suffix</c> makes it (<see cref="FillInTheMiddle"/>), ending also at their end tokens.</summary>
    /// <exception cref="InvalidOptionException">The tokenizer has no fill-in-the-middle tokens (named <paramref name="option"/>).</exception>
    public GenerationResult Infill(string prefix, string suffix, int maxNewTokens, SamplingOptions sampling, Action<string>? onText,
        CancellationToken cancellationToken = default, JsonSchema? jsonReply = null, string? regexReply = null, string? grammarReply = null,
        string option = "suffix")
    {
        var fim = FillInTheMiddle.Of(Tokenizer) ?? throw new InvalidOptionException(option, FillInTheMiddle.Missing);
        return Generate(fim.Prompt(prefix, suffix), maxNewTokens, fim.Ending(sampling), onText, cancellationToken, jsonReply, regexReply, grammarReply);
    }

    /// <summary>The constraint a reply is held to: one JSON object following <paramref name="schema"/>
    /// (<see cref="JsonReply"/>), text <paramref name="regex"/> matches whole, or text the GBNF
    /// <paramref name="grammar"/> matches whole; none without any.</summary>
    /// <exception cref="InvalidOptionException">More than one given, a schema without an object at its root, an
    /// expression outside the supported subset, or a grammar that does not read (its line and column named).</exception>
    internal ITokenConstraint? Reply(JsonSchema? schema, string? regex, string? grammar = null, string schemaOption = "json_schema",
        string regexOption = "--regex", string grammarOption = "--grammar")
    {
        if (regex is null && grammar is null) return JsonReply(schema, schemaOption);
        var option = regex is not null ? regexOption : grammarOption;
        if ((schema is not null ? 1 : 0) + (regex is not null ? 1 : 0) + (grammar is not null ? 1 : 0) > 1)
            throw new InvalidOptionException(option, "a reply can be held to one of a JSON schema, a regular expression and a grammar");
        try
        {
            return new JsonConstraint(TokenPieces.For(Tokenizer), regex is not null ? new JsonConstraint.Matches(regex)
                : new JsonConstraint.Grammar(grammar!, TokenId: JsonConstraint.Grammar.TokenIdsOf(Tokenizer)));
        }
        catch (ArgumentException e)
        {
            throw new InvalidOptionException(option, e.Message);
        }
    }

    /// <summary>The constraint that holds a reply to one JSON object following <paramref name="schema"/> (none without one).</summary>
    /// <exception cref="InvalidOptionException">The schema does not allow an object at its root.</exception>
    internal ITokenConstraint? JsonReply(JsonSchema? schema, string option = "json_schema") => schema switch
    {
        null => null,
        { AllowsObject: false } => throw new InvalidOptionException(option, "the schema must describe an object at its root"),
        _ => new JsonConstraint(TokenPieces.For(Tokenizer), new JsonConstraint.JsonObject(schema)),
    };

    /// <summary>The assistant's reply to <paramref name="messages"/> (role, content): the conversation rendered with the
    /// model's chat template (<paramref name="chatTemplateFile"/> instead when given; as <c>serve</c> renders it), generated
    /// until the template's end of turn, an end token or <paramref name="maxNewTokens"/>.</summary>
    /// <exception cref="CheckpointFormatException">The chat template is malformed or outside the Jinja subset.</exception>
    /// <exception cref="InvalidOptionException">The template refused the conversation, or it leaves no room in the context.</exception>
    public GenerationResult Chat(IReadOnlyList<ChatMessage> messages, int maxNewTokens, SamplingOptions sampling,
        Action<string>? onText, string? chatTemplateFile = null, CancellationToken cancellationToken = default, JsonSchema? jsonReply = null,
        string? regexReply = null, string? grammarReply = null)
    {
        using var chat = StartChat(chatTemplateFile: chatTemplateFile);
        return chat.Answer(messages, maxNewTokens, sampling, onText, "", cancellationToken, Reply(jsonReply, regexReply, grammarReply));
    }

    /// <summary>A conversation with the model through its chat template (<paramref name="chatTemplateFile"/> instead
    /// when given) that keeps its key/value cache from turn to turn (<see cref="ChatSession"/>).</summary>
    /// <exception cref="CheckpointFormatException">The chat template is malformed or outside the Jinja subset.</exception>
    public ChatSession StartChat(string? system = null, string? chatTemplateFile = null) =>
        new(this, ChatTemplate.For(this, chatTemplateFile), system);

    /// <summary><c>eos_token_id</c> (a number or a list) of the <c>generation_config.json</c> beside the model, if any
    /// (Llama-3 instruct models end turns with <c>&lt;|eot_id|&gt;</c>, which is not the tokenizer's EOS).</summary>
    private IReadOnlyList<int> GenerationConfigEndTokens()
    {
        var folder = Directory.Exists(Path) ? Path : System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(Path))!;
        var file = System.IO.Path.Combine(folder, "generation_config.json");
        if (!File.Exists(file) || new FileInfo(file).Length > 1 << 20) return [];
        using var document = JsonErrors.Parse(file, File.ReadAllBytes(file));
        if (!document.RootElement.TryGetProperty("eos_token_id", out var eos)) return [];
        var ids = eos.ValueKind == System.Text.Json.JsonValueKind.Array ? eos.EnumerateArray().ToList() : [eos];
        return [.. ids.Where(e => e.ValueKind == System.Text.Json.JsonValueKind.Number && e.TryGetInt32(out _)).Select(e => e.GetInt32())];
    }

    /// <summary>The end tokens of a <c>generation_config.json</c> beside the model (besides the tokenizer's EOS).</summary>
    internal IReadOnlyList<int> EndTokens => _endTokens.Value;

    /// <summary>Frees what the tokenizer holds outside the managed heap (Hugging Face's native library: 31 MiB of
    /// Llama-3's) once a caller has tokenized all it needs, as <c>eval</c> does before scoring; using
    /// <see cref="Tokenizer"/> afterwards throws <see cref="ObjectDisposedException"/> (a tokenizer with nothing
    /// native to free keeps working).</summary>
    public void ReleaseTokenizer() => (Tokenizer as IDisposable)?.Dispose();

    public void Dispose()
    {
        _weights.Dispose();
        Checkpoint.Dispose();
        (Tokenizer as IDisposable)?.Dispose();
    }
}
