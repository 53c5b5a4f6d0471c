using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>How <see cref="CompletionService.EmbedAsync"/> pools an input's final hidden states into one vector.</summary>
public enum EmbeddingPooling
{
    /// <summary>The mean over every position (llama.cpp's <c>--pooling mean</c>).</summary>
    Mean,

    /// <summary>The last position's (what a causal model has read all of the input at).</summary>
    Last,
}

/// <summary>One request to <see cref="CompletionService"/>: a prompt (or chat messages) and how to continue it.</summary>
public sealed record CompletionRequest
{
    /// <summary>The text to continue; ignored when <see cref="Messages"/> or <see cref="PromptIds"/> is set.</summary>
    public string Prompt { get; init; } = "";

    /// <summary>The prompt as token ids (taken as they are: no BOS added), instead of <see cref="Prompt"/>.</summary>
    public int[]? PromptIds { get; init; }

    /// <summary>Fill in the middle (OpenAI's <c>suffix</c>, llama.cpp's <c>/infill</c>): with a suffix, <see cref="Prompt"/>
    /// is the text before the gap and this the text after it, and the prompt is made with the tokenizer's
    /// fill-in-the-middle tokens (<see cref="FillInTheMiddle"/>); the reply is the middle and ends at their end tokens
    /// too. Null: a plain completion.</summary>
    public string? Suffix { get; init; }

    /// <summary>With <see cref="Suffix"/>: other files as context before the gap's (name, text; llama.cpp's
    /// <c>input_extra</c>).</summary>
    public IReadOnlyList<(string Name, string Text)>? InfillFiles { get; init; }

    /// <summary>With <see cref="Suffix"/>: what the middle already begins with (llama.cpp's <c>/infill</c>
    /// <c>prompt</c>); the reply continues it.</summary>
    public string MiddleStart { get; init; } = "";

    /// <summary>Whether the answer repeats the prompt (OpenAI's <c>echo</c>): with <see cref="SamplingOptions.LogProbs"/>
    /// the prompt's own tokens are scored too (<see cref="CompletionOutcome.PromptLogProbs"/>), and
    /// <see cref="MaxTokens"/> may be 0 — a prompt scored, nothing generated (what lm-evaluation-harness asks of a
    /// completions server for log-likelihoods).</summary>
    public bool Echo { get; init; }

    /// <summary>Chat messages, rendered with the model's chat template ((role, content) pairs convert to them).</summary>
    public IReadOnlyList<ChatMessage>? Messages { get; init; }

    /// <summary>Functions the model may call (OpenAI's <c>tools</c>: each <c>{"type": "function", "function": {name,
    /// description, parameters}}</c>, as JSON elements or dictionaries), given to the chat template as <c>tools</c>; with
    /// any, the reply is searched for calls (<see cref="CompletionOutcome.ToolCalls"/>).</summary>
    public IReadOnlyList<object>? Tools { get; init; }

    /// <summary>Extra variables for the chat template (the API's <c>chat_template_kwargs</c>, e.g. Qwen3's
    /// <c>enable_thinking</c>): JSON elements, or strings, numbers, booleans, null, sequences and string-keyed
    /// dictionaries of them.</summary>
    public IReadOnlyDictionary<string, object?>? ChatTemplateArguments { get; init; }

    /// <summary>Whether the reply must call a function (OpenAI's <c>tool_choice</c>): null lets the model choose;
    /// <see cref="AnyTool"/> makes it call one of <see cref="Tools"/> (<c>required</c>); a function's name makes it call
    /// that one. The reply is then made to begin a call in the template's form, and decoding is constrained to one of the
    /// names and a JSON object of arguments (not checked against the function's schema).</summary>
    public string? RequiredTool { get; init; }

    /// <summary>Whether the reply must be one JSON object (OpenAI's <c>response_format</c>: <c>json_object</c> is
    /// <see cref="JsonSchema.Any"/>, <c>json_schema</c> its schema): decoding is constrained to it, and the reply ends
    /// when the object is whole. Null: any text.</summary>
    public JsonSchema? JsonReply { get; init; }

    /// <summary>Whether the reply must be text that this regular expression matches whole (vLLM's <c>guided_regex</c>,
    /// and <c>guided_choice</c> as an alternation of its literals, <see cref="JsonConstraint.Matches.Choice"/>): decoding
    /// is constrained to it; an end token may come at any match, and the reply ends where a match admits nothing more.
    /// Null: any text.</summary>
    public string? RegexReply { get; init; }

    /// <summary>Whether the reply must be text this GBNF grammar (llama.cpp's <c>grammar</c>; vLLM's
    /// <c>guided_grammar</c>) matches whole from its <c>root</c> rule: as <see cref="RegexReply"/>, an end token may
    /// come wherever the grammar is satisfied. Null: any text.</summary>
    public string? GrammarReply { get; init; }

    /// <summary>With <see cref="GrammarReply"/> (or another shape), llama.cpp's lazy grammar (<c>grammar_lazy</c> and word
    /// <c>grammar_triggers</c>): the reply is free until one of these words, and held to the shape from that word on (the
    /// word included). Null or empty: held from the start.</summary>
    public IReadOnlyList<string>? ShapeTriggers { get; init; }

    /// <summary>Whether a reply may call several functions (OpenAI's <c>parallel_tool_calls</c>, default true); false
    /// answers only its first call.</summary>
    public bool ParallelToolCalls { get; init; } = true;

    /// <summary><see cref="RequiredTool"/>: any of the tools.</summary>
    public const string AnyTool = "*";

    public int MaxTokens { get; init; } = 16;

