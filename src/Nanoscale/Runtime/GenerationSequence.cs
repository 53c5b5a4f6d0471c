using System.Diagnostics;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>
/// One sequence being generated: its session (the prompt already run), sampler, streamed text and end tokens, and the
/// one definition of when a sequence stops (an end token, a stop string, its <c>maxNewTokens</c>, the session's
/// capacity). <see cref="Generation.Generate(LlamaModel, ITokenizer, int[], int, SamplingOptions, Action{string}?, CancellationToken, ITokenConstraint?)"/>
/// steps one alone; <see cref="TokenFactory"/> steps many together. Either way the caller feeds the token
/// <see cref="Advance()"/> returns and writes the next logits into <see cref="Last"/>.
/// </summary>
internal sealed class GenerationSequence
{
    private readonly int _maxNewTokens;
    private readonly Generation.Sampler _sampler;
    private readonly Generation.TextStream _text;
    private readonly HashSet<int> _end;
    private readonly List<int> _tokens;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private double _promptSeconds;
    private readonly int[] _prompt;
    private int _prefilled; // prompt tokens already run
    private readonly int? _logProbs;
    private readonly List<TokenLogProb>? _recorded;
    private int _reported; // recorded log-probabilities already handed out with a piece of text
    private readonly ITokenConstraint? _constraint; // which tokens may come next, when the text has a fixed shape
    private float[]? _masked;
    private TimeSpan _constraintTime; // spent in the constraint so far (checks, masks, accepting tokens)

