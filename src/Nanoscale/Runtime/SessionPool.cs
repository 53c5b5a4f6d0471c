namespace Nanoscale.Runtime;

/// <summary>
/// Finished sequences' sessions kept for the next requests (the token factory's): a new request takes a kept session's
/// key/value arrays instead of allocating its own, so a server generating long answers does not leave every finished
/// request's cache (large arrays, freed only by full collections) for the collector; and a kept session that already
/// holds the beginning of the new prompt (the same system prompt, or the conversation so far: a chat client sends the
/// whole history with every turn) keeps those positions, so only the rest of the prompt runs (prompt caching, as
/// llama.cpp's server and vLLM's prefix caching do). At most <see cref="MaxSessions"/> are kept, the oldest returned
/// dropped first; a session is handed out only for a capacity at least its allocated positions, or cut to that capacity
/// when it holds at least <see cref="MinCutShared"/> of the prompt's tokens, so a request never holds more cache than a
/// new session of its capacity could grow to (what a KV budget counts); <see cref="Trim"/> drops kept sessions until
/// their bytes fit an allowance. It also keeps the shared beginnings (<see cref="KvPrefix"/>) that sessions read instead
/// of holding a copy each (<see cref="Share"/>, <see cref="FindPrefix"/>): every prefix a kept session reads is among
/// them, so <see cref="Bytes"/> counts what the kept caches hold. Thread-safe.
/// </summary>
internal sealed class SessionPool(LlamaModel model, int maxSessions)
{
    private readonly List<Kept> _kept = []; // oldest returned first
    private readonly List<KvPrefix> _prefixes = []; // least recently used first
    private readonly List<InferenceSession> _spares = []; // dropped kept sessions, emptied: their arrays serve new sessions
    private long _bytes; // the kept sessions' own rows and the spares'

    /// <summary>A kept session and the tokens whose keys and values its positions hold, in order (empty: none known).</summary>
    private sealed record Kept(InferenceSession Session, int[] Tokens);

    public int MaxSessions { get; } = maxSessions;

    /// <summary>Prompt tokens a kept session larger than a request's capacity must hold for it to be cut to that capacity
    /// and handed out (cutting copies its arrays; for a token or two, a fitting or new session serves as well and the
    /// large one stays for a larger request).</summary>
    internal const int MinCutShared = 16;

    /// <summary>Prompt tokens a kept cache must share with a prompt to serve it at all (a chat template's first few
    /// markers are shared by every conversation).</summary>
    internal const int MinTakeShared = 8;

    /// <summary>Sessions kept now.</summary>
    public int Count
    {
        get { lock (_kept) return _kept.Count; }
    }

    /// <summary>
    /// Dropped kept sessions held empty for the next new ones (at most <see cref="MaxSessions"/>; counted in
    /// <see cref="Bytes"/>, the first to go in <see cref="Trim"/>): a request that needs a session of its own takes one's
    /// key/value arrays instead of allocating them. Fresh arrays are fresh pages, and a page's first touch is a fault:
    /// on the 2-core VM of the twenty-sixth session each new session of the SmolLM2-shaped model (3.4 MB of cache for
    /// 73 positions) took 10–40 ms in faults, sixteen of them one after another on the factory's thread before a burst's
    /// first step (`serve-load --streams 16`: ~13,700 page faults a burst, time to the first text 130–290 ms).
    /// </summary>
    public int Spares
    {
        get { lock (_kept) return _spares.Count; }
    }

    /// <summary>Key/value bytes the kept sessions hold: their own rows, the spares' (<see cref="Spares"/>), and the
    /// shared beginnings no admitted request counts (<see cref="PinPrefix"/>).</summary>
    public long Bytes
    {
        get { lock (_kept) return KeptBytes(); }
    }

    private long KeptBytes()
    {
        long bytes = _bytes;
        foreach (var prefix in _prefixes)
            if (prefix.Pins == 0) bytes += prefix.Bytes;
        return bytes;
    }

