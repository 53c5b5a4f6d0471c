using System.Collections.Concurrent;

namespace Nanoscale.Runtime;

/// <summary>
/// Continuous batching (the token factory of Liguori's paper): many generation streams share one pass over the
/// weights per step. Requests join at token boundaries — their prompts ride in the following steps, up to
/// <see cref="PrefillChunk"/> prompt tokens per step, <see cref="IdlePrefillChunk"/> while none is generating (so a long
/// prompt does not stall the running streams, and a prompt
/// costs no pass of its own), then they take part in every following step — and leave when they finish (end token,
/// stop string, their <c>maxNewTokens</c>, the context) or are cancelled; each step runs the prompt chunks and every
/// active sequence's next token through one <see cref="InferenceSession.ForwardMany"/>. Each sequence keeps its own KV cache and its own sampler, so a request's
/// tokens are those <see cref="Generation.Generate(LlamaModel, ITokenizer, int[], int, SamplingOptions, Action{string}?, CancellationToken, ITokenConstraint?)"/>
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
    private readonly SessionPool _pool;
    private int _active;

    /// <param name="model">The model every request runs on.</param>
    /// <param name="tokenizer">Decodes the streamed text.</param>
    /// <param name="maxBatch">Sequences in one step at most; more wait for a place.</param>
    /// <param name="endTokens">Token ids that end every sequence besides the tokenizer's EOS/BOS (generation_config.json's).</param>
    /// <param name="promptCache">Whether a request whose prompt begins as a finished sequence's tokens did (a chat's
    /// history, a shared system prompt) takes that sequence's kept cache and runs only the rest of its prompt
    /// (<see cref="PromptCache"/>).</param>
    public TokenFactory(LlamaModel model, ITokenizer tokenizer, int maxBatch = 8, IReadOnlyList<int>? endTokens = null, bool promptCache = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        _model = model;
        _tokenizer = tokenizer;
        MaxBatch = maxBatch;
        PromptCache = promptCache;
        _endTokens = endTokens ?? [];
        _pool = new SessionPool(model, maxBatch);
        _worker = new Thread(Run) { IsBackground = true, Name = "nanoscale token factory" };
        _worker.Start();
    }

    public int MaxBatch { get; }

    /// <summary>Prompt caching: finished sequences' kept caches remember their tokens, and a new request takes the one
    /// holding the longest beginning of its prompt, keeps those positions and runs the rest (the answer is what a fresh
    /// prompt gives up to float summation order: positions computed in another pass). Off: every prompt runs whole.</summary>
    public bool PromptCache { get; }

    /// <summary>Prompt tokens taken from kept caches instead of run, over all requests so far.</summary>
    public long CachedPromptTokens => Interlocked.Read(ref _cachedPromptTokens);

    private long _cachedPromptTokens;

    /// <summary>Sequences in the running batch now.</summary>
    public int Active => Volatile.Read(ref _active);

    /// <summary>Requests waiting for a place in the batch.</summary>
    public int Waiting => _pending.Count;

    /// <summary>Largest batch a step has run (for tests and the benchmark).</summary>
    public int LargestBatch { get; private set; }

    /// <summary>Steps run so far.</summary>
    public long Steps { get; private set; }

    /// <summary>Key/value bytes held by finished sequences' sessions kept for the next requests (at most
    /// <see cref="MaxBatch"/> sessions; a request takes one whose cache is not larger than its own capacity).</summary>
    public long PooledKvBytes => _pool.Bytes;

    /// <summary>Drops kept sessions until they hold at most <paramref name="maxBytes"/> (a KV budget's room left).</summary>
    public void TrimPool(long maxBytes) => _pool.Trim(maxBytes);

    /// <summary>Shared beginnings kept now (system prompts many requests read once) and their bytes.</summary>
    public (int Count, long Bytes) SharedPrefixes => _pool.Prefixes;

    /// <summary>A kept shared beginning of <paramref name="prompt"/> (within <paramref name="capacity"/>), pinned for a
    /// request that will run on it (<see cref="SessionPool.PinPrefix"/>); null without one or with prompt caching off.</summary>
    internal KvPrefix? PinPrefix(ReadOnlySpan<int> prompt, int capacity, out bool first)
    {
        first = false;
        return PromptCache ? _pool.PinPrefix(prompt, capacity, out first) : null;
    }

    /// <summary>Pins a shared beginning a running request's session has come to read (<see cref="SessionPool.Pin"/>);
    /// true when no other request pinned it.</summary>
    internal bool PinShared(KvPrefix prefix) => _pool.Pin(prefix);

    /// <summary>Ends a request's pin; true when no request pins it any more.</summary>
    internal bool UnpinPrefix(KvPrefix prefix) => _pool.UnpinPrefix(prefix);

    /// <summary>Generates from <paramref name="promptTokens"/> as part of the running batch. With
    /// <see cref="SamplingOptions.LogProbs"/>, <paramref name="onLogProbs"/> gets, just before each piece of text, the
    /// log-probabilities of the tokens generated since the previous piece. With a <paramref name="constraint"/> (its own,
    /// fresh), only the tokens it allows are drawn and the sequence ends when it is complete.</summary>
    public Task<GenerationResult> SubmitAsync(int[] promptTokens, int maxNewTokens, SamplingOptions sampling,
        Action<string>? onText = null, CancellationToken cancellationToken = default, Action<IReadOnlyList<TokenLogProb>>? onLogProbs = null,
        ITokenConstraint? constraint = null) =>
        SubmitAsync(promptTokens, maxNewTokens, sampling, onText, cancellationToken, onLogProbs, constraint, prefix: null, onShared: null);

    /// <summary><see cref="SubmitAsync(int[], int, SamplingOptions, Action{string}?, CancellationToken, Action{IReadOnlyList{TokenLogProb}}?, ITokenConstraint?)"/>
    /// on a shared beginning pinned for it (<see cref="PinPrefix"/>, which the caller unpins once the task ends): its
    /// session reads that one, so it holds only the positions after it. Without one, <paramref name="onShared"/> is told
    /// (on the factory's thread, at most once) when the request's session comes to read a shared beginning all the same
    /// (one made as it starts, from another request's cache, or from its own cache for a request that starts later),
    /// so a budget can count the request for the positions after it from then on.</summary>
    internal Task<GenerationResult> SubmitAsync(int[] promptTokens, int maxNewTokens, SamplingOptions sampling,
        Action<string>? onText, CancellationToken cancellationToken, Action<IReadOnlyList<TokenLogProb>>? onLogProbs,
        ITokenConstraint? constraint, KvPrefix? prefix, Action<KvPrefix>? onShared)
    {
        ArgumentNullException.ThrowIfNull(promptTokens);
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        sampling = (sampling ?? new SamplingOptions()).Validate();
        GenerationSequence.CheckPrompt(_model, promptTokens, maxNewTokens);
        if (prefix is not null && (prefix.Model != _model || !promptTokens.AsSpan().StartsWith(prefix.Tokens) || prefix.Positions >= promptTokens.Length))
            throw new ArgumentException("a shared beginning that is not the beginning of the prompt", nameof(prefix));
        var sequence = new Sequence(promptTokens, maxNewTokens, sampling, onText, cancellationToken) { OnLogProbs = onLogProbs, Constraint = constraint, Prefix = prefix, OnShared = prefix is null ? onShared : null };
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
        public ITokenConstraint? Constraint { get; init; }
        public KvPrefix? Prefix { get; init; } // pinned for it: its session must read this one
        public Action<KvPrefix>? OnShared { get; set; } // told once when its session comes to read a shared beginning
        public CancellationToken Cancellation { get; } = cancellationToken;
        public TaskCompletionSource<GenerationResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public GenerationSequence State = null!;
        public bool Left; // its session has gone back to the pool
        // A request whose prompt begins as a prefilling one's does waits for that one to run the shared tokens, then
        // copies them (prompt caching among running requests).
        public Sequence? Donor;
        public int Shared;
        // The row of the factory's logits buffer that holds its logits from the last pass (read by the next Advance,
        // before the next pass writes the buffer), or −1: they are in State.Last (a prompt just finished).
        public int LogitsRow = -1;
        // Its last choice took longer than SetAsideAfter: the next is made beside the batch.
        public bool Slow;
    }

    /// <summary>A sequence whose last token took longer than this to choose (a costly constraint's mask, below its
    /// caps) chooses its next tokens beside the batch — on the thread pool, from a copy of its logits — and rejoins
    /// the step after its choice is made, instead of holding every other stream's step while it masks (a 16-sequence
    /// step of the SmolLM2-shaped model is ~15 ms).</summary>
    internal static TimeSpan SetAsideAfter { get; set; } = TimeSpan.FromMilliseconds(20);

    /// <summary>Makes <paramref name="sequence"/>'s next choice from <paramref name="logits"/>, timed: one that took
    /// longer than <see cref="SetAsideAfter"/> marks the sequence slow.</summary>
    private static (int? Next, Exception? Failure) Choose(Sequence sequence, ReadOnlySpan<float> logits)
    {
        long started = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            return (sequence.State.Advance(logits), null);
        }
        catch (Exception e)
        {
            return (null, e);
        }
        finally
        {
            sequence.Slow = System.Diagnostics.Stopwatch.GetElapsedTime(started) > SetAsideAfter;
        }
    }

    /// <summary>The logits <paramref name="sequence"/> chooses its next token from: row <paramref name="row"/> of the
    /// factory's buffer <paramref name="rows"/>, or with −1 its own last ones (a prompt just finished).</summary>
    private static ReadOnlySpan<float> LogitsOf(Sequence sequence, int row, float[] rows, int vocab) =>
        row >= 0 ? rows.AsSpan(row * vocab, vocab) : sequence.State.Last;

    /// <summary>A sequence that has left the batch (finished, cancelled or failed outside a step) gives its session to
    /// the pool, once; it is in no later step.</summary>
    private void Leave(Sequence s)
    {
        if (s.Left || s.State is null) return;
        s.Left = true;
        _pool.Return(s.State.Session, PromptCache ? s.State.HeldTokens() : null);
    }

    /// <summary>Prompt tokens per step at most, over all waiting prompts (a multiple of eight, and the first prompt's
    /// chunk opens the pass, so a prompt run in chunks gives the numbers of one window): a long joining prompt delays the
    /// running sequences by one chunk per step, not by all of it.</summary>
    internal const int PrefillChunk = 64;

    /// <summary>Prompt tokens of a step in which no sequence is generating yet (a burst of requests arriving at an idle
    /// server): no running stream is delayed by them, so more go in one pass (a multiple of eight, as above; twice the
    /// chunk, so the batch's scratch stays small on a large model). `serve-load /tmp/sl/mxfp4 --streams 16 --tokens 64
    /// --max-batch 16`, five runs alternated with 64 here: time to first token p50 358 against 456 ms, p99 524 against
    /// 601 (means), aggregate 507 against 467 tokens/s.</summary>
    internal const int IdlePrefillChunk = 128;

    private void Run()
    {
        var active = new List<Sequence>();
        var prefilling = new List<Sequence>();
        var deferred = new List<Sequence>(); // waiting for a prefilling request to run the beginning they share
        int vocab = _model.Config.VocabSize;
        float[] logitsBuffer = [];
        var chosen = Array.Empty<(int? Next, Exception? Failure)>(); // each running sequence's choice in a step
        var aside = new List<(Sequence Sequence, Task<(int? Next, Exception? Failure)> Choice)>(); // choosing beside the batch
        var watched = new List<(Sequence Sequence, Task<(int? Next, Exception? Failure)> Choice)>(); // constrained, choosing now
        var parallelism = _model.Options.Parallelism;
        while (!_stop.IsCancellationRequested)
        {
            if (active.Count == 0 && prefilling.Count == 0 && deferred.Count == 0)
            {
                if (aside.Count == 0)
                {
                    try { _signal.Wait(_stop.Token); }
                    catch (OperationCanceledException) { break; }
                    _signal.Release(); // the request stays counted for the admission below
                }
                else if (!aside.Exists(a => a.Choice.IsCompleted))
                {
                    // Only sequences choosing beside the batch: wait for one (new requests are looked at every few ms).
                    try { Task.WaitAny([.. aside.Select(a => (Task)a.Choice)], 10, _stop.Token); }
                    catch (OperationCanceledException) { break; }
                }
            }
            // Join: new requests, up to the batch size; their prompts run in the following steps, a chunk at a time. One
            // whose prompt begins as a prefilling one's waits for those tokens to be run, then copies them.
            while (active.Count + prefilling.Count + deferred.Count + aside.Count < MaxBatch && _pending.TryDequeue(out var next))
            {
                _signal.Wait(0);
                if (PromptCache && Donor(next, prefilling) is var (donor, shared) && donor is not null)
                {
                    (next.Donor, next.Shared) = (donor, shared);
                    deferred.Add(next);
                }
                else if (Start(next, active, prefilling)) prefilling.Add(next);
            }
            for (int i = 0; i < deferred.Count; i++)
            {
                var waiting = deferred[i];
                var donor = waiting.Donor!;
                if (!waiting.Cancellation.IsCancellationRequested && !donor.Completion.Task.IsCompleted && donor.State.Session.Length < waiting.Shared) continue;
                deferred.RemoveAt(i--);
                if (waiting.Cancellation.IsCancellationRequested) waiting.Completion.TrySetCanceled(waiting.Cancellation);
                else if (Start(waiting, active, prefilling)) prefilling.Add(waiting);
            }

            // Choose each running sequence's next token; those that finish leave, the rest step together.
            var stepping = new List<Sequence>(active.Count + aside.Count);
            var tokens = new List<int>(active.Count + aside.Count + PrefillChunk);
            var counts = new List<int>(active.Count + aside.Count + 1);
            // A choice taken: a failure ends the request, a token steps, none finishes the sequence.
            void Take(Sequence sequence, (int? Next, Exception? Failure) choice)
            {
                if (choice.Failure is { } failure)
                {
                    Leave(sequence);
                    sequence.Completion.TrySetException(failure);
                    return;
                }
                if (choice.Next is int token)
                {
                    stepping.Add(sequence);
                    tokens.Add(token);
                    counts.Add(1);
                    return;
                }
                try
                {
                    // The session goes back to the pool before the request completes, so whoever awaits it sees the
                    // pool with it (a budget's accounting read right after a completion counts it).
                    var result = sequence.State.Result();
                    Leave(sequence);
                    sequence.Completion.TrySetResult(result);
                }
                catch (Exception e)
                {
                    Leave(sequence);
                    sequence.Completion.TrySetException(e);
                }
            }
            // Prompt chunks first, up to PrefillChunk tokens in all (the first waiting prompt takes what it can): at the
            // start of the pass, so a prompt's rows meet the products in the groups they would have alone.
            var chunked = new List<Sequence>();
            // With no sequence generating, no one waits on this step: the waiting prompts take a larger pass.
            int budget = active.Count == 0 ? IdlePrefillChunk : PrefillChunk;
            foreach (var sequence in prefilling)
            {
                if (budget == 0) break;
                if (sequence.Cancellation.IsCancellationRequested)
                {
                    Leave(sequence);
                    sequence.Completion.TrySetCanceled(sequence.Cancellation);
                    continue;
                }
                var chunk = sequence.State.NextPromptChunk(budget);
                chunked.Add(sequence);
                tokens.AddRange(chunk);
                counts.Add(chunk.Length);
                budget -= chunk.Length;
            }
            prefilling.RemoveAll(p => p.Completion.Task.IsCompleted);
            foreach (var sequence in active)
                if (sequence.Cancellation.IsCancellationRequested)
                {
                    Leave(sequence);
                    sequence.Completion.TrySetCanceled(sequence.Cancellation);
                }
            active.RemoveAll(s => s.Completion.Task.IsCompleted);
            // A sequence whose last choice was slow makes the next beside the batch, from a copy of its logits (the next
            // pass overwrites the buffer); it rejoins the step after its choice is made.
            for (int i = 0; i < active.Count; i++)
            {
                var sequence = active[i];
                if (!sequence.Slow) continue;
                float[] last = LogitsOf(sequence, sequence.LogitsRow, logitsBuffer, vocab).ToArray();
                sequence.LogitsRow = -1;
                aside.Add((sequence, Task.Run(() => Choose(sequence, last))));
                active.RemoveAt(i--);
            }
            // A constrained sequence's choice (its mask may take long, the first time as any other) starts on the
            // thread pool, reading its row where it is; one not made within SetAsideAfter goes on beside the batch
            // instead of holding this step, and the factory's logits buffer is left to it (the next pass writes a new
            // one).
            var logitsRows = logitsBuffer;
            long choosing = System.Diagnostics.Stopwatch.GetTimestamp();
            watched.Clear();
            for (int i = 0; i < active.Count; i++)
            {
                var sequence = active[i];
                if (sequence.Constraint is null) continue;
                int row = sequence.LogitsRow;
                sequence.LogitsRow = -1;
                watched.Add((sequence, Task.Run(() => Choose(sequence, LogitsOf(sequence, row, logitsRows, vocab)))));
                active.RemoveAt(i--);
            }
            // Each sequence's choice (sampling, a constraint's mask, its text decoded) is its own: they are made on every
            // core, then taken in order. (A draw at 152K tokens is 1–3 ms and a mask up to tens; one after another on
            // this thread they held up the whole batch's step.)
            if (chosen.Length < active.Count) chosen = new (int?, Exception?)[Math.Max(MaxBatch, active.Count)];
            var running = active;
            parallelism.For(active.Count, i =>
            {
                var sequence = running[i];
                chosen[i] = Choose(sequence, LogitsOf(sequence, sequence.LogitsRow, logitsRows, vocab));
            });
            for (int i = 0; i < active.Count; i++)
            {
                active[i].LogitsRow = -1;
                Take(active[i], chosen[i]);
            }
            foreach (var (sequence, choice) in watched)
            {
                var left = SetAsideAfter - System.Diagnostics.Stopwatch.GetElapsedTime(choosing);
                if (choice.IsCompleted || left > TimeSpan.Zero && choice.Wait(left)) Take(sequence, choice.Result);
                else
                {
                    aside.Add((sequence, choice));
                    logitsBuffer = []; // the choice still reads it: the next pass writes a new one
                }
            }
            // Choices made beside the batch since: those sequences step again (or finish) from here.
            for (int i = 0; i < aside.Count; i++)
            {
                var (sequence, choice) = aside[i];
                if (!choice.IsCompleted) continue;
                aside.RemoveAt(i--);
                if (sequence.Cancellation.IsCancellationRequested)
                {
                    Leave(sequence);
                    sequence.Completion.TrySetCanceled(sequence.Cancellation);
                }
                else Take(sequence, choice.Result);
            }
            active = [.. stepping];
            Volatile.Write(ref _active, active.Count + prefilling.Count + deferred.Count + aside.Count);
            if (counts.Count == 0) continue;
            LargestBatch = Math.Max(LargestBatch, active.Count + chunked.Count);
            // One buffer for the factory's life (grown to the largest batch): a new one per step would be a large-object
            // allocation for a large vocabulary, and the collections it causes stall every stream.
            if (logitsBuffer.Length < counts.Count * vocab) logitsBuffer = new float[(MaxBatch + 1) * vocab];
            var logits = logitsBuffer.AsSpan(0, counts.Count * vocab);
            List<Sequence> pass = [.. chunked, .. active];
            try
            {
                InferenceSession.ForwardMany([.. pass.Select(a => a.State.Session)], counts.ToArray(), tokens.ToArray(), logits);
                Steps++;
            }
            catch (Exception e)
            {
                foreach (var sequence in pass) sequence.Completion.TrySetException(e);
                active.Clear();
                prefilling.RemoveAll(p => p.Completion.Task.IsCompleted);
                continue;
            }
            // Each running sequence reads its row at the next Advance (16 vocabulary-sized copies a step were ~1.5% of
            // a 16-sequence step on the factory's one thread).
            for (int i = 0; i < stepping.Count; i++) stepping[i].LogitsRow = chunked.Count + i;
            for (int i = 0; i < chunked.Count; i++)
            {
                var sequence = chunked[i];
                bool ready = Attempt(sequence, () =>
                {
                    sequence.State.PromptChunkDone(counts[i], logitsBuffer.AsSpan(i * vocab, vocab));
                    return sequence.State.Prefilled;
                }, failed: false);
                if (ready) active.Add(sequence); // it samples its first token from these logits at the next step
                if (ready || sequence.Completion.Task.IsCompleted) prefilling.Remove(sequence);
                if (!ready && sequence.Completion.Task.IsCompleted) Leave(sequence);
            }
            Volatile.Write(ref _active, active.Count + prefilling.Count + deferred.Count + aside.Count);
        }
        foreach (var sequence in active.Concat(prefilling).Concat(deferred)) sequence.Completion.TrySetCanceled();
        foreach (var (sequence, _) in aside) sequence.Completion.TrySetCanceled();
        while (_pending.TryDequeue(out var left)) left.Completion.TrySetCanceled();
    }

    /// <summary>Prompt tokens a request must share with a prefilling one, beyond what that one has run, to wait for it
    /// and copy them rather than run them itself.</summary>
    internal const int MinDeferShared = 32;

    /// <summary>Prompt tokens beyond what a kept cache gives that a running sequence's cache must hold for a starting
    /// request to copy them (a copy is cheap; a few tokens are not worth the bookkeeping).</summary>
    internal const int MinCopyShared = 8;

    /// <summary>A prefilling request whose prompt begins as <paramref name="next"/>'s for at least
    /// <see cref="MinDeferShared"/> tokens it has not run yet, and how many (the most).</summary>
    private static (Sequence? Donor, int Shared) Donor(Sequence next, List<Sequence> prefilling)
    {
        (Sequence? donor, int shared) = (null, 0);
        foreach (var p in prefilling)
        {
            if (p.State is null || p.Completion.Task.IsCompleted) continue;
            int common = Math.Min(p.Prompt.AsSpan().CommonPrefixLength(next.Prompt), next.Prompt.Length - 1);
            if (common - p.State.Session.Length >= MinDeferShared && common > shared) (donor, shared) = (p, common);
        }
        return (donor, shared);
    }

    /// <summary>Starts a request: a kept session (holding the longest beginning of its prompt there is), and when a
    /// running or prefilling sequence's cache holds a longer one, that beginning copied from it
    /// (<see cref="InferenceSession.CopyPrefix"/>); the rest of the prompt runs in the following steps.</summary>
    private bool Start(Sequence s, List<Sequence> active, List<Sequence> prefilling) => Attempt(s, () =>
    {
        int capacity = GenerationSequence.Capacity(_model, s.Prompt.Length, s.MaxNewTokens);
        var session = _pool.Rent(capacity, PromptCache ? s.Prompt : [], out int reused);
        if (PromptCache)
        {
            // A kept shared beginning (a system prompt): read, not copied; the session keeps what it holds beyond it.
            if ((s.Prefix ?? _pool.FindPrefix(s.Prompt, capacity)) is { } kept)
            {
                if (reused >= kept.Positions) session.Rebase(kept);
                else
                {
                    session.Attach(kept);
                    reused = kept.Positions;
                }
            }
            // On a shared beginning, only the positions after it are copied: any more are worth it.
            (Sequence? donor, int shared) = (null, session.Prefix is { } on && on.Positions == reused ? reused : reused + MinCopyShared - 1);
            int[]? donorTokens = null;
            foreach (var other in active.Concat(prefilling))
            {
                if (other.State is null || other.Left) continue;
                int held = other.State.Session.Length;
                var tokens = other.State.HeldTokens(held);
                int common = Math.Min(Math.Min(tokens.AsSpan().CommonPrefixLength(s.Prompt), s.Prompt.Length - 1), held);
                if (common > shared) (donor, shared, donorTokens) = (other, common, tokens);
            }
            if (donor is not null)
            {
                // The running sequence's beginning becomes a shared one both read (when long enough), the rest is copied.
                var prefix = _pool.Share(donor.State.Session, donorTokens, shared);
                Shared(donor);
                session.CopyPrefix(donor.State.Session, shared, prefix);
                reused = shared;
                // A request whose budget counts a pinned beginning reads that one (it holds only the positions after it).
                if (s.Prefix is not null) session.Rebase(s.Prefix);
            }
        }
        s.State = new GenerationSequence(_model, _tokenizer, s.Prompt, s.MaxNewTokens, s.Sampling, _endTokens, s.OnText, s.Cancellation, s.OnLogProbs,
            deferPrompt: true, session: session, reused: reused, constraint: s.Constraint);
        Shared(s);
        Interlocked.Add(ref _cachedPromptTokens, reused);
        return true;
    }, failed: false);

    /// <summary>Tells a request whose session has come to read a shared beginning (and was admitted without one), once.</summary>
    private static void Shared(Sequence s)
    {
        if (s.OnShared is { } tell && s.State?.Session.Prefix is { } prefix)
        {
            s.OnShared = null;
            tell(prefix);
        }
    }

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
