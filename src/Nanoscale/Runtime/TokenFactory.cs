using System.Collections.Concurrent;

namespace Nanoscale.Runtime;

/// <summary>
/// Continuous batching (the token factory of Liguori's paper): many generation streams share one pass over the
/// weights per step. Requests join at token boundaries — their prompt runs a chunk of <see cref="PrefillChunk"/> tokens
/// between steps (so a long prompt does not stall the running streams), then they take part in every following step —
/// and leave when they finish (end token, stop string, their <c>maxNewTokens</c>, the context)
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

    /// <summary>Generates from <paramref name="promptTokens"/> as part of the running batch. With
    /// <see cref="SamplingOptions.LogProbs"/>, <paramref name="onLogProbs"/> gets, just before each piece of text, the
    /// log-probabilities of the tokens generated since the previous piece.</summary>
    public Task<GenerationResult> SubmitAsync(int[] promptTokens, int maxNewTokens, SamplingOptions sampling,
        Action<string>? onText = null, CancellationToken cancellationToken = default, Action<IReadOnlyList<TokenLogProb>>? onLogProbs = null)
    {
        ArgumentNullException.ThrowIfNull(promptTokens);
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        sampling = (sampling ?? new SamplingOptions()).Validate();
        GenerationSequence.CheckPrompt(_model, promptTokens, maxNewTokens);
        var sequence = new Sequence(promptTokens, maxNewTokens, sampling, onText, cancellationToken) { OnLogProbs = onLogProbs };
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
        public Action<IReadOnlyList<TokenLogProb>>? OnLogProbs { get; init; }
        public CancellationToken Cancellation { get; } = cancellationToken;
        public TaskCompletionSource<GenerationResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public GenerationSequence State = null!;
    }

    /// <summary>Prompt tokens run between two steps at most (a multiple of eight, so a prompt run in chunks gives the
    /// numbers of one window): a long joining prompt delays the running sequences by one chunk per step, not by all of it.</summary>
    internal const int PrefillChunk = 64;

    private void Run()
    {
        var active = new List<Sequence>();
        var prefilling = new List<Sequence>();
        int vocab = _model.Config.VocabSize;
        float[] logitsBuffer = [];
        while (!_stop.IsCancellationRequested)
        {
            if (active.Count == 0 && prefilling.Count == 0)
            {
                try { _signal.Wait(_stop.Token); }
                catch (OperationCanceledException) { break; }
                _signal.Release(); // the request stays counted for the admission below
            }
            // Join: new requests, up to the batch size; their prompts run a chunk at a time between steps.
            while (active.Count + prefilling.Count < MaxBatch && _pending.TryDequeue(out var next))
            {
                _signal.Wait(0);
                if (Start(next)) prefilling.Add(next);
            }
            if (prefilling.Count > 0 && Prefill(prefilling[0]) is var done && done != 0)
            {
                if (done > 0) active.Add(prefilling[0]);
                prefilling.RemoveAt(0);
            }
            Volatile.Write(ref _active, active.Count + prefilling.Count);

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
                    if (sequence.State.Advance() is int token)
                    {
                        stepping.Add(sequence);
                        tokens.Add(token);
                    }
                    else sequence.Completion.TrySetResult(sequence.State.Result());
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
            // One buffer for the factory's life (grown to the largest batch): a new one per step would be a large-object
            // allocation for a large vocabulary, and the collections it causes stall every stream.
            if (logitsBuffer.Length < active.Count * vocab) logitsBuffer = new float[MaxBatch * vocab];
            var logits = logitsBuffer.AsSpan(0, active.Count * vocab);
            try
            {
                InferenceSession.StepMany([.. active.Select(a => a.State.Session)], tokens.ToArray(), logits);
                Steps++;
            }
            catch (Exception e)
            {
                foreach (var sequence in active) sequence.Completion.TrySetException(e);
                active.Clear();
                continue;
            }
            for (int i = 0; i < active.Count; i++) logits.Slice(i * vocab, vocab).CopyTo(active[i].State.Last);
        }
        foreach (var sequence in active.Concat(prefilling)) sequence.Completion.TrySetCanceled();
        while (_pending.TryDequeue(out var left)) left.Completion.TrySetCanceled();
    }

    /// <summary>One chunk of a joining request's prompt: 1 when the prompt is done (the sequence joins the steps), 0
    /// while more remains, −1 when it failed or was cancelled (its completion says which).</summary>
    private static int Prefill(Sequence s) => Attempt(s, () =>
    {
        s.State.Prefill(PrefillChunk, s.Cancellation);
        return s.State.Prefilled ? 1 : 0;
    }, failed: -1);

    /// <summary>Sets up a new request (its prompt runs later, <see cref="Prefill"/>); false when it failed there.</summary>
    private bool Start(Sequence s) => Attempt(s, () =>
    {
        s.State = new GenerationSequence(_model, _tokenizer, s.Prompt, s.MaxNewTokens, s.Sampling, _endTokens, s.OnText, s.Cancellation, s.OnLogProbs,
            deferPrompt: true);
        return true;
    }, failed: false);

    /// <summary>Runs <paramref name="body"/> for a request unless it is cancelled; a cancellation or failure completes
    /// the request accordingly and gives <paramref name="failed"/>.</summary>
    private static T Attempt<T>(Sequence s, Func<T> body, T failed)
    {
        try
        {
            s.Cancellation.ThrowIfCancellationRequested();
            return body();
        }
        catch (OperationCanceledException) when (s.Cancellation.IsCancellationRequested)
        {
            s.Completion.TrySetCanceled(s.Cancellation);
            return failed;
        }
        catch (Exception e)
        {
            s.Completion.TrySetException(e);
            return failed;
        }
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
