namespace Nanoscale.Runtime;

/// <summary>
/// Finished sequences' sessions kept for the next requests (the token factory's): a new request takes a kept session's
/// key/value arrays instead of allocating its own, so a server generating long answers does not leave every finished
/// request's cache (large arrays, freed only by full collections) for the collector. At most <see cref="MaxSessions"/>
/// are kept; a session is handed out only for a capacity at least its allocated positions, so a request never holds
/// more cache than a new session of its capacity could grow to (what a KV budget counts); <see cref="Trim"/> drops kept
/// sessions until their bytes fit an allowance. Thread-safe.
/// </summary>
internal sealed class SessionPool(LlamaModel model, int maxSessions)
{
    private readonly List<InferenceSession> _kept = [];
    private long _bytes;

    public int MaxSessions { get; } = maxSessions;

    /// <summary>Sessions kept now.</summary>
    public int Count
    {
        get { lock (_kept) return _kept.Count; }
    }

    /// <summary>Key/value bytes the kept sessions hold.</summary>
    public long Bytes
    {
        get { lock (_kept) return _bytes; }
    }

    /// <summary>An empty session of <paramref name="capacity"/> positions: the kept one with the most allocated positions
    /// that are not more than <paramref name="capacity"/>, else a new one.</summary>
    public InferenceSession Rent(int capacity)
    {
        lock (_kept)
        {
            int best = -1;
            for (int i = 0; i < _kept.Count; i++)
                if (_kept[i].AllocatedPositions <= capacity && (best < 0 || _kept[i].AllocatedPositions > _kept[best].AllocatedPositions))
                    best = i;
            if (best >= 0)
            {
                var session = _kept[best];
                _kept.RemoveAt(best);
                _bytes -= session.AllocatedKvBytes;
                session.Recycle(capacity);
                return session;
            }
        }
        return model.CreateSession(capacity);
    }

    /// <summary>Keeps a finished session (no longer stepped by anyone) unless the pool is full.</summary>
    public void Return(InferenceSession session)
    {
        if (session.Model != model) throw new ArgumentException("a session of another model", nameof(session));
        lock (_kept)
        {
            if (_kept.Count >= MaxSessions || _kept.Contains(session)) return;
            _kept.Add(session);
            _bytes += session.AllocatedKvBytes;
        }
    }

    /// <summary>Drops kept sessions, the largest first, until they hold at most <paramref name="maxBytes"/>.</summary>
    public void Trim(long maxBytes)
    {
        lock (_kept)
        {
            while (_bytes > Math.Max(0, maxBytes) && _kept.Count > 0)
            {
                int largest = 0;
                for (int i = 1; i < _kept.Count; i++)
                    if (_kept[i].AllocatedKvBytes > _kept[largest].AllocatedKvBytes) largest = i;
                _bytes -= _kept[largest].AllocatedKvBytes;
                _kept.RemoveAt(largest);
            }
        }
    }
}
