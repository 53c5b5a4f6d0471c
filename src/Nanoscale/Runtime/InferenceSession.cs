using System.Buffers;
using System.Numerics.Tensors;
using Nanoscale.IO;

namespace Nanoscale.Runtime;

/// <summary>
/// The run state of one sequence: the key/value cache and scratch buffers (llama2.c's <c>RunState</c>).
/// <see cref="ForwardHidden(ReadOnlySpan{int}, Span{float}, CancellationToken)"/> appends any number of tokens at once: each linear layer is one matrix–matrix product
/// over all of them and attention is causal within the batch, so evaluating a window and stepping token by token
/// share one code path and give the same numbers up to float summation order.
/// Not thread-safe; the model it runs is.
/// </summary>
public sealed partial class InferenceSession
{
    private readonly LlamaModel _model;
    private readonly ModelConfig _config;
    private readonly KvRows[] _keyCache;   // per layer: [allocated positions − Base, kvDim] in the session's KvCacheType
    private readonly KvRows[] _valueCache; // per layer: [allocated positions − Base, kvDim]
    private KvPrefix? _prefix;             // positions 0..Base, shared with other sessions; the rows above are positions Base..
    private readonly KvCacheType _kvType;
    private float[] _ropeCos;               // [allocated positions, headDim / 2]
    private float[] _ropeSin;

    /// <summary>Positions the caches hold now: they start small and double as the sequence grows (up to
    /// <see cref="Capacity"/>), so a session sized for a long context holds memory for the tokens it has seen.</summary>
    private int _allocated;

    /// <summary>Positions a new session's caches hold before they grow.</summary>
    internal const int InitialPositions = 256;
    private Scratch _scratch = new(0, 0, 0, 0);

    internal InferenceSession(LlamaModel model, int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        _model = model;
        _config = model.Config;
        Capacity = capacity;
        _kvType = model.Options.KvCache;
        _keyCache = [.. Enumerable.Range(0, _config.Layers).Select(_ => KvRows.Create(_kvType, _config.KvDim))];
        _valueCache = [.. Enumerable.Range(0, _config.Layers).Select(_ => KvRows.Create(_kvType, _config.KvDim))];
        (_ropeCos, _ropeSin) = ([], []);
        EnsurePositions(Math.Min(capacity, InitialPositions));
    }

    /// <summary>Positions the key/value cache holds memory for now (at most <see cref="Capacity"/>), a shared beginning's included.</summary>
    internal int AllocatedPositions => _allocated;

    /// <summary>The shared beginning this session's positions start with (read, never written), or null.</summary>
    internal KvPrefix? Prefix => _prefix;

    /// <summary>Positions held by <see cref="Prefix"/>: this session's own rows hold the positions from here on.</summary>
    private int Base => _prefix?.Positions ?? 0;

    /// <summary>Grows the caches (and rotary tables) to hold <paramref name="positions"/>: doubling, at most
    /// <see cref="Capacity"/>; what is cached is kept.</summary>
    private void EnsurePositions(int positions)
    {
        if (positions <= _allocated) return;
        Reallocate((int)Math.Min(Capacity, Math.Max(positions, 2L * _allocated)));
    }

    /// <summary>The caches and rotary tables resized to hold <paramref name="positions"/>, the cached ones that fit kept.</summary>
    private void Reallocate(int positions)
    {
        long length = (long)(positions - Base) * _config.KvDim;
        for (int l = 0; l < _config.Layers; l++)
        {
            _keyCache[l].Resize(length);
            _valueCache[l].Resize(length);
        }
        if (_ropeCos.Length != (long)positions * (_config.HeadDim / 2))
            (_ropeCos, _ropeSin) = RopeTables(positions, _config.HeadDim, _config.RopeTheta, _config.RopeScaling, _config.RopeFrequencyFactors);
        _allocated = positions;
    }

    public LlamaModel Model => _model;

    /// <summary>Positions the key/value cache can hold.</summary>
    public int Capacity { get; private set; }

    /// <summary>Bytes of key/value cache this session holds now in its own rows (every layer's keys and values,
    /// <see cref="AllocatedPositions"/> positions less those of its <see cref="Prefix"/>, which is counted once for all
    /// the sessions reading it).</summary>
    internal long AllocatedKvBytes => _model.Options.KvCacheBytes(2L * _config.Layers * (_allocated - Base) * _config.KvDim);