    /// <summary>Shared beginnings kept now, and their bytes.</summary>
    public (int Count, long Bytes) Prefixes
    {
        get { lock (_kept) return (_prefixes.Count, _prefixes.Sum(p => p.Bytes)); }
    }

    /// <summary>Positions a beginning must hold (whole granules) to be shared by reference rather than copied: below
    /// that a copy costs about as little and keeps nothing alive.</summary>
    internal const int MinSharedPositions = 32;

    /// <summary>Shared beginnings kept at most beyond those in use (read by a kept session or counted by a request).</summary>
    private int MaxPrefixes => Math.Max(2, 2 * MaxSessions);

    /// <summary>The kept shared beginning holding the longest beginning of <paramref name="prompt"/> — all but its last
    /// token at most, within <paramref name="capacity"/> less one position, at least <see cref="MinSharedPositions"/>,
    /// whole granules — or null: the kept one itself when the prompt begins with all of it, else a view of the part it
    /// shares (<see cref="KvPrefix.View"/>).</summary>
    public KvPrefix? FindPrefix(ReadOnlySpan<int> prompt, int capacity)
    {
        lock (_kept) return Find(prompt, capacity);
    }

    // All but the prompt's last token at most, and room for one more position.
    private KvPrefix? Find(ReadOnlySpan<int> prompt, int capacity) =>
        Longest(prompt, Math.Min(prompt.Length - 1, capacity - 1)) is (KvPrefix root, int shared) ? Serve(root, shared) : null;

    /// <summary>The kept shared beginning that shares the most whole granules (at least <see cref="MinSharedPositions"/>,
    /// at most <paramref name="limit"/> positions) with <paramref name="tokens"/>, and how many.</summary>
    private (KvPrefix? Root, int Shared) Longest(ReadOnlySpan<int> tokens, int limit)
    {
        (KvPrefix? best, int most) = (null, 0);
        foreach (var prefix in _prefixes)
        {
            int shared = KvPrefix.Whole(Math.Min(prefix.Tokens.AsSpan().CommonPrefixLength(tokens), limit));
            if (shared >= MinSharedPositions && shared > most) (best, most) = (prefix, shared);
        }
        return (best, most);
    }

    /// <summary>The first <paramref name="shared"/> positions of a kept <paramref name="root"/>: itself when that is all
    /// of it, else a view; the root is now the most recently used.</summary>
    private KvPrefix Serve(KvPrefix root, int shared)
    {
        Keep(root);
        return shared == root.Positions ? root : root.View(shared);
    }

    /// <summary><see cref="FindPrefix"/>, counted by an admitted request until <see cref="UnpinPrefix"/>: it (its root)
    /// is not dropped meanwhile, and it leaves <see cref="Bytes"/> (the request's KV budget counts it).
    /// <paramref name="first"/>: no other request counted it.</summary>
    public KvPrefix? PinPrefix(ReadOnlySpan<int> prompt, int capacity, out bool first)
    {
        lock (_kept)
        {
            var prefix = Find(prompt, capacity);
            first = prefix is not null && Pin(prefix);
            return prefix;
        }
    }

    /// <summary>Counts <paramref name="prefix"/> (which a running request's session has come to read) for one more
    /// admitted request, as <see cref="PinPrefix"/> does; true when no other request counted it.</summary>
    public bool Pin(KvPrefix prefix)
    {
        if (prefix.Model != model) throw new ArgumentException("a shared beginning of another model", nameof(prefix));
        lock (_kept)
        {
            if (!_prefixes.Contains(prefix.Root)) Keep(prefix.Root);
            return ++prefix.Root.Pins == 1;
        }
    }

    /// <summary>Ends one request's count of <paramref name="prefix"/>; true when no request counts it any more.</summary>
    public bool UnpinPrefix(KvPrefix prefix)
    {
        lock (_kept)
        {
            if (prefix.Root.Pins <= 0) throw new InvalidOperationException("a shared beginning unpinned more often than pinned");
            return --prefix.Root.Pins == 0;
        }
    }