    public SamplingOptions Sampling { get; init; } = new();
}

/// <summary>One chat message: its role and text, and for tool use the calls an assistant made (<see cref="ToolCalls"/>)
/// or the call a <c>tool</c> message answers (<see cref="ToolCallId"/>). Content may be null (an assistant turn that only
/// calls tools).</summary>
public sealed record ChatMessage(string Role, string? Content)
{
    public IReadOnlyList<ToolCall>? ToolCalls { get; init; }

    public string? ToolCallId { get; init; }

    public static implicit operator ChatMessage((string Role, string Content) message) => new(message.Role, message.Content);
}

/// <summary>A function call: its id, the function's name and its arguments as JSON text (OpenAI's shape).</summary>
public sealed record ToolCall(string Id, string Name, string Arguments)
{
    /// <summary>An id for a call, as OpenAI's look: <c>call_</c> and 24 random hex digits.</summary>
    public static string NewId() => "call_" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(12));
}

/// <summary>What a request produced: the new text, token counts, and why it stopped (OpenAI's words: <c>stop</c>,
/// <c>length</c>, or <c>tool_calls</c> when the reply called functions).</summary>
public sealed record CompletionOutcome(string Text, int PromptTokens, int CompletionTokens, string FinishReason)
{
    /// <summary>The functions the reply called, when the request offered tools and the reply is such calls; then
    /// <see cref="Text"/> is the reply's text outside them.</summary>
    public IReadOnlyList<ToolCall>? ToolCalls { get; init; }

    /// <summary>Whether the chat template opened a reasoning block in the prompt itself, so the reply begins inside it
    /// (reasoning up to <c>&lt;/think&gt;</c>, then the answer; <see cref="ChatTemplate.OpensReasoning"/>).</summary>
    public bool StartsInReasoning { get; init; }

    /// <summary>Prompt tokens a kept cache already held, so they did not run (prompt caching; counted in
    /// <see cref="PromptTokens"/> too).</summary>
    public int CachedPromptTokens { get; init; }

    /// <summary>Each new token's text and log-probability with its alternatives, when the request asked
    /// (<see cref="SamplingOptions.LogProbs"/>).</summary>
    public IReadOnlyList<CompletionLogProb>? LogProbs { get; init; }

    /// <summary>Why generation stopped, in the runtime's words (an end token, a stop string, the token limit, the
    /// context); <see cref="FinishReason"/> is OpenAI's.</summary>
    public StopReason Stop { get; init; }

    /// <summary>With <see cref="CompletionRequest.Echo"/> and log-probabilities asked: each prompt token's
    /// log-probability after the tokens before it and its alternatives (the first, which nothing precedes, has NaN and
    /// none).</summary>
    public IReadOnlyList<CompletionLogProb>? PromptLogProbs { get; init; }

    /// <summary>With <see cref="CompletionRequest.Echo"/>: the prompt's text (as given, or its token ids decoded).</summary>
    public string? PromptText { get; init; }

    /// <summary>Seconds from the request's admission to its prompt having run, and of generation after that.</summary>
    public double PromptSeconds { get; init; }

    public double GenerateSeconds { get; init; }
}

/// <summary>A generated token as text (the tokenizer's decoding of that one id), its log-probability, and the most
/// likely alternatives at its position.</summary>
public sealed record CompletionLogProb(string Token, double LogProb, IReadOnlyList<(string Token, double LogProb)> Top);

/// <summary>The service has as many requests waiting as it accepts (<see cref="CompletionService.MaxWaiting"/>).</summary>
public sealed class ServiceBusyException(string message) : NanoscaleException(message);

/// <summary>
/// Generation as a service, for <c>nanoscale serve</c>: one loaded model behind a <see cref="TokenFactory"/>
/// (continuous batching: up to <see cref="MaxBatch"/> requests share each pass over the weights, joining and leaving
/// at token boundaries), with admission limits checked before a request waits. A prompt that does not fit the
/// context, or more new tokens than <see cref="MaxTokensLimit"/>, is an <see cref="InvalidOptionException"/>; so is a
/// request whose KV cache alone exceeds the budget. Requests beyond the running batch wait, in order, for a place and
/// for KV budget; beyond <see cref="MaxWaiting"/> of them, a <see cref="ServiceBusyException"/>. A cancelled request
/// (its client gone) leaves the batch at its next token.
/// </summary>
public sealed class CompletionService : IDisposable
{
    private readonly LoadedModel _model;
    private readonly ChatTemplate _template;
    private readonly TokenFactory _factory;
    private readonly object _budgetLock = new();
    private TaskCompletionSource _budgetFreed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _reserved;
    private readonly SemaphoreSlim _embedding = new(1);
    private int _inService;

    /// <param name="model">The model, owned by the service from now on.</param>
    /// <param name="modelName">Its name in the API.</param>
    /// <param name="maxWaiting">Requests that may wait beyond the running batch.</param>
    /// <param name="contextLength">Prompt plus new tokens of one request (default and at most: the model's).</param>
    /// <param name="maxBatch">Requests in one step at most.</param>
    /// <param name="kvBudgetBytes">KV-cache bytes all running requests may hold together (null: no limit beyond the batch).</param>
    /// <param name="chatTemplateFile">A Jinja chat template to use instead of the model's own (null: the model's).</param>
    /// <param name="promptCache">Whether a request whose prompt begins as a finished one's did reuses its kept cache
    /// (<see cref="TokenFactory.PromptCache"/>).</param>
    /// <exception cref="CheckpointFormatException">The chat template is malformed or outside the Jinja subset.</exception>
    public CompletionService(LoadedModel model, string modelName, int maxWaiting = 16, int? contextLength = null, int maxBatch = 8,
        long? kvBudgetBytes = null, string? chatTemplateFile = null, bool promptCache = true)
    {
        _model = model;
        ModelName = modelName;
        MaxWaiting = maxWaiting;
        MaxBatch = maxBatch;
        KvBudgetBytes = kvBudgetBytes;
        ContextLength = Math.Min(contextLength ?? model.Config.MaxSeqLen, model.Config.MaxSeqLen);
        _template = ChatTemplate.For(model, chatTemplateFile);
        // Tool-call markers the tokenizer holds as special tokens stay in the replies' text, where the parser reads them.
        _replyTokenizer = MarkerKeepingTokenizer.For(model.Tokenizer, ToolCallParser.SpecialMarkers);
        _factory = new TokenFactory(model.Model, _replyTokenizer, maxBatch, model.EndTokens, promptCache);
    }