    /// <summary>Makes a finished session a fresh one of <paramref name="capacity"/> positions (<see cref="SessionPool"/>)
    /// that holds its first <paramref name="keep"/> positions (a prompt that begins as its sequence did) and nothing
    /// after them (what its cache holds there is never read again: a position is written before it is attended to), its
    /// arrays kept as they are and grown as a new session's would be; arrays larger than the new capacity are cut to it
    /// (their first positions kept), so the session never holds more than a new one of that capacity could.</summary>
    internal void Recycle(int capacity, int keep = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(capacity);
        ArgumentOutOfRangeException.ThrowIfNegative(keep);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(keep, Math.Min(Length, capacity - 1));
        Capacity = capacity;
        Truncate(keep);
        if (_allocated > capacity) Reallocate(capacity);
    }

    /// <summary>Takes the first <paramref name="positions"/> of <paramref name="source"/>'s cache (a session of the same
    /// model whose sequence begins with the same tokens: the token factory's running sequences sharing a prompt's
    /// beginning) instead of computing them: their keys and values are copied as stored, and this session holds those
    /// positions and nothing after them. When the source reads a shared beginning (<see cref="Prefix"/>) within those
    /// positions, this session reads it too and copies only the positions after it; with <paramref name="on"/> (a shared
    /// beginning of the same tokens, within the positions), it reads that one and copies the positions after it.</summary>
    internal void CopyPrefix(InferenceSession source, int positions, KvPrefix? on = null)
    {
        if (source.Model != _model) throw new ArgumentException("a session of another model", nameof(source));
        ArgumentOutOfRangeException.ThrowIfNegative(positions);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(positions, Math.Min(source.Length, Capacity - 1));
        if (on is not null && (on.Model != _model || on.Positions > positions))
            throw new ArgumentException($"a shared beginning of {on.Positions} positions for the first {positions}", nameof(on));
        Begin(on ?? (source._prefix is { } shared && shared.Positions <= positions ? shared : null));
        EnsurePositions(positions);
        int first = Base;
        for (int l = 0; l < _config.Layers; l++)
        {
            source.CopyRows(l, keys: true, first, positions - first, _keyCache[l], 0);
            source.CopyRows(l, keys: false, first, positions - first, _valueCache[l], 0);
        }
        Length = positions;
    }

