using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// A conversation with a model (<see cref="LoadedModel.StartChat"/>): each <see cref="Reply"/> renders the whole
/// conversation with the chat template, as <c>serve</c> does, but runs only the tokens that differ from what its key/value
/// cache already holds from the turns before (the common beginning of the new prompt and the cached tokens: usually all
/// but the new message, and the template's markers around it). The answer equals what a fresh prompt would give up to
/// float summation order (a position computed in the prompt's batch or alone).
/// </summary>
public sealed class ChatSession : IDisposable
{
    private readonly LoadedModel _model;
    private readonly ChatTemplate _template;
    private readonly List<ChatMessage> _opening;
    private readonly List<ChatMessage> _history;
    private InferenceSession? _session;
    private int[] _cached = []; // the tokens whose keys and values the session holds, in order

    internal ChatSession(LoadedModel model, ChatTemplate template, string? system)
    {
        _model = model;
        _template = template;
        _opening = system is null ? [] : [new ChatMessage("system", system)];
        _history = [.. _opening];
    }

    /// <summary>The conversation so far (the system message, then user and assistant turns).</summary>
    public IReadOnlyList<ChatMessage> History => _history;

    /// <summary>Prompt tokens the last reply took from the cache instead of running them.</summary>
    public int ReusedTokens { get; private set; }

    /// <summary>The assistant's answer to <paramref name="message"/>, added to the conversation with it.</summary>
    /// <exception cref="InvalidOptionException">The conversation no longer fits the model's context, or the template refused it.</exception>
    public GenerationResult Reply(string message, int maxNewTokens, SamplingOptions sampling, Action<string>? onText = null,
        CancellationToken cancellationToken = default)
    {
        var result = Answer([.. _history, new("user", message)], maxNewTokens, sampling, onText, " (start over)", cancellationToken);
        _history.Add(new ChatMessage("user", message));
        _history.Add(new ChatMessage("assistant", result.NewText));
        return result;
    }

    /// <summary>The assistant's answer to <paramref name="conversation"/>, from the cache's common beginning with it on
    /// (<see cref="Reply"/>; <see cref="LoadedModel.Chat"/> with a fresh session).</summary>
    internal GenerationResult Answer(IReadOnlyList<ChatMessage> conversation, int maxNewTokens, SamplingOptions sampling, Action<string>? onText,
        string advice, CancellationToken cancellationToken, ITokenConstraint? constraint = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxNewTokens, 1);
        var prompt = _template.PromptTokens(_model.Tokenizer, conversation);
        int limit = _model.Config.MaxSeqLen;
        if (prompt.Length >= limit)
            throw new InvalidOptionException("messages", $"the conversation is {prompt.Length} tokens; the model's context holds {limit}{advice}");
        sampling = _template.EndingTurns(_model.Tokenizer, sampling with { StopTokenIds = [.. sampling.StopTokenIds, .. _model.EndTokens] }).Validate();
        // A reply that begins inside the reasoning block the template opened is held to its shape from the block's close.
        if (constraint is not null) constraint = AfterText.ForReply(constraint, _template.OpensReasoning(conversation), _model.Tokenizer, ChatTemplate.ThinkClose);
        _session ??= _model.Model.CreateSession(limit);
        // The common beginning of the new prompt and what the cache holds; at least one prompt token runs (for logits).
        int reused = 0;
        while (reused < _cached.Length && reused < prompt.Length - 1 && _cached[reused] == prompt[reused]) reused++;
        _session.Truncate(Math.Min(reused, _session.Length));
        reused = _session.Length;
        var sequence = new GenerationSequence(_model.Model, _model.Tokenizer, prompt, Math.Min(maxNewTokens, limit - prompt.Length), sampling, [],
            onText, cancellationToken, session: _session, reused: reused, constraint: constraint);
        GenerationResult result;
        try { result = Generation.Run(sequence, cancellationToken); }
        catch
        {
            // A cancelled or failed turn leaves nothing behind: the next one starts from a fresh cache.
            _session.Reset();
            _cached = [];
            throw;
        }
        ReusedTokens = reused;
        _cached = result.Tokens[.._session.Length];
        return result;
    }

    /// <summary>Forgets the conversation (the system message stays).</summary>
    public void Reset()
    {
        _history.Clear();
        _history.AddRange(_opening);
        _session?.Reset();
        _cached = [];
    }

    public void Dispose() => _session = null;
}