    public string ModelName { get; }

    /// <summary>When the model's files were last written (a folder: its newest file), as Unix seconds: the API's
    /// <c>created</c>; 0 when unknown.</summary>
    public long ModelCreated
    {
        get
        {
            try
            {
                var path = _model.Path;
                var time = File.Exists(path) ? File.GetLastWriteTimeUtc(path)
                    : Directory.Exists(path) ? new DirectoryInfo(path).EnumerateFiles().Select(f => f.LastWriteTimeUtc).DefaultIfEmpty().Max()
                    : default;
                return time == default ? 0 : new DateTimeOffset(time, TimeSpan.Zero).ToUnixTimeSeconds();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return 0; }
        }
    }

    /// <summary>How the sequences' key/value caches store their numbers (<c>f32</c>, <c>f16</c>, <c>bf16</c>, <c>q8</c>).</summary>
    public string KvCacheName => _model.Model.Options.KvCache.Name();

    /// <summary>Requests that may wait beyond the running batch.</summary>
    public int MaxWaiting { get; }

    /// <summary>Requests that share a step at most.</summary>
    public int MaxBatch { get; }

    public long? KvBudgetBytes { get; }

    /// <summary>Prompt plus new tokens of one request.</summary>
    public int ContextLength { get; }

    public int MaxTokensLimit => ContextLength - 1;

    /// <summary>Largest batch a step has run so far.</summary>
    public int LargestBatch => _factory.LargestBatch;

    /// <summary>Requests admitted and not finished: running in the batch or waiting for a place (0 when idle, e.g. once
    /// every disconnected client's request has been cancelled).</summary>
    public int InService => Volatile.Read(ref _inService);

    /// <summary>Sequences in the running batch now.</summary>
    public int Running => _factory.Active;

    /// <summary>KV-cache bytes the admitted requests hold now (counted against <see cref="KvBudgetBytes"/>).</summary>
    public long ReservedKvBytes
    {
        get { lock (_budgetLock) return _reserved; }
    }

    /// <summary>Where the chat template in use comes from (<c>tokenizer_config.json</c>, <c>chat_template.jinja</c>, a
    /// GGUF file's <c>tokenizer.chat_template</c>, the file given), or <c>plain</c> without one.</summary>
    public string ChatTemplateName => _template.Name;

    /// <summary>The chat template's Jinja text ("" without one).</summary>
    public string ChatTemplateText => _template.Text;

    /// <summary>The texts that begin a reply's function calls in the forms the service reads (<c>&lt;tool_call&gt;</c>,
    /// <c>[TOOL_CALLS]</c>, …): a stream holds a reply's text from the first of them on.</summary>
    public static IReadOnlyList<string> ToolCallMarkers => ToolCallParser.Markers;

    /// <summary>The texts of the BOS and EOS tokens: the template's configuration's, else the tokenizer's decoding.</summary>
    public string BosText => _template.TokenText("bos_token") ?? (_model.Tokenizer.BosId is int b ? _model.Tokenizer.Decode([b]) : "");

    public string EosText => _template.TokenText("eos_token") ?? (_model.Tokenizer.EosId is int e ? _model.Tokenizer.Decode([e]) : "");

    /// <summary>Whether the chat template knows reasoning blocks (<c>&lt;think&gt;</c>), so chat replies may open with one.</summary>
    public bool ChatTemplateThinks => _template.Thinks;

    /// <summary>KV-cache bytes of a sequence of <paramref name="positions"/> (keys and values, every layer, in the model's <see cref="RuntimeOptions.KvCache"/> type).</summary>
    public long KvBytes(int positions) => _model.Model.Options.KvCacheBytes(2L * _model.Config.Layers * positions * _model.Config.KvDim);

    /// <summary>Prompt token ids of a request (its chat rendered when it has messages).</summary>
    public int[] PromptTokens(CompletionRequest request) => PromptTokens(request, "");

    /// <summary>Prompt token ids of a request, the reply's forced beginning <paramref name="replyStart"/> after a chat's
    /// generation prompt.</summary>
    private int[] PromptTokens(CompletionRequest request, string replyStart)
    {
        if (request.Messages is { } messages) return _template.PromptTokens(_model.Tokenizer, messages, request.ChatTemplateArguments, request.Tools, replyStart);
        if (request.Suffix is { } suffix)
        {
            if (request.PromptIds is not null) throw new InvalidOptionException("suffix", "a fill-in-the-middle prompt must be text, not token ids");
            return (_fim ??= new(() => FillInTheMiddle.Of(_model.Tokenizer))).Value is { } fim
                ? fim.Prompt(request.Prompt, suffix, request.InfillFiles, request.MiddleStart)
                : throw new InvalidOptionException("suffix", FillInTheMiddle.Missing);
        }
        if (request.PromptIds is { } ids)
            return ids.All(id => (uint)id < (uint)_model.Config.VocabSize) ? ids
                : throw new InvalidOptionException("prompt", $"a token id outside the vocabulary (0..{_model.Config.VocabSize - 1})");
        return Tokenize(request.Prompt, addSpecial: true);
    }