    /// <summary>
    /// The first <paramref name="positions"/> of <paramref name="session"/> (which holds <paramref name="tokens"/> there)
    /// as a kept shared beginning, rounded down to whole granules; null when that is under
    /// <see cref="MinSharedPositions"/>. The kept one sharing the most of those positions serves (itself, or a view of
    /// what it shares) when it shares all but fewer than <see cref="MinSharedPositions"/> of them (the session then reads
    /// it instead of its own rows where it read none), else the session's own beginning becomes one
    /// (<see cref="InferenceSession.ShareBeginning"/>). Another
    /// session that copies the session's beginning reads it instead (<see cref="InferenceSession.CopyPrefix"/>).
    /// </summary>
    public KvPrefix? Share(InferenceSession session, ReadOnlySpan<int> tokens, int positions)
    {
        if (session.Model != model) throw new ArgumentException("a session of another model", nameof(session));
        int n = KvPrefix.Whole(Math.Min(positions, Math.Min(tokens.Length, session.Length)));
        if (n < MinSharedPositions) return null;
        lock (_kept)
        {
            long before = session.AllocatedKvBytes;
            // A kept one sharing all but a few of these positions serves (nothing copied but the few, by whoever reads
            // it): prompts that share a system message and a word or two more, or less, would otherwise make a copy each.
            KvPrefix prefix;
            if (Longest(tokens, n) is (KvPrefix root, int shared) && n - shared < MinSharedPositions)
            {
                prefix = Serve(root, shared);
                if (session.Prefix is null) session.Rebase(prefix); // one that reads a prefix keeps it (a budget may count it)
            }
            else
            {
                prefix = session.ShareBeginning(tokens[..n].ToArray());
                Keep(prefix);
            }
            // A kept session that now reads the prefix holds fewer bytes of its own.
            if (_kept.Exists(k => k.Session == session)) _bytes += session.AllocatedKvBytes - before;
            return prefix;
        }
    }

    /// <summary>Adds a shared beginning (the most recently used), dropping the least recently used ones no one needs
    /// while there are more than <see cref="MaxPrefixes"/>.</summary>
    private void Keep(KvPrefix prefix)
    {
        _prefixes.Remove(prefix);
        _prefixes.Add(prefix);
        DropSurplus();
    }

    private void DropSurplus()
    {
        for (int i = 0; i < _prefixes.Count && _prefixes.Count > MaxPrefixes; i++)
            if (Droppable(_prefixes[i])) _prefixes.RemoveAt(i--);
    }

    /// <summary>No admitted request counts it and no kept session reads it (sessions still running that read it keep it
    /// alive; their requests' budget holds its positions).</summary>
    private bool Droppable(KvPrefix prefix) => prefix.Pins == 0 && !_kept.Exists(k => k.Session.Prefix?.Root == prefix);

    /// <summary>An empty session of <paramref name="capacity"/> positions: the kept one with the most allocated positions
    /// that are not more than <paramref name="capacity"/>, else a new one.</summary>
    public InferenceSession Rent(int capacity) => Rent(capacity, [], out _);