    /// <summary>Makes this session an empty one that begins with <paramref name="prefix"/>'s positions (their keys and
    /// values read from it, not copied): <see cref="Length"/> is its positions and the next token follows them.</summary>
    internal void Attach(KvPrefix prefix)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        if (prefix.Model != _model) throw new ArgumentException("a shared beginning of another model", nameof(prefix));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(prefix.Positions, Capacity - 1);
        Begin(prefix);
    }

    /// <summary>Empty on <paramref name="prefix"/> (or on nothing): what the own rows held is forgotten, their room kept
    /// (at least one position past the prefix, within the capacity).</summary>
    private void Begin(KvPrefix? prefix)
    {
        _prefix = prefix;
        Length = Base;
        Reallocate(Math.Min(Capacity, Math.Max(_allocated, Base + 1)));
    }

    /// <summary>The first <paramref name="tokens"/>.Length positions of this session (which hold those tokens; a whole
    /// number of <see cref="KvPrefix.Granule"/>) as a shared beginning other sessions can read
    /// (<see cref="Attach"/>, <see cref="CopyPrefix"/>): the prefix this session reads when it is exactly that, else a
    /// new one copied from its rows, which this session then reads too (its own rows shrink to the positions after it)
    /// when it reads none yet. (A session that reads one keeps it: a KV budget may count that one for its request.)</summary>
    internal KvPrefix ShareBeginning(int[] tokens)
    {
        int n = tokens.Length;
        ArgumentOutOfRangeException.ThrowIfGreaterThan(n, Length);
        if (_prefix is { } own && own.Positions == n) return own;
        var keys = new KvRows[_config.Layers];
        var values = new KvRows[_config.Layers];
        for (int l = 0; l < _config.Layers; l++)
        {
            (keys[l], values[l]) = (KvRows.Create(_kvType, _config.KvDim), KvRows.Create(_kvType, _config.KvDim));
            keys[l].Resize((long)n * _config.KvDim);
            values[l].Resize((long)n * _config.KvDim);
            CopyRows(l, keys: true, 0, n, keys[l], 0);
            CopyRows(l, keys: false, 0, n, values[l], 0);
        }
        var prefix = new KvPrefix(_model, tokens, keys, values);
        if (_prefix is null) Rebase(prefix);
        return prefix;
    }

    /// <summary>Reads positions 0..<see cref="KvPrefix.Positions"/> from <paramref name="prefix"/> (which holds the same
    /// tokens; null: from its own rows) instead of where it reads them now, keeping every later position: its own rows
    /// become those after the new beginning. A request counted in a KV budget with a shared beginning holds only the
    /// positions after it.</summary>
    internal void Rebase(KvPrefix? prefix)
    {
        if (prefix == _prefix) return;
        int first = prefix?.Positions ?? 0, kvDim = _config.KvDim;
        if (prefix is not null && prefix.Model != _model) throw new ArgumentException("a shared beginning of another model", nameof(prefix));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(first, Length);
        for (int l = 0; l < _config.Layers; l++)
        {
            (KvRows keys, KvRows values) = (KvRows.Create(_kvType, kvDim), KvRows.Create(_kvType, kvDim));
            keys.Resize((long)(_allocated - first) * kvDim);
            values.Resize((long)(_allocated - first) * kvDim);
            CopyRows(l, keys: true, first, Length - first, keys, 0);
            CopyRows(l, keys: false, first, Length - first, values, 0);
            (_keyCache[l], _valueCache[l]) = (keys, values);
        }
        _prefix = prefix; // after the copies: they read the rows where they were
    }

    /// <summary>Copies positions <paramref name="from"/>..+<paramref name="count"/> of layer <paramref name="layer"/>'s
    /// keys (or values) as stored, wherever this session holds them (its prefix, its own rows), into
    /// <paramref name="destination"/> from position <paramref name="to"/>.</summary>
    private void CopyRows(int layer, bool keys, int from, int count, KvRows destination, int to)
    {
        int kvDim = _config.KvDim, inPrefix = Math.Clamp(Base - from, 0, count);
        if (inPrefix > 0) (keys ? _prefix!.Keys : _prefix!.Values)[layer].CopyTo(from * kvDim, destination, to * kvDim, inPrefix * kvDim);
        if (count > inPrefix)
            (keys ? _keyCache : _valueCache)[layer].CopyTo((from + inPrefix - Base) * kvDim, destination, (to + inPrefix) * kvDim, (count - inPrefix) * kvDim);
    }

    /// <summary>Positions already processed; the next token goes to this position.</summary>
    public int Length { get; private set; }

    /// <summary>Forgets the sequence, so the next token is at position 0 (a fresh context).</summary>
    public void Reset() => Truncate(0);

    /// <summary>Keeps the first <paramref name="length"/> positions and forgets the rest (a conversation that goes on
    /// from a common beginning): the next token is at position <paramref name="length"/>, and what the cache held beyond
    /// it is overwritten before it is read.</summary>
    public void Truncate(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, Length);
        Length = length;
        // Within a shared beginning: its first positions copied into this session's own rows (it is never written).
        if (length < Base) Rebase(null);
    }

    /// <summary>Feeds one token and returns the logits for the token after it.</summary>
    public float[] Step(int token)
    {
        var logits = new float[_config.VocabSize];
        Forward([token], logits);
        return logits;
    }

    /// <summary>Feeds <paramref name="tokens"/> at positions <see cref="Length"/>.. and writes the logits after each
    /// (<c>tokens × vocab</c>).</summary>
    public void Forward(ReadOnlySpan<int> tokens, Span<float> logits, CancellationToken cancellationToken = default)
    {
        if (logits.Length != (long)tokens.Length * _config.VocabSize)
            throw new ArgumentException($"logits hold {logits.Length} floats; {tokens.Length} tokens × vocab {_config.VocabSize} need {(long)tokens.Length * _config.VocabSize}", nameof(logits));
        float[] hidden = ArrayPool<float>.Shared.Rent(tokens.Length * _config.Dim);
        try
        {
            Span<float> h = hidden.AsSpan(0, tokens.Length * _config.Dim);
            ForwardHidden(tokens, h, cancellationToken);
            _model.Head.MatMul(h, logits, _model.Options);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(hidden);
        }
    }

    /// <summary>
    /// Feeds <paramref name="tokens"/> at positions <see cref="Length"/>.. and writes each one's final hidden state
    /// (after the final RMSNorm, <c>tokens × dim</c>); <see cref="ComputeLogits"/> turns rows of it into logits, so
    /// a caller can apply the output head a few positions at a time.
    /// </summary>
    public void ForwardHidden(ReadOnlySpan<int> tokens, Span<float> hidden, CancellationToken cancellationToken = default) =>
        ForwardHidden(tokens, hidden, _model.Options, cancellationToken);

    /// <summary>A generation prompt: <see cref="ForwardHidden(ReadOnlySpan{int}, Span{float}, CancellationToken)"/> with
    /// <see cref="RuntimeOptions.FusedWindows"/> on (the window on the stored codes where that is a real kernel).</summary>
    internal void ForwardPrompt(ReadOnlySpan<int> tokens, Span<float> hidden, CancellationToken cancellationToken = default) =>
        ForwardHidden(tokens, hidden, _model.Options with { FusedWindows = true }, cancellationToken);

    private void ForwardHidden(ReadOnlySpan<int> tokens, Span<float> hidden, RuntimeOptions options, CancellationToken cancellationToken)
    {
        int count = tokens.Length, dim = _config.Dim, qDim = _config.QueryDim, kvDim = _config.KvDim, start = Length;
        if (hidden.Length != (long)count * dim)
            throw new ArgumentException($"hidden holds {hidden.Length} floats; {count} tokens × dim {dim} need {(long)count * dim}", nameof(hidden));
        if (count == 0) return;
        if (count > Capacity - start)
            throw new InvalidOperationException($"{count} tokens after {start} exceed the session's capacity of {Capacity} positions");
        EnsurePositions(start + count);
        Scratch s = EnsureScratch(count);
        Span<float> x = s.X.AsSpan(0, count * dim), xb = s.Xb.AsSpan(0, count * dim), q = s.Q.AsSpan(0, count * qDim);
        Span<float> attention = s.Attention.AsSpan(0, count * qDim), projected = s.Projected.AsSpan(0, count * dim);
        Span<float> gate = s.Gate.AsSpan(0, count * _config.HiddenDim), up = s.Up.AsSpan(0, count * _config.HiddenDim);

        for (int t = 0; t < count; t++)
        {
            if ((uint)tokens[t] >= (uint)_config.VocabSize)
                throw new ArgumentOutOfRangeException(nameof(tokens), tokens[t], $"token at index {t} is outside the vocabulary of {_config.VocabSize}");
            _model.Embedding.ReadRows(tokens[t], 1, x.Slice(t * dim, dim));
        }

        // One sequence's window: keys and values go straight into this session's cache, the rows at consecutive
        // positions (a 16- or 8-bit cache: into the scratch, then narrowed into the cache after their rotation).
        bool direct = _kvType == KvCacheType.F32;
        AttentionPart attend = (l, q, keys, values, attention) =>
        {
            ApplyRope(q, _config.Heads, start);
            ApplyRope(keys, _config.KvHeads, start);
            if (!direct) StoreKv(l, start, keys, values);
            Attend(l, q, start, count, attention);
        };
        for (int l = 0; l < _config.Layers; l++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Span<float> keys = direct ? ((FloatKvRows)_keyCache[l]).Data.AsSpan((start - Base) * kvDim, count * kvDim) : s.Keys.AsSpan(0, count * kvDim);
            Span<float> values = direct ? ((FloatKvRows)_valueCache[l]).Data.AsSpan((start - Base) * kvDim, count * kvDim) : s.Values.AsSpan(0, count * kvDim);
            Layer(l, options, x, xb, q, keys, values, attention, projected, gate, up, attend);
        }

        RmsNormRows(x, _model.FinalNorm, hidden);
        Length = start + count;
    }

    /// <summary>
    /// One token for each of several sequences of the same model in one pass over the weights (the token factory's
    /// step): every linear layer is one product over the batch's rows, as a window's tokens are; each row's rotary
    /// position, key/value cache and attention are its own sequence's. Writes <c>sessions × vocab</c> logits and
    /// advances every session by one position. Equal to stepping each session alone up to float summation order.
    /// </summary>
    /// <exception cref="ArgumentException">Sessions of different models, a session listed twice, or spans of the wrong size.</exception>
    /// <exception cref="InvalidOperationException">A session is full.</exception>
    public static void StepMany(IReadOnlyList<InferenceSession> sessions, ReadOnlySpan<int> tokens, Span<float> logits,
        CancellationToken cancellationToken = default)
    {
        if (tokens.Length != sessions.Count)
            throw new ArgumentException($"{sessions.Count} sessions need {sessions.Count} tokens");
        Span<int> ones = sessions.Count <= 256 ? stackalloc int[sessions.Count] : new int[sessions.Count];
        ones.Fill(1);
        ForwardMany(sessions, ones, tokens, logits, cancellationToken);
    }

    /// <summary>
    /// Several sequences of the same model, each with its own run of tokens (<paramref name="counts"/>[i] tokens of
    /// session i, one after another in <paramref name="tokens"/>), in one pass over the weights: the token factory's
    /// step with prompt chunks in it. Each session's rows sit at its next positions, with its own cache and attention;
    /// every linear layer is one product over all the rows. Writes the logits of each session's last row
    /// (<c>sessions × vocab</c>) and advances each session by its count. Equal to running each session's tokens alone
    /// (a window, or a step) up to float summation order.
    /// </summary>
    /// <exception cref="ArgumentException">Sessions of different models, a session listed twice, a count below 1, or spans of the wrong size.</exception>
    /// <exception cref="InvalidOperationException">A session would pass its capacity.</exception>
    public static unsafe void ForwardMany(IReadOnlyList<InferenceSession> sessions, ReadOnlySpan<int> counts, ReadOnlySpan<int> tokens, Span<float> logits,
        CancellationToken cancellationToken = default)
    {
        int sequences = sessions.Count;
        if (sequences == 0) return;
        var first = sessions[0];
        var config = first._config;
        int dim = config.Dim, qDim = config.QueryDim, kvDim = config.KvDim, vocab = config.VocabSize;
        if (counts.Length != sequences || logits.Length != (long)sequences * vocab)
            throw new ArgumentException($"{sequences} sessions need {sequences} counts and {sequences} × {vocab} logits");
        int rows = 0;
        foreach (int n in counts)
        {
            if (n < 1) throw new ArgumentException($"every session needs at least one token (a count is {n})", nameof(counts));
            rows += n;
        }
        if (tokens.Length != rows)
            throw new ArgumentException($"the counts add up to {rows} tokens; {tokens.Length} were given", nameof(tokens));
        if (sessions.Any(s => s._model != first._model) || sessions.Distinct().Count() != sequences)
            throw new ArgumentException("the sessions of one step must be distinct sessions of the same model");
        for (int i = 0; i < sequences; i++)
            if (sessions[i].Length + counts[i] > sessions[i].Capacity)
                throw new InvalidOperationException($"{counts[i]} tokens after {sessions[i].Length} exceed a session's capacity of {sessions[i].Capacity} positions");
        for (int i = 0; i < sequences; i++) sessions[i].EnsurePositions(sessions[i].Length + counts[i]);
        // The batch's rows are several sequences' tokens: their products run on the stored codes.
        RuntimeOptions options = first._model.Options with { FusedTokens = RowDecodedLinearWeight.MaxFusedTokens, FusedWindows = true };
        var model = first._model;
        // The batch's scratch: this thread's (the sessions' own scratch stays theirs), grown as needed and kept, so a
        // step (with prompt chunks, up to ~80 rows) allocates no large arrays for the collector to sweep between steps.
        var s = BatchScratch(rows, dim, qDim, config.HiddenDim, kvDim);
        Span<float> x = s.X.AsSpan(0, rows * dim), xb = s.Xb.AsSpan(0, rows * dim), q = s.Q.AsSpan(0, rows * qDim);
        Span<float> attention = s.Attention.AsSpan(0, rows * qDim), projected = s.Projected.AsSpan(0, rows * dim);
        Span<float> gate = s.Gate.AsSpan(0, rows * config.HiddenDim), up = s.Up.AsSpan(0, rows * config.HiddenDim);
        Span<float> keys = s.Keys.AsSpan(0, rows * kvDim), values = s.Values.AsSpan(0, rows * kvDim);
        for (int t = 0; t < rows; t++)
        {
            if ((uint)tokens[t] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(tokens), tokens[t], $"token {t} is outside the vocabulary of {vocab}");
            model.Embedding.ReadRows(tokens[t], 1, x.Slice(t * dim, dim));
        }
        int[] offsets = new int[sequences + 1];
        for (int i = 0; i < sequences; i++) offsets[i + 1] = offsets[i] + counts[i];
        // Each sequence's rows at its own positions, their keys and values into its cache, attention over its own past.
        // The sequences are independent here (each its own rows, cache and output rows), so they are spread over the
        // threads: one step's attention is many small pieces (a row each), each too small to split by heads.
        long attentionWork = 0;
        for (int i = 0; i < sequences; i++) attentionWork += (long)counts[i] * (sessions[i].Length + counts[i]) * qDim * 2;
        AttentionPart attend = (l, q, keyRows, valueRows, attention) =>
        {
            fixed (float* qPointer = q, kPointer = keyRows, vPointer = valueRows, aPointer = attention)
            {
                nint qAddress = (nint)qPointer, kAddress = (nint)kPointer, vAddress = (nint)vPointer, aAddress = (nint)aPointer;
                first._model.Options.For(sequences, attentionWork, i =>
                {
                    var session = sessions[i];
                    int position = session.Length, n = offsets[i + 1] - offsets[i], row = offsets[i];
                    var qRows = new Span<float>((float*)qAddress + (nint)row * qDim, n * qDim);
                    var kRows = new Span<float>((float*)kAddress + (nint)row * kvDim, n * kvDim);
                    var vRows = new Span<float>((float*)vAddress + (nint)row * kvDim, n * kvDim);
                    session.ApplyRope(qRows, config.Heads, position);
                    session.ApplyRope(kRows, config.KvHeads, position);
                    session.StoreKv(l, position, kRows, vRows);
                    session.Attend(l, qRows, position, n, new Span<float>((float*)aAddress + (nint)row * qDim, n * qDim), serial: sequences > 1);
                });
            }
        };
        for (int l = 0; l < config.Layers; l++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            first.Layer(l, options, x, xb, q, keys, values, attention, projected, gate, up, attend);
        }
        // The head on each sequence's last row only.
        Span<float> last = s.Projected.AsSpan(0, sequences * dim);
        for (int i = 0; i < sequences; i++) x.Slice((offsets[i + 1] - 1) * dim, dim).CopyTo(last.Slice(i * dim, dim));
        first.RmsNormRows(last, model.FinalNorm, xb[..(sequences * dim)]);
        model.Head.MatMul(xb[..(sequences * dim)], logits, options);
        for (int i = 0; i < sequences; i++) sessions[i].Length += counts[i];
    }

    /// <summary>The part of a layer that differs between one sequence's window and a step of several sequences: rotary
    /// positions, writing the keys and values into the right caches, and attention.</summary>
    private delegate void AttentionPart(int layer, Span<float> q, Span<float> keys, Span<float> values, Span<float> attention);

    /// <summary>One transformer layer over the rows of <paramref name="x"/> (updated in place): norm, q/k/v products
    /// (biases, q/k norms), <paramref name="attend"/>, output product, residual, then the SwiGLU feed-forward and its
    /// residual. Every product is one matrix product over all the rows.</summary>
    private void Layer(int l, RuntimeOptions options, Span<float> x, Span<float> xb, Span<float> q, Span<float> keys, Span<float> values,
        Span<float> attention, Span<float> projected, Span<float> gate, Span<float> up, AttentionPart attend)
    {
        LlamaLayer layer = _model.Layers[l];
        RmsNormRows(x, layer.AttentionNorm, xb);
        RowDecodedLinearWeight.MatMulShared(xb, options, layer.Query, q, layer.Key, keys, layer.Value, values);
        AddBiasRows(q, layer.QueryBias);
        AddBiasRows(keys, layer.KeyBias);
        AddBiasRows(values, layer.ValueBias);
        NormHeads(q, layer.QueryNorm);
        NormHeads(keys, layer.KeyNorm);
        attend(l, q, keys, values, attention);
        layer.Output.MatMul(attention, projected, options);
        TensorPrimitives.Add(x, projected, x);

        RmsNormRows(x, layer.FfnNorm, xb);
        if (!GateUp(layer, xb, gate, up, options)) SwiGluRows(gate, up);
        layer.Down.MatMul(gate, projected, options);
        TensorPrimitives.Add(x, projected, x);
    }

    /// <summary>Applies the output head to final hidden states (<c>n × dim</c> → <c>n × vocab</c>).</summary>
    public void ComputeLogits(ReadOnlySpan<float> hidden, Span<float> logits) => _model.Head.MatMul(hidden, logits, _model.Options);

    /// <summary>The logits of vocabulary entries <paramref name="first"/>.. (<paramref name="count"/>) for every row of
    /// <paramref name="hidden"/> (<c>n × count</c>): a large vocabulary's logits a slice at a time.</summary>
    public void ComputeLogitSlice(ReadOnlySpan<float> hidden, int first, int count, Span<float> logits) =>
        _model.Head.MatMulRows(hidden, first, count, logits, _model.Options);

    private void RmsNormRows(ReadOnlySpan<float> x, float[] weight, Span<float> destination)
    {
        int dim = _config.Dim;
        for (int t = 0; t < x.Length / dim; t++)
            Kernels.RmsNorm(x.Slice(t * dim, dim), weight, _config.NormEps, destination.Slice(t * dim, dim));
    }

    /// <summary>Qwen3: RMSNorm over each head of every row (weights of one head's width), before RoPE.</summary>
    private void NormHeads(Span<float> rows, float[]? weight)
    {
        if (weight is null) return;
        for (int i = 0; i < rows.Length; i += weight.Length)
            Kernels.RmsNorm(rows.Slice(i, weight.Length), weight, _config.NormEps, rows.Slice(i, weight.Length));
    }

    private static void AddBiasRows(Span<float> rows, float[]? bias)
    {
        if (bias is null) return;
        for (int i = 0; i < rows.Length; i += bias.Length)
            TensorPrimitives.Add(rows.Slice(i, bias.Length), bias, rows.Slice(i, bias.Length));
    }

    /// <summary>Rotates every head of every row; row t is at position <paramref name="start"/> + t.</summary>
    private void ApplyRope(Span<float> rows, int heads, int start)
    {
        int headDim = _config.HeadDim, half = headDim / 2, width = heads * headDim;
        for (int t = 0; t < rows.Length / width; t++)
        {
            ReadOnlySpan<float> cos = _ropeCos.AsSpan((start + t) * half, half), sin = _ropeSin.AsSpan((start + t) * half, half);
            for (int h = 0; h < heads; h++)
            {
                Span<float> v = rows.Slice(t * width + h * headDim, headDim);
                if (_config.RopeStyle == RopeStyle.Interleaved) Kernels.RopeInterleaved(v, cos, sin);
                else Kernels.RopeHalves(v, cos, sin);
            }
        }
    }

    /// <summary>The gate and up products and, on the fused path, <see cref="Kernels.SwiGlu"/> on each tile's hidden units as
    /// soon as both products' tile is done (one loop over the threads for all three); false when the products ran
    /// otherwise and SwiGLU is still to do.</summary>
    private static unsafe bool GateUp(LlamaLayer layer, ReadOnlySpan<float> xb, Span<float> gate, Span<float> up, RuntimeOptions options)
    {
        int hidden = layer.Gate.Rows, rows = gate.Length / hidden;
        fixed (float* g = gate)
        fixed (float* u = up)
        {
            nint gAddress = (nint)g, uAddress = (nint)u;
            return RowDecodedLinearWeight.MatMulShared(xb, options, layer.Gate, gate, layer.Up, up, null, default, (first, count) =>
            {
                for (int t = 0; t < rows; t++)
                    Kernels.SwiGlu(new Span<float>((float*)gAddress + (nint)t * hidden + first, count),
                        new ReadOnlySpan<float>((float*)uAddress + (nint)t * hidden + first, count));
            });
        }
    }

    /// <summary><see cref="Kernels.SwiGlu"/> over a batch's rows, spread over the threads when there are several (one exp per
    /// hidden unit and row: a step of 16 sequences spent a quarter of its time here on one thread).</summary>
    private unsafe void SwiGluRows(Span<float> gate, ReadOnlySpan<float> up)
    {
        int hidden = _config.HiddenDim, rows = gate.Length / hidden;
        if (rows < 2)
        {
            Kernels.SwiGlu(gate, up);
            return;
        }
        fixed (float* g = gate)
        fixed (float* u = up)
        {
            nint gAddress = (nint)g, uAddress = (nint)u;
            // An exp costs about as much as 20 multiply-adds here.
            _model.Options.For(rows, (long)gate.Length * 20, r =>
                Kernels.SwiGlu(new Span<float>((float*)gAddress + (nint)r * hidden, hidden), new ReadOnlySpan<float>((float*)uAddress + (nint)r * hidden, hidden)));
        }
    }

    /// <summary>
    /// Rotary tables as llama2.c and Hugging Face compute them: the inverse frequency θ^(−2j/headDim) and the angle
    /// position · frequency rounded to float32, then cos/sin of that float angle. With Llama-3 scaling the inverse
    /// frequencies are first scaled as transformers' <c>_compute_llama3_parameters</c> does (<see cref="ScaledFrequency"/>);
    /// with a GGUF file's per-pair factors, each frequency is divided by its factor, as llama.cpp does.
    /// </summary>
    private static (float[] Cos, float[] Sin) RopeTables(int capacity, int headDim, float theta, RopeScaling? scaling, float[]? factors)
    {
        int half = headDim / 2;
        var cos = new float[(long)capacity * half];
        var sin = new float[(long)capacity * half];
        for (int j = 0; j < half; j++)
        {
            float frequency = (float)(1.0 / Math.Pow(theta, 2.0 * j / headDim));
            if (scaling is not null) frequency = ScaledFrequency(frequency, scaling);
            if (factors is not null) frequency /= factors[j]; // llama.cpp's rope_freqs: θ / factor
            for (int p = 0; p < capacity; p++)
            {
                float angle = p * frequency;
                cos[p * half + j] = (float)Math.Cos(angle);
                sin[p * half + j] = (float)Math.Sin(angle);
            }
        }
        return (cos, sin);
    }

    /// <summary>
    /// Llama-3's scaling of one inverse frequency f (wavelength λ = 2π/f), in float32 as transformers computes it:
    /// λ above original/low_freq_factor (long wavelengths): f/factor; λ below original/high_freq_factor: f; between:
    /// (1 − s)·f/factor + s·f with s = (original/λ − low_freq_factor)/(high_freq_factor − low_freq_factor).
    /// </summary>
    internal static float ScaledFrequency(float frequency, RopeScaling s)
    {
        float wavelength = 2 * MathF.PI / frequency;
        float lowWavelength = s.OriginalMaxPositions / s.LowFreqFactor, highWavelength = s.OriginalMaxPositions / s.HighFreqFactor;
        if (wavelength > lowWavelength) return frequency / s.Factor;
        if (wavelength < highWavelength) return frequency;
        float smooth = (s.OriginalMaxPositions / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
        return (1 - smooth) * (frequency / s.Factor) + smooth * frequency;
    }

    [ThreadStatic] private static Scratch? t_batchScratch;

    /// <summary>This thread's scratch for <see cref="ForwardMany"/>: reused while it has room for the rows and the
    /// model's widths (a cache, like the kernels' per-thread activations; a thread runs one batch at a time).</summary>
    private static Scratch BatchScratch(int rows, int dim, int queryDim, int hiddenDim, int kvDim)
    {
        if (t_batchScratch is { } cached && cached.Fits(rows, dim, queryDim, hiddenDim, kvDim)) return cached;
        int tokens = t_batchScratch is { } old && old.X.Length == (long)old.Tokens * dim ? Math.Max(rows, 2 * old.Tokens) : rows;
        return t_batchScratch = new Scratch(tokens, dim, queryDim, hiddenDim, kvDim);
    }

    private Scratch EnsureScratch(int count)
    {
        if (_scratch.Tokens < count)
            _scratch = new Scratch(Math.Max(count, Math.Min(Capacity, 2 * _scratch.Tokens)), _config.Dim, _config.QueryDim, _config.HiddenDim,
                _kvType == KvCacheType.F32 ? 0 : _config.KvDim); // a narrower cache takes the keys and values through the scratch
        return _scratch;
    }

    /// <summary>Activations for a batch of up to <see cref="Tokens"/> positions, row-major.</summary>
    private sealed class Scratch(int tokens, int dim, int queryDim, int hiddenDim, int kvDim = 0)
    {
        public int Tokens { get; } = tokens;
        /// <summary>Keys and values of the rows before they go to their sequences' caches (a batch of several
        /// sequences, or a window over a 16- or 8-bit cache; a window writes an f32 cache directly).</summary>
        public float[] Keys { get; } = new float[(long)tokens * kvDim];
        public float[] Values { get; } = new float[(long)tokens * kvDim];
        public bool Fits(int rows, int d, int q, int h, int kv) =>
            rows <= Tokens && X.Length == (long)Tokens * d && Q.Length == (long)Tokens * q && Gate.Length == (long)Tokens * h && Keys.Length == (long)Tokens * kv;
        public float[] X { get; } = new float[(long)tokens * dim];
        public float[] Xb { get; } = new float[(long)tokens * dim];
        public float[] Q { get; } = new float[(long)tokens * queryDim];
        public float[] Attention { get; } = new float[(long)tokens * queryDim];
        public float[] Projected { get; } = new float[(long)tokens * dim];
        public float[] Gate { get; } = new float[(long)tokens * hiddenDim];
        public float[] Up { get; } = new float[(long)tokens * hiddenDim];
    }
}