    /// <summary>The tokenizer's fill-in-the-middle tokens, looked up on the first request with a suffix.</summary>
    private Lazy<FillInTheMiddle?>? _fim;

    /// <summary>The text a chat request's prompt is (its messages, tools and template arguments rendered with the chat
    /// template, before tokenizing): what <c>/apply-template</c> shows.</summary>
    /// <exception cref="InvalidOptionException">No messages, or the template refused them.</exception>
    public string RenderPrompt(CompletionRequest request) =>
        request.Messages is { Count: > 0 } messages ? _template.Render(messages, request.ChatTemplateArguments, tools: request.Tools)
            : throw new InvalidOptionException("messages", "at least one message is needed");

    /// <summary>Token ids of <paramref name="text"/>, with BOS first when <paramref name="addSpecial"/> and the tokenizer
    /// has one (special tokens written in the text are read as such either way).</summary>
    public int[] Tokenize(string text, bool addSpecial) => _model.Tokenizer.Encode(text, addBos: addSpecial && _model.Tokenizer.BosId is not null);

    /// <summary>The text token <paramref name="id"/> adds to a reply ("" for a control token decoding drops; a
    /// tool-call marker's text where the reply keeps it).</summary>
    /// <exception cref="InvalidOptionException">An id outside the vocabulary (named <paramref name="option"/>).</exception>
    public string ReplyText(int id, string option = "tokens") =>
        (uint)id < (uint)_model.Config.VocabSize ? _replyTokenizer.Decode([id])
            : throw new InvalidOptionException(option, $"token {id} is outside the vocabulary (0..{_model.Config.VocabSize - 1})");

    /// <summary>Decodes the replies' text (<see cref="MarkerKeepingTokenizer"/> over the model's tokenizer).</summary>
    private readonly ITokenizer _replyTokenizer;

    /// <summary>The text of <paramref name="ids"/> (control tokens give none).</summary>
    /// <exception cref="InvalidOptionException">An id outside the vocabulary.</exception>
    public string Detokenize(int[] ids)
    {
        foreach (int id in ids)
            if ((uint)id >= (uint)_model.Config.VocabSize)
                throw new InvalidOptionException("tokens", $"token {id} is outside the vocabulary (0..{_model.Config.VocabSize - 1})");
        return _model.Tokenizer.Decode(ids);
    }

    /// <summary>For a request that must call a function, or answer with a JSON object: the reply's forced beginning and
    /// the constraint on the rest (<see cref="ToolCallParser.Forced"/>, <see cref="JsonConstraint"/>); none otherwise.</summary>
    /// <exception cref="InvalidOptionException">No tools or no chat, a template that does not describe tools, a named
    /// function that is not among the tools, or both a JSON reply and a forced call.</exception>
    private (string Start, ITokenConstraint? Constraint) ForcedCall(CompletionRequest request)
    {
        if (request.JsonReply is not null || request.RegexReply is not null || request.GrammarReply is not null)
        {
            var option = request.JsonReply is not null ? "response_format" : request.RegexReply is not null ? "guided_regex" : "grammar";
            if (request.RequiredTool is not null)
                throw new InvalidOptionException(option, "a reply held to a JSON schema, regular expression or grammar cannot be combined with forcing a tool call");
            return ("", _model.Reply(request.JsonReply, request.RegexReply, request.GrammarReply, "response_format", "guided_regex", "grammar"));
        }
        if (request.RequiredTool is not { } required) return ("", null);
        if (request.Messages is null || request.Tools is not { Count: > 0 } tools)
            throw new InvalidOptionException("tool_choice", "a call can be forced only in a chat with tools");
        if (_template.ToolForm is not { } form)
            throw new InvalidOptionException("tool_choice", $"the model's chat template ({_template.Name}) does not describe tools, so a call cannot be forced");
        var functions = tools.Select(OfferedFunction).ToList();
        var names = functions.Select(f => f.GetProperty("name").GetString()!).ToList();
        string? function = required == CompletionRequest.AnyTool ? null : required;
        if (function is not null && !names.Contains(function))
            throw new InvalidOptionException("tool_choice", $"'{function}' is not among the tools offered ({string.Join(", ", names)})");
        return ToolCallParser.Forced(form, TokenPieces.For(_model.Tokenizer), functions, function);
    }

    /// <summary>An offered tool's function (<c>{name, description, parameters}</c>).</summary>
    /// <exception cref="InvalidOptionException">The tool is not <c>{"type": "function", "function": {"name": …}}</c>.</exception>
    private static System.Text.Json.JsonElement OfferedFunction(object tool) =>
        FunctionOf(tool) ?? throw new InvalidOptionException("tools", "each tool must be {\"type\": \"function\", \"function\": {\"name\": …}}");

    /// <summary>An offered tool's function, or null when the tool has none with a name.</summary>
    private static System.Text.Json.JsonElement? FunctionOf(object tool) =>
        System.Text.Json.JsonSerializer.SerializeToElement(tool) is { ValueKind: System.Text.Json.JsonValueKind.Object } json
        && json.TryGetProperty("function", out var f) && f.ValueKind == System.Text.Json.JsonValueKind.Object
        && f.TryGetProperty("name", out var n) && n.ValueKind == System.Text.Json.JsonValueKind.String && n.GetString() is { Length: > 0 }
            ? f
            : null;