    /// <summary>A session of <paramref name="capacity"/> positions for <paramref name="prompt"/>: of the kept ones, the
    /// one holding the longest beginning of the prompt (all but its last token at most: the prompt's logits come from
    /// running at least one) — among equals, one whose allocated positions fit the capacity, the most of them — keeping
    /// those <paramref name="reused"/> positions and forgetting the rest. A kept session whose allocated positions exceed
    /// the capacity is taken only when it holds at least <see cref="MinCutShared"/> prompt tokens (it is cut to the
    /// capacity). When that cache holds <see cref="MinCutShared"/> or more tokens beyond the shared ones, the shared
    /// positions are copied into a new session instead and the cache is kept. When it shares fewer than
    /// <see cref="MinTakeShared"/>, a new session while the pool is not full (the kept caches stay for the prompts that
    /// share more), else the least recently returned kept one that fits, empty. Else a new, empty one.</summary>
    public InferenceSession Rent(int capacity, ReadOnlySpan<int> prompt, out int reused)
    {
        reused = 0;
        lock (_kept)
        {
            int best = -1, bestShared = 0;
            for (int i = 0; i < _kept.Count; i++)
            {
                var kept = _kept[i];
                int shared = Math.Min(kept.Tokens.AsSpan().CommonPrefixLength(prompt), Math.Max(0, Math.Min(prompt.Length - 1, capacity - 1)));
                bool fits = kept.Session.AllocatedPositions <= capacity;
                // A cache larger than the capacity serves by a copy of its beginning, or cut when it shares enough.
                if (!fits && shared < (prompt.IsEmpty ? MinCutShared : MinTakeShared)) continue;
                if (best < 0 || shared > bestShared || (shared == bestShared && Better(kept.Session, _kept[best].Session)))
                    (best, bestShared) = (i, shared);
            }
            if (!prompt.IsEmpty && best >= 0 && bestShared >= MinTakeShared && _kept[best].Tokens.Length - bestShared >= MinCutShared)
            {
                // The kept cache holds much more than this prompt shares (another conversation going on from a common
                // system message): the shared beginning is copied into a new session and the cache stays for its own.
                var kept = _kept[best];
                _kept.RemoveAt(best);
                _kept.Add(kept); // now the most recently used
                var copy = TakeSpare(capacity) ?? model.CreateSession(capacity);
                // Held once: the kept cache's beginning becomes a shared one (when it is long enough) that both read.
                var prefix = Share(kept.Session, kept.Tokens, bestShared);
                copy.CopyPrefix(kept.Session, bestShared, prefix);
                reused = bestShared;
                return copy;
            }
            // A prompt that shares little with every kept cache does not take one away from the prompts that would:
            // a spare or new session while the pool has room or a spare fits, else the least recently returned one
            // that fits.
            bool cut = best >= 0 && _kept[best].Session.AllocatedPositions > capacity;
            if (!prompt.IsEmpty && (bestShared < MinTakeShared || cut && bestShared < MinCutShared))
            {
                bestShared = 0;
                best = _kept.Count < MaxSessions || Spare(capacity) >= 0 ? -1 : _kept.FindIndex(k => k.Session.AllocatedPositions <= capacity);
            }
            if (best >= 0)
            {
                var session = _kept[best].Session;
                _kept.RemoveAt(best);
                _bytes -= session.AllocatedKvBytes;
                session.Recycle(capacity, keep: bestShared);
                reused = bestShared;
                return session;
            }
            if (TakeSpare(capacity) is { } spare) return spare;
        }
        return model.CreateSession(capacity);

        // Between two sessions holding as much of the prompt: one that fits the capacity (not cut), the larger of those.
        bool Better(InferenceSession a, InferenceSession b)
        {
            bool aFits = a.AllocatedPositions <= capacity, bFits = b.AllocatedPositions <= capacity;
            return aFits != bFits ? aFits : aFits ? a.AllocatedPositions > b.AllocatedPositions : a.AllocatedPositions < b.AllocatedPositions;
        }
    }

    /// <summary>The spare whose allocated positions come nearest what a new session of <paramref name="capacity"/>
    /// starts with (<see cref="InferenceSession.InitialPositions"/> at most) without exceeding the capacity: the smallest
    /// of those holding as many, else the largest; −1 when none fits. Under the lock.</summary>
    private int Spare(int capacity)
    {
        int want = Math.Min(capacity, InferenceSession.InitialPositions), best = -1;
        for (int i = 0; i < _spares.Count; i++)
        {
            int positions = _spares[i].AllocatedPositions;
            if (positions > capacity) continue;
            if (best < 0) { best = i; continue; }
            int current = _spares[best].AllocatedPositions;
            bool enough = positions >= want, currentEnough = current >= want;
            if (enough != currentEnough ? enough : enough ? positions < current : positions > current) best = i;
        }
        return best;
    }

