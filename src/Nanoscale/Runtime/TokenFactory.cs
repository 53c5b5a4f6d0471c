using System.Collections.Concurrent;
using System.Diagnostics;

namespace Nanoscale.Runtime;

/// <summary>
/// Continuous batching (the token factory of Liguori's paper): many generation streams share one pass over the
/// weights per step. Requests join at token boundaries — their prompt is run once (a window), then they take part in
/// every following step — and leave when they finish (end token, stop string, their <c>maxNewTokens</c>, the context)
/// or are cancelled; each step runs every active sequence's next token through
/// <see cref="InferenceSession.StepMany"/>. Each sequence keeps its own KV cache and its own sampler, so a request's
/// tokens are those <see cref="Generation.Generate(LlamaModel, ITokenizer, int[], int, SamplingOptions, Action{string}?, CancellationToken)"/>
/// gives alone, up to float summation order. One worker thread runs the loop; the products inside use the model's
/// threads.
/// </summary>
public sealed class TokenFactory : IDisposable
{
    private readonly LlamaModel _model;
    private readonly ITokenizer _tokenizer;
    private readonly IReadOnlyList<int> _endTokens;
    private readonly ConcurrentQueue<Sequence> _pending = new();
    private readonly SemaphoreSlim _signal = new(0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _worker;
    private int _active;

    /// <param name="model">The model every request runs on.</param>
    /// <param name="tokenizer">Decodes the streamed text.</param>
    /// <param name="maxBatch">Sequences in one step at most; more wait for a place.</param>
    /// <param name="endTokens">Token ids that end every sequence besides the tokenizer's EOS/BOS (generation_config.json's).</param>
    public TokenFactory(LlamaModel model, ITokenizer tokenizer, int maxBatch = 8, IReadOnlyList<int>? endTokens = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        _model = model;
        _tokenizer = tokenizer;
        MaxBatch = maxBatch;
        _endTokens = endTokens ?? [];
        _worker = new Thread(Run) { IsBackground = true, Name = "nanoscale token factory" };
        _worker.Start();
    }

    public int MaxBatch { get; }

    /// <summary>Sequences in the running batch now.</summary>
    public int Active => Volatile.Read(ref _active);

    /// <summary>Requests waiting for a place in the batch.</summary>
    public int Waiting => _pending.Count;

    /// <summary>Largest batch a step has run (for tests and the benchmark).</summary>
    public int LargestBatch { get; private set; }

    /// <summary>Steps run so far.</summary>
    public long Steps { get; private set; }

    /// <summary>Generates from <paramref name="promptTokens"/> as part of the running batch.</summary>
    public Task<GenerationResult> SubmitAsync(int[] promptTokens, int maxNewTokens, SamplingOptions sampling,
        Action<string>? onText = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(promptTokens);
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        sampling = (sampling ?? new SamplingOptions()).Validate();
        if (promptTokens.Length == 0) throw new Tensors.InvalidOptionException("prompt", "it is empty and the tokenizer has no BOS token to start from");
        if (promptTokens.Length >= _model.Config.MaxSeqLen && maxNewTokens > 0)
            throw new Tensors.InvalidOptionException("prompt", $"it has {promptTokens.Length} tokens; the model holds {_model.Config.MaxSeqLen}");
        var sequence = new Sequence(promptTokens, maxNewTokens, sampling, onText, cancellationToken);
        _pending.Enqueue(sequence);
        _signal.Release();
        return sequence.Completion.Task;
    }

    private sealed class Sequence(int[] prompt, int maxNewTokens, SamplingOptions sampling, Action<string>? onText, CancellationToken cancellationToken)
    {
        public int[] Prompt { get; } = prompt;
        public int MaxNewTokens { get; } = maxNewTokens;
        public SamplingOptions Sampling { get; } = sampling;
        public Action<string>? OnText { get; } = onText;
        public CancellationToken Cancellation { get; } = cancellationToken;
        public TaskCompletionSource<GenerationResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public InferenceSession Session = null!;
        public Generation.Sampler Sampler = null!;
        public Generation.TextStream Text = null!;
        public HashSet<int> End = null!;
        public List<int> Tokens = null!;
        public float[] Last = null!;
        public double PromptSeconds;
        public Stopwatch Clock = null!;
    }

    private void Run()
    {
        var active = new List<Sequence>();
        int vocab = _model.Config.VocabSize;
        while (!_stop.IsCancellationRequested)
        {
            if (active.Count == 0)
            {
                try { _signal.Wait(_stop.Token); }
                catch (OperationCanceledException) { break; }
                _signal.Release(); // the request stays counted for the admission below
            }
            // Join: prompts of new requests, up to the batch size, each run as one window.
            while (active.Count < MaxBatch && _pending.TryDequeue(out var next))
            {
                _signal.Wait(0);
                if (Start(next, vocab)) active.Add(next);
            }
            Volatile.Write(ref _active, active.Count);

            // Choose each sequence's next token; those that finish leave, the rest step together.
            var stepping = new List<Sequence>(active.Count);
            var tokens = new List<int>(active.Count);
            foreach (var sequence in active)
            {
                if (sequence.Cancellation.IsCancellationRequested)
                {
                    sequence.Completion.TrySetCanceled(sequence.Cancellation);
                    continue;
                }
                try
                {
                    if (Advance(sequence) is int token)
                    {
                        stepping.Add(sequence);
                        tokens.Add(token);
                    }
                }
                catch (Exception e)
                {
                    sequence.Completion.TrySetException(e);
                }
            }
            active = stepping;
            Volatile.Write(ref _active, active.Count);
            if (active.Count == 0) continue;
            LargestBatch = Math.Max(LargestBatch, active.Count);
            var logits = new float[active.Count * vocab];
            try
            {
                InferenceSession.StepMany([.. active.Select(a => a.Session)], tokens.ToArray(), logits);
                Steps++;
            }
            catch (Exception e)
            {
                foreach (var sequence in active) sequence.Completion.TrySetException(e);
                active.Clear();
                continue;
            }
            for (int i = 0; i < active.Count; i++) logits.AsSpan(i * vocab, vocab).CopyTo(active[i].Last);
        }
        foreach (var sequence in active) sequence.Completion.TrySetCanceled();
        while (_pending.TryDequeue(out var left)) left.Completion.TrySetCanceled();
    }

    /// <summary>Runs a new request's prompt; false when it finished or failed there.</summary>
    private bool Start(Sequence s, int vocab)
    {
        try
        {
            s.Cancellation.ThrowIfCancellationRequested();
            s.Clock = Stopwatch.StartNew();
            int capacity = Math.Min(_model.Config.MaxSeqLen, s.Prompt.Length + s.MaxNewTokens);
            s.Session = _model.CreateSession(Math.Max(1, capacity));
            s.Last = LastLogits(s.Session, s.Prompt, s.Cancellation);
            s.PromptSeconds = s.Clock.Elapsed.TotalSeconds;
            s.Sampler = new Generation.Sampler(s.Sampling, vocab);
            s.Text = new Generation.TextStream(_tokenizer, s.Prompt, s.Sampling.StopStrings, s.OnText);
            s.End = [.. s.Sampling.StopTokenIds, .. _endTokens];
            if (_tokenizer.EosId is int eos) s.End.Add(eos);
            if (_tokenizer.BosId is int bos) s.End.Add(bos);
            s.Tokens = [.. s.Prompt];
            if (s.MaxNewTokens == 0) return Finish(s, StopReason.Length);
            return true;
        }
        catch (OperationCanceledException) when (s.Cancellation.IsCancellationRequested)
        {
            s.Completion.TrySetCanceled(s.Cancellation);
            return false;
        }
        catch (Exception e)
        {
            s.Completion.TrySetException(e);
            return false;
        }
    }

    /// <summary>Runs <paramref name="prompt"/> and returns the logits after its last token only (the output head on one
    /// row, not on every prompt position).</summary>
    internal static float[] LastLogits(InferenceSession session, int[] prompt, CancellationToken cancellationToken)
    {
        var config = session.Model.Config;
        var hidden = new float[prompt.Length * config.Dim];
        session.ForwardHidden(prompt, hidden, cancellationToken);
        var logits = new float[config.VocabSize];
        session.ComputeLogits(hidden.AsSpan((prompt.Length - 1) * config.Dim, config.Dim), logits);
        return logits;
    }

    /// <summary>Samples the sequence's next token from its last logits, as <see cref="Generation"/> does; returns the
    /// token to step with, or null when the sequence has finished (and is completed).</summary>
    private int? Advance(Sequence s)
    {
        int next = s.Sampler.Next(s.Last, s.Tokens);
        if (s.End.Contains(next)) { Finish(s, StopReason.EndToken); return null; }
        s.Tokens.Add(next);
        if (s.Text.Add(s.Tokens)) { Finish(s, StopReason.StopString); return null; }
        if (s.Tokens.Count - s.Prompt.Length == s.MaxNewTokens) { Finish(s, StopReason.Length); return null; }
        if (s.Session.Length >= s.Session.Capacity) { Finish(s, StopReason.Context); return null; }
        return next;
    }

    /// <summary>Completes the sequence's task; always false (it does not continue).</summary>
    private static bool Finish(Sequence s, StopReason stop)
    {
        s.Text.Finish();
        double total = s.Clock.Elapsed.TotalSeconds;
        s.Completion.TrySetResult(new GenerationResult([.. s.Tokens], s.Prompt.Length, s.Text.FullText, stop, s.PromptSeconds, total - s.PromptSeconds));
        return false;
    }

    public void Dispose()
    {
        _stop.Cancel();
        _signal.Release();
        _worker.Join(TimeSpan.FromSeconds(30));
        _stop.Dispose();
        _signal.Dispose();
    }
}