    /// <summary>Whether the reply to <paramref name="request"/> begins inside a reasoning block the chat template opened
    /// in the prompt (<see cref="ChatTemplate.OpensReasoning"/>; false for a plain prompt).</summary>
    public bool StartsInReasoning(CompletionRequest request) =>
        request.Messages is { } messages && _template.OpensReasoning(messages, request.ChatTemplateArguments, request.Tools);

    /// <summary>Runs <paramref name="request"/> in the batch; <paramref name="onText"/> gets the text as it comes.</summary>
    /// <exception cref="InvalidOptionException">max_tokens out of range, the prompt does not leave room in the context, or
    /// the request's KV cache exceeds the budget by itself.</exception>
    /// <exception cref="ServiceBusyException">The batch and the queue are full.</exception>
    /// <remarks>With <see cref="SamplingOptions.LogProbs"/>, <c>onLogProbs</c> gets, just before each piece of text, the
    /// log-probabilities of the tokens generated since the previous piece.</remarks>
    public async Task<CompletionOutcome> CompleteAsync(CompletionRequest request, Action<string>? onText = null, CancellationToken cancellationToken = default,
        Action<IReadOnlyList<CompletionLogProb>>? onLogProbs = null)
    {
        if (request.Suffix is not null && (request.Echo || request.Messages is not null))
            throw new InvalidOptionException("suffix", request.Echo ? "a fill-in-the-middle request cannot echo its prompt" : "a chat has no suffix");
        int fewest = request.Echo ? 0 : 1; // an echoed prompt may be scored without generating
        if (request.MaxTokens < fewest || request.MaxTokens > MaxTokensLimit)
            throw new InvalidOptionException("max_tokens", $"{request.MaxTokens} is outside {fewest}..{MaxTokensLimit}");
        var sampling = request.Sampling.Validate();
        if (sampling.LogitBias?.Keys.FirstOrDefault(id => id >= _model.Config.VocabSize, -1) is >= 0 and var outside)
            throw new InvalidOptionException("logit_bias", $"token {outside} is outside the vocabulary (0..{_model.Config.VocabSize - 1})");
        var (start, constraint) = ForcedCall(request);
        // A reply that begins inside a reasoning block the template opened reasons freely and is held from the block's
        // close on, so the answer (content) has the shape asked for, not the reasoning.
        if (request.ShapeTriggers is { Count: > 0 } triggers && constraint is JsonConstraint lazy)
            constraint = new AfterText(lazy, TokenPieces.For(_model.Tokenizer), triggers, includeMarker: true);
        if (start.Length == 0 && constraint is not null)
            constraint = AfterText.ForReply(constraint, _template.Thinks && StartsInReasoning(request), _model.Tokenizer, ChatTemplate.ThinkClose);
        var prompt = PromptTokens(request, start);
        if (prompt.Length == 0) throw new InvalidOptionException("prompt", "it is empty and the tokenizer has no BOS token to start from");
        if (prompt.Length >= ContextLength)
            throw new InvalidOptionException("prompt", $"it has {prompt.Length} tokens; the context holds {ContextLength} (prompt and new tokens together)");
        int maxTokens = Math.Min(request.MaxTokens, ContextLength - prompt.Length);
        if (request.Echo) return await EchoAsync(request, prompt, sampling, onText, cancellationToken, onLogProbs).ConfigureAwait(false);
        long need = KvBytes(prompt.Length + maxTokens);
        if (KvBudgetBytes is { } budget && need > budget)
            throw new InvalidOptionException("max_tokens", $"{prompt.Length} prompt and {maxTokens} new tokens need {need} bytes of KV cache; the budget is {budget} (the server's --kv-budget)");
        // A chat turn ends at the template's end-of-turn token (Llama-3's <|eot_id|> is not the tokenizer's EOS).
        if (request.Messages is not null) sampling = _template.EndingTurns(_model.Tokenizer, sampling);
        // A middle ends at the fill-in-the-middle family's padding and separators too.
        if (request.Suffix is not null && _fim?.Value is { } fim)
            sampling = fim.Ending(sampling);

        if (Interlocked.Increment(ref _inService) > MaxBatch + MaxWaiting)
        {
            Interlocked.Decrement(ref _inService);
            Metrics.Reject();
            throw new ServiceBusyException($"{MaxBatch} requests are running and {MaxWaiting} waiting; try again later");
        }
        Metrics.Admit();
        var arrived = System.Diagnostics.Stopwatch.StartNew();
        bool firstText = false;
        try
        {
            var (held, prefix) = await ReserveAsync(need, prompt, maxTokens, cancellationToken).ConfigureAwait(false);
            var reservation = new Reservation { Bytes = held, Prefix = prefix };
            try
            {
                // The completion is exactly the text handed out as it came (the prompt not repeated; a stop string and
                // what follows it left out).
                var text = new System.Text.StringBuilder();
                // A forced call's beginning is in the prompt, and the reply's text from its first piece on.
                if (start.Length > 0)
                {
                    text.Append(start);
                    onText?.Invoke(start);
                }
                var result = await _factory.SubmitAsync(prompt, maxTokens, sampling, piece =>
                {
                    if (!firstText)
                    {
                        firstText = true;
                        Metrics.FirstTextAfter(arrived.Elapsed);
                    }
                    text.Append(piece);
                    onText?.Invoke(piece);
                }, cancellationToken, onLogProbs is null ? null : list => onLogProbs([.. list.Select(Named)]), constraint, prefix,
                    KvBudgetBytes is null ? null : shared => Refund(reservation, shared)).ConfigureAwait(false);
                var outcome = new CompletionOutcome(text.ToString(), result.PromptTokens, result.GeneratedTokens,
                    result.Stop == StopReason.Length || result.Stop == StopReason.Context ? "length" : "stop")
                {
                    LogProbs = result.LogProbs?.Select(Named).ToList(),
                    CachedPromptTokens = result.CachedPromptTokens,
                    StartsInReasoning = _template.Thinks && StartsInReasoning(request),
                    Stop = result.Stop,
                    PromptSeconds = result.PromptSeconds,
                    GenerateSeconds = result.GenerateSeconds,
                };
                // With tools offered, a reply that spells out calls is those calls (and the text before them).
                if (request.Messages is not null && request.Tools is { Count: > 0 } && ToolCallParser.Parse(outcome.Text, [.. request.Tools.Select(FunctionOf).OfType<System.Text.Json.JsonElement>()]) is { } parsed)
                    outcome = outcome with
                    {
                        Text = parsed.Content ?? "", ToolCalls = request.ParallelToolCalls ? parsed.Calls : parsed.Calls.Take(1).ToList(), FinishReason = "tool_calls",
                    };
                Metrics.Finish(outcome);
                return outcome;
            }
            finally
            {
                Release(reservation);
            }
        }
        catch (OperationCanceledException)
        {
            Metrics.Cancel();
            throw;
        }
        catch
        {
            Metrics.Fail();
            throw;
        }
        finally
        {
            Interlocked.Decrement(ref _inService);
        }
    }

