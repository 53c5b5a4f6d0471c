using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>One request to <see cref="CompletionService"/>: a prompt (or chat messages) and how to continue it.</summary>
public sealed record CompletionRequest
{
    /// <summary>The text to continue; ignored when <see cref="Messages"/> is set.</summary>
    public string Prompt { get; init; } = "";

    /// <summary>Chat messages (role, content), rendered with the model's chat template.</summary>
    public IReadOnlyList<(string Role, string Content)>? Messages { get; init; }

    public int MaxTokens { get; init; } = 16;

    public SamplingOptions Sampling { get; init; } = new();
}

/// <summary>What a request produced: the new text, token counts, and why it stopped (OpenAI's words: <c>stop</c>
/// or <c>length</c>).</summary>
public sealed record CompletionOutcome(string Text, int PromptTokens, int CompletionTokens, string FinishReason);

/// <summary>The service has as many requests waiting as it accepts (<see cref="CompletionService.MaxWaiting"/>).</summary>
public sealed class ServiceBusyException(string message) : NanoscaleException(message);

/// <summary>
/// Generation as a service, for <c>nanoscale serve</c>: one loaded model, requests admitted into a bounded queue and run
/// one at a time (each request's products use every thread; batching several sequences into one pass over the weights
/// is not built yet), cancelled when their caller goes away. Limits are checked before a request waits: a prompt that
/// does not fit the context, or more new tokens than <see cref="MaxTokensLimit"/>, is an
/// <see cref="InvalidOptionException"/>; a full queue is a <see cref="ServiceBusyException"/>.
/// </summary>
public sealed class CompletionService : IDisposable
{
    private readonly LoadedModel _model;
    private readonly ChatTemplate _template;
    private readonly SemaphoreSlim _running = new(1, 1);
    private int _waiting;

    public CompletionService(LoadedModel model, string modelName, int maxWaiting = 16, int? contextLength = null)
    {
        _model = model;
        ModelName = modelName;
        MaxWaiting = maxWaiting;
        ContextLength = Math.Min(contextLength ?? model.Config.MaxSeqLen, model.Config.MaxSeqLen);
        var folder = Directory.Exists(model.Path) ? model.Path : Path.GetDirectoryName(Path.GetFullPath(model.Path));
        _template = ChatTemplate.Find(folder);
    }

    public string ModelName { get; }

    /// <summary>Requests that may wait for the model beyond the one running.</summary>
    public int MaxWaiting { get; }

    /// <summary>Prompt plus new tokens of one request.</summary>
    public int ContextLength { get; }

    public int MaxTokensLimit => ContextLength - 1;

    /// <summary>The chat template in use: <c>llama3</c>, <c>chatml</c> or <c>plain</c>.</summary>
    public string ChatTemplateName => _template.Kind.ToString().ToLowerInvariant();

    /// <summary>Prompt token ids of a request (its chat rendered when it has messages).</summary>
    public int[] PromptTokens(CompletionRequest request)
    {
        var tokenizer = _model.Tokenizer;
        if (request.Messages is { } messages)
        {
            if (messages.Count == 0) throw new InvalidOptionException("messages", "at least one message is needed");
            // Templates that spell out BOS (Llama-3's <|begin_of_text|>) carry it in the text.
            return tokenizer.Encode(_template.Render(messages), addBos: _template.Kind == ChatTemplate.Family.Plain && tokenizer.BosId is not null);
        }
        return tokenizer.Encode(request.Prompt, addBos: tokenizer.BosId is not null);
    }

    /// <summary>Runs <paramref name="request"/> when the model is free; <paramref name="onText"/> gets the text as it comes.</summary>
    /// <exception cref="InvalidOptionException">max_tokens out of range, or the prompt does not leave room in the context.</exception>
    /// <exception cref="ServiceBusyException">The queue is full.</exception>
    public async Task<CompletionOutcome> CompleteAsync(CompletionRequest request, Action<string>? onText = null, CancellationToken cancellationToken = default)
    {
        if (request.MaxTokens < 1 || request.MaxTokens > MaxTokensLimit)
            throw new InvalidOptionException("max_tokens", $"{request.MaxTokens} is outside 1..{MaxTokensLimit}");
        var sampling = request.Sampling.Validate();
        var prompt = PromptTokens(request);
        if (prompt.Length == 0) throw new InvalidOptionException("prompt", "it is empty and the tokenizer has no BOS token to start from");
        if (prompt.Length >= ContextLength)
            throw new InvalidOptionException("prompt", $"it has {prompt.Length} tokens; the context holds {ContextLength} (prompt and new tokens together)");
        int maxTokens = Math.Min(request.MaxTokens, ContextLength - prompt.Length);
        // A chat turn ends at the template's end-of-turn token (Llama-3's <|eot_id|> is not the tokenizer's EOS).
        if (request.Messages is not null && _template.EndOfTurn is { } end && _model.Tokenizer.Encode(end, addBos: false) is [var endId])
            sampling = sampling with { StopTokenIds = [.. sampling.StopTokenIds, endId] };

        if (Interlocked.Increment(ref _waiting) > MaxWaiting + 1)
        {
            Interlocked.Decrement(ref _waiting);
            throw new ServiceBusyException($"{MaxWaiting} requests are already waiting for the model; try again later");
        }
        try
        {
            await _running.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                return await Task.Run(() =>
                {
                    // The completion is exactly the text handed out as it came (the prompt not repeated; a stop string
                    // and what follows it left out).
                    var text = new System.Text.StringBuilder();
                    var result = _model.Generate(prompt, maxTokens, sampling, piece =>
                    {
                        text.Append(piece);
                        onText?.Invoke(piece);
                    }, cancellationToken);
                    return new CompletionOutcome(text.ToString(), result.PromptTokens, result.GeneratedTokens,
                        result.Stop == StopReason.Length || result.Stop == StopReason.Context ? "length" : "stop");
                }, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _running.Release();
            }
        }
        finally
        {
            Interlocked.Decrement(ref _waiting);
        }
    }

    public void Dispose()
    {
        _running.Dispose();
        _model.Dispose();
    }
}