    /// <summary>Time the constraint may take to choose one token (its check, the mask when the sampled token does not
    /// fit, accepting the token) before the sequence fails: a pathological pattern or grammar would otherwise hold every
    /// sequence of a token factory's batch at each step (their memory is capped separately).</summary>
    internal static TimeSpan MaxConstraintTimePerToken { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Time the constraint may take over the whole sequence.</summary>
    internal static TimeSpan MaxConstraintTime { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>The prompt limits every generation checks before any work.</summary>
    /// <exception cref="InvalidOptionException">An empty prompt, or one the model cannot hold with new tokens.</exception>
    public static void CheckPrompt(LlamaModel model, int[] prompt, int maxNewTokens)
    {
        if (prompt.Length == 0)
            throw new InvalidOptionException("prompt", "it is empty and the tokenizer has no BOS token to start from");
        if (prompt.Length >= model.Config.MaxSeqLen && maxNewTokens > 0)
            throw new InvalidOptionException("prompt", $"it has {prompt.Length} tokens; the model holds {model.Config.MaxSeqLen}");
    }

    /// <summary>Creates the session and runs the prompt (<paramref name="sampling"/> already validated); with
    /// <paramref name="deferPrompt"/> the prompt waits to be run in chunks (<see cref="NextPromptChunk"/>,
    /// <see cref="PromptChunkDone"/>: the token factory carries them in its steps). A given <c>session</c> (empty, of
    /// the model, with room for the sequence: the token factory's pooled one) is used instead of a new one.</summary>
    /// <remarks>With <see cref="SamplingOptions.LogProbs"/>, <c>onLogProbs</c> is called just before each piece of text with
    /// the log-probabilities of the tokens generated since the previous piece (streamed answers carry them).</remarks>
    public GenerationSequence(LlamaModel model, ITokenizer tokenizer, int[] prompt, int maxNewTokens, SamplingOptions sampling,
        IEnumerable<int> endTokens, Action<string>? onText, CancellationToken cancellationToken,
        Action<IReadOnlyList<TokenLogProb>>? onLogProbs = null, bool deferPrompt = false, InferenceSession? session = null, int reused = 0,
        ITokenConstraint? constraint = null)
    {
        _constraint = constraint;
        PromptLength = prompt.Length;
        _maxNewTokens = maxNewTokens;
        _prompt = prompt;
        int capacity = Capacity(model, prompt.Length, maxNewTokens);
        // A given session holds the prompt's first `reused` positions already (a conversation going on); only the rest runs.
        if ((uint)reused >= (uint)Math.Max(prompt.Length, 1) || (reused > 0 && session is null))
            throw new ArgumentOutOfRangeException(nameof(reused), reused, "the reused positions must leave at least one prompt token to run, in a given session");
        if (session is not null && (session.Model != model || session.Length != reused || session.Capacity < capacity))
            throw new ArgumentException($"a session of this model holding {reused} positions with room for {capacity} is needed", nameof(session));
        _prefilled = reused;
        Reused = reused;
        Session = session ?? model.CreateSession(capacity);
        Last = new float[model.Config.VocabSize];
        if (!deferPrompt) RunPrompt(cancellationToken);
        _sampler = new Generation.Sampler(sampling, model.Config.VocabSize);
        if (onText is not null && onLogProbs is not null && sampling.LogProbs is not null)
        {
            var text = onText;
            onText = piece =>
            {
                onLogProbs(_recorded!.GetRange(_reported, _recorded.Count - _reported));
                _reported = _recorded.Count;
                text(piece);
            };
        }
        _text = new Generation.TextStream(tokenizer, prompt, sampling.StopStrings, onText);
        _end = [.. sampling.StopTokenIds, .. endTokens];
        if (tokenizer.EosId is int eos) _end.Add(eos);
        if (tokenizer.BosId is int bos) _end.Add(bos);
        _tokens = [.. prompt];
        _logProbs = sampling.LogProbs;
        _recorded = sampling.LogProbs is null ? null : [];
    }

    /// <summary>Positions a sequence of <paramref name="promptLength"/> prompt and <paramref name="maxNewTokens"/> new
    /// tokens needs (at most the model's context).</summary>
    public static int Capacity(LlamaModel model, int promptLength, int maxNewTokens) =>
        (int)Math.Max(1, Math.Min(model.Config.MaxSeqLen, (long)promptLength + maxNewTokens));

    public InferenceSession Session { get; }

    public int PromptLength { get; }

    /// <summary>Prompt tokens the given session held already (not run for this sequence).</summary>
    public int Reused { get; }

    /// <summary>The tokens whose keys and values the session holds, one per position (the prompt run so far, then the
    /// generated tokens fed back): what a later prompt may begin with to reuse them. Read between passes.</summary>
    public int[] HeldTokens() => HeldTokens(Session.Length);

    /// <summary>The first <paramref name="count"/> of <see cref="HeldTokens()"/>.</summary>
    public int[] HeldTokens(int count) => [.. _tokens.GetRange(0, Math.Min(count, Session.Length))];

    /// <summary>The logits to choose the next token from (once the prompt has run).</summary>
    public float[] Last { get; }

    /// <summary>Whether the whole prompt has run (<see cref="Last"/> holds the logits after it).</summary>
    public bool Prefilled => _prefilled == _prompt.Length;

    /// <summary>Runs the whole prompt as one window (on the stored codes where that is a real kernel); then
    /// <see cref="Last"/> holds the logits at its last position. The token factory runs prompts in chunks inside its
    /// steps instead (<see cref="NextPromptChunk"/>, <see cref="PromptChunkDone"/>).</summary>
    private void RunPrompt(CancellationToken cancellationToken)
    {
        int count = _prompt.Length - _prefilled;
        if (count == 0) return;
        var config = Session.Model.Config;
        var hidden = new float[count * config.Dim];
        Session.ForwardPrompt(_prompt.AsSpan(_prefilled), hidden, cancellationToken);
        _prefilled = _prompt.Length;
        Session.ComputeLogits(hidden.AsSpan((count - 1) * config.Dim, config.Dim), Last);
        _promptSeconds = _clock.Elapsed.TotalSeconds;
    }

    /// <summary>The next prompt tokens to run, at most <paramref name="maxTokens"/>, without running them: for a step
    /// that carries them beside other sequences' tokens (<see cref="InferenceSession.ForwardMany"/>); report them with
    /// <see cref="PromptChunkDone"/>.</summary>
    public ReadOnlySpan<int> NextPromptChunk(int maxTokens) => _prompt.AsSpan(_prefilled, Math.Min(maxTokens, _prompt.Length - _prefilled));

    /// <summary>Records that the next <paramref name="count"/> prompt tokens ran in a shared step, whose logits at the
    /// chunk's last position are <paramref name="logits"/> (kept when the prompt is complete).</summary>
    public void PromptChunkDone(int count, ReadOnlySpan<float> logits)
    {
        if (count < 1 || count > _prompt.Length - _prefilled)
            throw new ArgumentOutOfRangeException(nameof(count), count, $"{_prompt.Length - _prefilled} prompt tokens are left");
        _prefilled += count;
        if (!Prefilled) return;
        logits.CopyTo(Last);
        _promptSeconds = _clock.Elapsed.TotalSeconds;
    }

    public StopReason Stop { get; private set; } = StopReason.Length;

    private int Generated => _tokens.Count - PromptLength;

    /// <summary>Chooses the next token; returns it when the sequence goes on (the caller feeds it and fills
    /// <see cref="Last"/>), or null when it has finished (<see cref="Stop"/> says why).</summary>
    public int? Advance() => Advance(Last);

    /// <summary><see cref="Advance()"/> from the last position's <paramref name="logits"/> held elsewhere (the token
    /// factory's step buffer, read before its next pass overwrites it, instead of copied into <see cref="Last"/>).</summary>
    public int? Advance(ReadOnlySpan<float> logits)
    {
        if (Generated >= _maxNewTokens) return Finish(StopReason.Length);
        int next = _sampler.Next(logits, _tokens, PromptLength);
        // A constrained sequence that drew a token that does not fit draws again with every such token masked out (the
        // sampled token is usually allowed, and checking one is cheap); with none allowed the text stays unfinished. An
        // end token does not fit before the shape is whole (one whose text a string could hold, as <|im_end|>, would
        // end the sequence inside it).
        // Where the text may end though it could go on (a regular expression's match), end tokens are allowed too.
        long started = Stopwatch.GetTimestamp();
        bool mayEnd = _constraint is { MayEnd: true };
        if (_constraint is not null && (_end.Contains(next) ? !mayEnd : !_constraint.Allows(next)))
        {
            var masked = (_masked ??= new float[logits.Length]).AsSpan(0, logits.Length);
            logits.CopyTo(masked);
            int allowed = _constraint.Mask(masked);
            foreach (int end in _end)
                if ((uint)end < (uint)masked.Length)
                {
                    bool open = !float.IsNegativeInfinity(masked[end]);
                    if (mayEnd && !open && !float.IsNegativeInfinity(logits[end]))
                    {
                        masked[end] = logits[end];
                        allowed++;
                    }
                    else if (!mayEnd && open)
                    {
                        masked[end] = float.NegativeInfinity;
                        allowed--;
                    }
                }
            if (allowed == 0) return Finish(StopReason.EndToken);
            next = _sampler.Next(masked, _tokens, PromptLength);
        }
        TimeSpan choosing = _constraint is null ? default : Stopwatch.GetElapsedTime(started);
        if (_end.Contains(next)) return Finish(StopReason.EndToken);
        if (_logProbs is { } top) _recorded!.Add(TokenLogProb.From(logits, next, top));
        _tokens.Add(next);
        if (_constraint is not null)
        {
            long accepting = Stopwatch.GetTimestamp();
            _constraint.Accept(next);
            Charge(choosing + Stopwatch.GetElapsedTime(accepting));
        }
        if (_text.Add(_tokens)) return Finish(StopReason.StopString);
        if (_constraint is { Complete: true }) return Finish(StopReason.EndToken);
        if (Generated == _maxNewTokens) return Finish(StopReason.Length);
        if (Session.Length >= Session.Capacity) return Finish(StopReason.Context);
        return next;
    }

    /// <summary>Counts the constraint's time for one token against <see cref="MaxConstraintTimePerToken"/> and
    /// <see cref="MaxConstraintTime"/>.</summary>
    /// <exception cref="InputException">One of them is passed.</exception>
    private void Charge(TimeSpan spent)
    {
        _constraintTime += spent;
        TimeSpan perToken = MaxConstraintTimePerToken, total = MaxConstraintTime;
        if (spent > perToken)
            throw new InputException($"the output constraint (pattern, grammar or schema) took {spent.TotalMilliseconds:0} ms to choose token " +
                $"{Generated} (at most {perToken.TotalMilliseconds:0} ms a token): too costly to follow; a simpler one is needed");
        if (_constraintTime > total)
            throw new InputException($"the output constraint (pattern, grammar or schema) took {_constraintTime.TotalSeconds:0.0} s over " +
                $"{Generated} tokens (at most {total.TotalSeconds:0} s a request): too costly to follow; a simpler one is needed");
    }

    private int? Finish(StopReason stop)
    {
        Stop = stop;
        return null;
    }

    /// <summary>The finished sequence (its last held-back text handed out).</summary>
    public GenerationResult Result()
    {
        _text.Finish();
        double total = _clock.Elapsed.TotalSeconds;
        return new GenerationResult([.. _tokens], PromptLength, _text.FullText, Stop, _promptSeconds, total - _promptSeconds) { LogProbs = _recorded, NewText = _text.NewText, CachedPromptTokens = Reused };
    }
}