    /// <summary>What the service has done since it started (<c>/metrics</c>).</summary>
    public ServiceMetrics Metrics { get; } = new();

    /// <summary>Steps the batch has run (passes over the weights).</summary>
    public long Steps => _factory.Steps;

    /// <summary>The length of <see cref="EmbedAsync"/>'s vectors: the model's width.</summary>
    public int EmbeddingWidth => _model.Config.Dim;

    /// <summary>Inputs of one embeddings request at most.</summary>
    public const int MaxEmbeddingInputs = 256;

    /// <summary>
    /// Embeddings (OpenAI's <c>/v1/embeddings</c>, llama.cpp's pooled embeddings of a generative model): each input's
    /// tokens run through the model in a session of their own, and the final hidden states (after the last RMSNorm)
    /// are pooled — <see cref="EmbeddingPooling.Mean"/> over every position, or <see cref="EmbeddingPooling.Last"/>, the
    /// last position's — then scaled to unit length (cosine similarity is then a dot product). Inputs are text
    /// (tokenized as a completion prompt is) or token ids; each must fit the context; their KV cache is held against the
    /// budget while they run, one input at a time.
    /// </summary>
    /// <returns>One vector of the model's width per input, and the tokens they had together.</returns>
    /// <exception cref="InvalidOptionException">No inputs or too many, an empty input, an id outside the vocabulary, or an
    /// input longer than the context.</exception>
    public async Task<(float[][] Vectors, int Tokens)> EmbedAsync(IReadOnlyList<object> inputs, EmbeddingPooling pooling = EmbeddingPooling.Mean,
        CancellationToken cancellationToken = default)
    {
        if (inputs.Count is 0 or > MaxEmbeddingInputs)
            throw new InvalidOptionException("input", $"give 1..{MaxEmbeddingInputs} inputs (found {inputs.Count})");
        var all = inputs.Select((input, i) => input switch
        {
            string text => Tokenize(text, addSpecial: true),
            int[] ids => ids.All(id => (uint)id < (uint)_model.Config.VocabSize) ? ids
                : throw new InvalidOptionException("input", $"input {i} has a token id outside 0..{_model.Config.VocabSize - 1}"),
            _ => throw new InvalidOptionException("input", "each input is a string or a list of token ids"),
        }).ToList();
        for (int i = 0; i < all.Count; i++)
        {
            if (all[i].Length == 0) throw new InvalidOptionException("input", $"input {i} is empty");
            if (all[i].Length > ContextLength)
                throw new InvalidOptionException("prompt", $"input {i} has {all[i].Length} tokens; the context holds {ContextLength}");
        }
        int width = _model.Config.Dim;
        var vectors = new float[all.Count][];
        for (int i = 0; i < all.Count; i++)
        {
            var tokens = all[i];
            long need = KvBytes(tokens.Length);
            if (KvBudgetBytes is { } budget && need > budget)
                throw new InvalidOptionException("input", $"input {i}'s {tokens.Length} tokens need {need} bytes of KV cache; the budget is {budget}");
            await ReserveAsync(need, cancellationToken).ConfigureAwait(false);
            await _embedding.WaitAsync(cancellationToken).ConfigureAwait(false); // one input at a time beside the batch
            try
            {
                vectors[i] = await Task.Run(() =>
                {
                    var session = _model.Model.CreateSession(tokens.Length);
                    var hidden = new float[(long)tokens.Length * width];
                    session.ForwardHidden(tokens, hidden, cancellationToken);
                    return Pool(hidden, tokens.Length, width, pooling);
                }, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _embedding.Release();
                Release(need);
            }
        }
        Metrics.Embedded(all.Count, all.Sum(t => t.Length));
        return (vectors, all.Sum(t => t.Length));
    }

    /// <summary>
    /// An echoed request: the prompt scored when log-probabilities are asked (its own pass beside the batch, one at a
    /// time, its KV cache held against the budget, as an embedding's), then the completion generated as any other
    /// (none with <c>max_tokens</c> 0); the outcome carries the prompt's text and log-probabilities. Streamed, a scored
    /// prompt is the first piece, its log-probabilities handed out just before it.
    /// </summary>
    private async Task<CompletionOutcome> EchoAsync(CompletionRequest request, int[] prompt, SamplingOptions sampling, Action<string>? onText,
        CancellationToken cancellationToken, Action<IReadOnlyList<CompletionLogProb>>? onLogProbs)
    {
        IReadOnlyList<CompletionLogProb>? scored = null;
        if (sampling.LogProbs is int top)
        {
            long need = KvBytes(prompt.Length);
            if (KvBudgetBytes is { } budget && need > budget)
                throw new InvalidOptionException("prompt", $"its {prompt.Length} tokens need {need} bytes of KV cache to be scored; the budget is {budget}");
            await ReserveAsync(need, cancellationToken).ConfigureAwait(false);
            await _embedding.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                scored = await Task.Run(() => ScorePrompt(prompt, top, cancellationToken), cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _embedding.Release();
                Release(need);
            }
        }
        string text = request.Messages is null && request.PromptIds is null ? request.Prompt : _model.Tokenizer.Decode(prompt);
        // Streamed and scored: the prompt goes out first as a piece of its own, with its log-probabilities.
        if (onText is not null && scored is not null)
        {
            onLogProbs?.Invoke(scored);
            onText(text);
        }
        var outcome = request.MaxTokens == 0
            ? new CompletionOutcome("", prompt.Length, 0, "length") { Stop = StopReason.Length }
            : await CompleteAsync(request with { Echo = false, PromptIds = prompt }, onText, cancellationToken, onLogProbs).ConfigureAwait(false);
        return outcome with { PromptText = text, PromptLogProbs = scored };
    }

    /// <summary>Each prompt token's log-probability after the ones before it, with <paramref name="top"/> alternatives
    /// (the first: NaN, none): the prompt run in windows of 32 positions, every position's logits read.</summary>
    private CompletionLogProb[] ScorePrompt(int[] prompt, int top, CancellationToken cancellationToken)
    {
        int vocab = _model.Config.VocabSize;
        const int Window = 32;
        var session = _model.Model.CreateSession(prompt.Length);
        var logits = new float[Window * vocab];
        var scored = new CompletionLogProb[prompt.Length];
        scored[0] = new(_model.Tokenizer.Decode([prompt[0]]), double.NaN, []);
        for (int start = 0; start < prompt.Length; start += Window)
        {
            int n = Math.Min(Window, prompt.Length - start);
            session.Forward(prompt.AsSpan(start, n), logits.AsSpan(0, n * vocab), cancellationToken);
            for (int j = 0; j < n && start + j + 1 < prompt.Length; j++)
                scored[start + j + 1] = Named(TokenLogProb.From(logits.AsSpan(j * vocab, vocab), prompt[start + j + 1], top));
        }
        return scored;
    }

    /// <summary>A token's log-probability with its alternatives, each as the tokenizer's text of that one id.</summary>
    private CompletionLogProb Named(TokenLogProb t)
    {
        string Piece(int id) => _model.Tokenizer.Decode([id]);
        return new(Piece(t.Id), t.LogProb, [.. t.Top.Select(a => (Piece(a.Id), a.LogProb))]);
    }

    /// <summary>The pooled, unit-length vector of <paramref name="positions"/> rows of hidden states (a zero vector stays zero).</summary>
    internal static float[] Pool(ReadOnlySpan<float> hidden, int positions, int width, EmbeddingPooling pooling)
    {
        var vector = new double[width];
        int first = pooling == EmbeddingPooling.Last ? positions - 1 : 0;
        for (int p = first; p < positions; p++)
            for (int d = 0; d < width; d++) vector[d] += hidden[p * width + d];
        double norm = Math.Sqrt(vector.Sum(v => v * v));
        return [.. vector.Select(v => norm > 0 ? (float)(v / norm) : 0f)];
    }

    /// <summary>Waits until <paramref name="bytes"/> of KV cache fit the budget, then holds them, and lets the factory
    /// keep finished sequences' caches only in the budget's room left (<see cref="TokenFactory.TrimPool"/>), so the
    /// caches in use and the caches kept never hold more than the budget together.</summary>
    private Task ReserveAsync(long bytes, CancellationToken cancellationToken) => ReserveAsync(bytes, null, 0, cancellationToken);

    /// <summary>
    /// <see cref="ReserveAsync(long, CancellationToken)"/> for a completion of <paramref name="prompt"/>: under a budget,
    /// when the factory keeps a shared beginning of the prompt (a system prompt other requests ran), the request is
    /// counted for the positions after it, and the beginning's bytes once for all the requests reading it (while any
    /// does). Returns the bytes to release and the beginning pinned for the request (null: none), which
    /// <see cref="Release(long, KvPrefix?)"/> unpins.
    /// </summary>
    private async Task<(long Bytes, KvPrefix? Prefix)> ReserveAsync(long bytes, int[]? prompt, int maxTokens, CancellationToken cancellationToken)
    {
        int capacity = prompt is null ? 0 : GenerationSequence.Capacity(_model.Model, prompt.Length, maxTokens);
        long room;
        (long, KvPrefix?) held;
        while (true)
        {
            Task freed;
            lock (_budgetLock)
            {
                if (KvBudgetBytes is not { } budget)
                {
                    _reserved += bytes;
                    return (bytes, null);
                }
                bool first = false;
                var prefix = prompt is null ? null : _factory.PinPrefix(prompt, capacity, out first);
                long own = prefix is null ? bytes : KvBytes(capacity - prefix.Positions), shared = first ? prefix!.Bytes : 0;
                if (prefix is not null && own + shared > bytes)
                {
                    // Counting the shared beginning (a long one, of which this prompt shares a part) would cost more
                    // than the whole request: counted whole (it is counted for less if its session reads it, Refund).
                    _factory.UnpinPrefix(prefix);
                    (prefix, own, shared) = (null, bytes, 0);
                }
                if (_reserved + own + shared <= budget)
                {
                    _reserved += own + shared;
                    room = budget - _reserved;
                    held = (own, prefix);
                    break;
                }
                if (prefix is not null) _factory.UnpinPrefix(prefix);
                freed = _budgetFreed.Task;
            }
            await freed.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        _factory.TrimPool(room);
        return held;
    }

    /// <summary>Whether prompts reuse finished requests' kept caches (<see cref="TokenFactory.PromptCache"/>).</summary>
    public bool PromptCache => _factory.PromptCache;

    /// <summary>Prompt tokens taken from kept caches instead of run, over all requests so far.</summary>
    public long CachedPromptTokens => _factory.CachedPromptTokens;

    /// <summary>KV-cache bytes finished requests' sessions keep for the next ones (counted in the budget's room).</summary>
    public long PooledKvBytes => _factory.PooledKvBytes;

    /// <summary>Shared prompt beginnings kept (each held once for all the requests that read it) and their bytes.</summary>
    public (int Count, long Bytes) SharedPrefixes => _factory.SharedPrefixes;

    /// <summary>What an admitted completion holds of the budget: bytes, and the shared beginning counted for it.</summary>
    private sealed class Reservation
    {
        public long Bytes;
        public KvPrefix? Prefix;
    }

    /// <summary>A request admitted whole whose session has come to read a shared beginning (one made as it started, or
    /// from its own cache for a later request): from now on it is counted for the positions after it, and the beginning
    /// once with every other request reading it; requests waiting for room look again. (When no other request counted
    /// the beginning, its bytes move from the kept caches' count to the requests': what is reserved may grow, what is
    /// reserved and kept together shrinks by the positions saved.)</summary>
    private void Refund(Reservation reservation, KvPrefix prefix)
    {
        TaskCompletionSource freed;
        lock (_budgetLock)
        {
            if (reservation.Prefix is not null) return;
            long saved = KvBytes(prefix.Positions);
            bool first = _factory.PinShared(prefix);
            reservation.Prefix = prefix;
            reservation.Bytes -= saved;
            _reserved -= saved - (first ? prefix.Bytes : 0);
            freed = NextFreed();
        }
        freed.TrySetResult();
    }

    /// <summary>The signal of room freed, replaced by a fresh one for the next wait (under the budget's lock); the caller
    /// sets it once out of the lock.</summary>
    private TaskCompletionSource NextFreed()
    {
        var freed = _budgetFreed;
        _budgetFreed = new(TaskCreationOptions.RunContinuationsAsynchronously);
        return freed;
    }

    private void Release(Reservation reservation) => Release(reservation.Bytes, reservation.Prefix);

    private void Release(long bytes, KvPrefix? prefix = null)
    {
        TaskCompletionSource freed;
        lock (_budgetLock)
        {
            _reserved -= bytes;
            // The last request reading a shared beginning releases it too (it stays kept, counted in the pool's bytes).
            if (prefix is not null && _factory.UnpinPrefix(prefix)) _reserved -= prefix.Bytes;
            freed = NextFreed();
        }
        freed.TrySetResult();
    }

    /// <summary>
    /// Runs a few short generations through the batch before the first request (as llama.cpp's server warms up with an
    /// empty run): one alone, then up to eight together, so the code of a one-sequence step, of several sequences'
    /// prompts in one pass and of a several-sequence step is compiled and the first requests do not wait for it (the
    /// first completion after a start took 0.40 s against 0.11 for the next ones on the SmolLM2-shaped MXFP4 model).
    /// The sessions it used are dropped. Returns how long it took.
    /// </summary>
    public TimeSpan WarmUp(CancellationToken cancellationToken = default)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        // A prompt and two new tokens within the context (none at all in a context of one position).
        int room = Math.Min(ContextLength, _model.Config.MaxSeqLen);
        if (room < 2) return clock.Elapsed;
        var tokenizer = _model.Tokenizer;
        int[] prompt = tokenizer.Encode("Once upon a time", addBos: tokenizer.BosId is not null);
        if (prompt.Length == 0) prompt = [0];
        prompt = prompt[..Math.Min(prompt.Length, Math.Max(1, room - 2))];
        int newTokens = Math.Min(2, room - prompt.Length);
        var greedy = new SamplingOptions();
        _factory.SubmitAsync(prompt, newTokens, greedy, cancellationToken: cancellationToken).GetAwaiter().GetResult();
        Task.WhenAll(Enumerable.Range(0, Math.Min(MaxBatch, 8)).Select(_ => _factory.SubmitAsync(prompt, newTokens, greedy, cancellationToken: cancellationToken)))
            .GetAwaiter().GetResult();
        _factory.TrimPool(0);
        // The chat template's renderer, compiled before the first chat request needs it (a template may refuse a lone
        // user message: what is compiled by then is enough).
        try { _template.PromptTokens(tokenizer, [("user", "Hi")]); }
        catch (InvalidOptionException) { }
        // Each token's text, which a forced tool call's constrained decoding reads (0.46 s for Qwen2.5's 151,665 tokens).
        if (_template.ToolForm is not null) TokenPieces.For(tokenizer);
        return clock.Elapsed;
    }

    public void Dispose()
    {
        _factory.Dispose();
        _model.Dispose();
    }
}