    /// <summary>A spare (<see cref="Spare"/>) made a fresh session of <paramref name="capacity"/> positions, or null. Under the lock.</summary>
    private InferenceSession? TakeSpare(int capacity)
    {
        int i = Spare(capacity);
        if (i < 0) return null;
        var session = _spares[i];
        _spares.RemoveAt(i);
        _bytes -= session.AllocatedKvBytes;
        session.Recycle(capacity);
        return session;
    }

    /// <summary>A kept session dropped from the pool: emptied and held as a spare while there are fewer than
    /// <see cref="MaxSessions"/> (one that reads a shared beginning is let go: its own rows hold only what follows it).
    /// Under the lock; its bytes have left the kept count.</summary>
    private void Retire(InferenceSession session)
    {
        if (session.Prefix is not null || _spares.Count >= MaxSessions) return;
        session.Truncate(0);
        _spares.Add(session);
        _bytes += session.AllocatedKvBytes;
    }

    /// <summary>Keeps a finished session (no longer stepped by anyone), dropping the oldest kept one when the pool is
    /// full (it becomes a spare, <see cref="Spares"/>). <paramref name="held"/>: the tokens its positions hold (one per position, <see cref="InferenceSession.Length"/>
    /// of them), so a later prompt that begins with them reuses them; null when they are not known.</summary>
    public void Return(InferenceSession session, int[]? held = null)
    {
        if (session.Model != model) throw new ArgumentException("a session of another model", nameof(session));
        if (held is not null && held.Length != session.Length)
            throw new ArgumentException($"{held.Length} tokens for a session holding {session.Length} positions", nameof(held));
        if (MaxSessions < 1) return;
        lock (_kept)
        {
            if (_kept.Exists(k => k.Session == session)) return;
            if (_kept.Count >= MaxSessions)
            {
                var oldest = _kept[0].Session;
                _bytes -= oldest.AllocatedKvBytes;
                _kept.RemoveAt(0);
                Retire(oldest);
                DropSurplus(); // what the dropped one read may go now
            }
            _kept.Add(new Kept(session, held ?? []));
            _bytes += session.AllocatedKvBytes;
            if (session.Prefix?.Root is { } prefix && !_prefixes.Contains(prefix)) Keep(prefix); // counted while a kept session reads it
        }
    }

    /// <summary>Drops spares (they hold no cache), then kept sessions and shared beginnings no one needs, the largest
    /// first, until they hold at most <paramref name="maxBytes"/> (<see cref="Bytes"/>) or nothing more can go.</summary>
    public void Trim(long maxBytes)
    {
        lock (_kept)
        {
            while (_spares.Count > 0 && KeptBytes() > Math.Max(0, maxBytes))
            {
                _bytes -= _spares[^1].AllocatedKvBytes;
                _spares.RemoveAt(_spares.Count - 1);
            }
            while (KeptBytes() > Math.Max(0, maxBytes))
            {
                int session = -1, prefix = -1;
                for (int i = 0; i < _kept.Count; i++)
                    if (session < 0 || _kept[i].Session.AllocatedKvBytes > _kept[session].Session.AllocatedKvBytes) session = i;
                for (int i = 0; i < _prefixes.Count; i++)
                    if (Droppable(_prefixes[i]) && (prefix < 0 || _prefixes[i].Bytes > _prefixes[prefix].Bytes)) prefix = i;
                if (prefix >= 0 && (session < 0 || _prefixes[prefix].Bytes >= _kept[session].Session.AllocatedKvBytes)) _prefixes.RemoveAt(prefix);
                else if (session >= 0)
                {
                    _bytes -= _kept[session].Session.AllocatedKvBytes;
                    _kept.RemoveAt(session);
                }
                else break; // what is left is read by running sessions
            }
        }
    }
}
