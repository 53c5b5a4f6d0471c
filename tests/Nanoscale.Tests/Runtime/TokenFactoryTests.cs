using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// Continuous batching: several sequences stepped in one pass over the weights give each sequence what it gets alone,
/// and requests that join and leave at token boundaries come out as their solo generations.
/// </summary>
public class TokenFactoryTests
{
    private static readonly Lazy<(LlamaModel Model, ITokenizer Tokenizer)> Stories = new(() =>
    {
        var checkpoint = CheckpointLoader.Open(SharedData.Stories260K);
        return (LlamaModel.Load(checkpoint), Llama2cTokenizer.Load(SharedData.Tok512));
    });

    [Fact]
    public void SteppingSeveralSessionsTogetherEqualsSteppingEachAlone()
    {
        var (model, tokenizer) = Stories.Value;
        int vocab = model.Config.VocabSize;
        string[] prompts = ["Once upon a time", "The cat", "Lily and Ben went to the park and"];
        var together = prompts.Select(p => model.CreateSession(64)).ToList();
        var alone = prompts.Select(p => model.CreateSession(64)).ToList();
        var next = new int[prompts.Length];
        for (int i = 0; i < prompts.Length; i++)
        {
            var ids = tokenizer.Encode(prompts[i], addBos: true);
            var logits = new float[ids.Length * vocab];
            together[i].Forward(ids, logits);
            alone[i].Forward(ids, new float[ids.Length * vocab]);
            next[i] = Kernels.ArgMax(logits.AsSpan((ids.Length - 1) * vocab, vocab));
        }
        for (int step = 0; step < 5; step++) // sequences at different positions, each step one pass for all three
        {
            var batch = new float[prompts.Length * vocab];
            InferenceSession.StepMany(together, next, batch);
            for (int i = 0; i < prompts.Length; i++)
            {
                var single = alone[i].Step(next[i]);
                var row = batch.AsSpan(i * vocab, vocab);
                double scale = single.Max(Math.Abs);
                for (int v = 0; v < vocab; v++) Assert.True(Math.Abs(row[v] - single[v]) <= 1e-5 * scale, $"sequence {i}, step {step}, token {v}");
                next[i] = Kernels.ArgMax(row);
            }
        }
        Assert.All(together, s => Assert.Equal(alone[together.IndexOf(s)].Length, s.Length));
    }

    /// <summary>Three sequences stepped together (on two threads) cross the first allocation of their caches in the
    /// same step and still give what each gives alone, before and after the caches grow.</summary>
    [Fact]
    public void SequencesWhoseCachesGrowInTheSameStepEqualEachAlone()
    {
        var (model, _) = Stories.Value;
        int vocab = model.Config.VocabSize, start = InferenceSession.InitialPositions - 2;
        var parallel = LlamaModel.Load(CheckpointLoader.Open(SharedData.Stories260K), new RuntimeOptions { Parallelism = new(2), MinParallelMultiplyAdds = 0 });
        var together = Enumerable.Range(0, 3).Select(_ => parallel.CreateSession(512)).ToList();
        var alone = Enumerable.Range(0, 3).Select(_ => model.CreateSession(512)).ToList();
        for (int i = 0; i < 3; i++)
        {
            int[] prompt = [.. Enumerable.Range(0, start).Select(p => 1 + (p * (i + 3)) % 400)];
            together[i].Forward(prompt, new float[prompt.Length * vocab]);
            alone[i].Forward(prompt, new float[prompt.Length * vocab]);
        }
        int[] next = [5, 17, 300];
        for (int step = 0; step < 4; step++)
        {
            var batch = new float[3 * vocab];
            InferenceSession.StepMany(together, next, batch);
            for (int i = 0; i < 3; i++)
            {
                var single = alone[i].Step(next[i]);
                var row = batch.AsSpan(i * vocab, vocab);
                double scale = single.Max(Math.Abs);
                for (int v = 0; v < vocab; v++) Assert.True(Math.Abs(row[v] - single[v]) <= 1e-5 * scale, $"sequence {i}, step {step}, token {v}");
                next[i] = Kernels.ArgMax(row);
            }
            Assert.All(together, s => Assert.Equal(s.Length <= InferenceSession.InitialPositions ? InferenceSession.InitialPositions : 512, s.AllocatedPositions));
        }
    }

    /// <summary>Prompt chunks and steps in one pass (<see cref="InferenceSession.ForwardMany"/>): a whole prompt, the
    /// middle of another and a one-token step, side by side, give each sequence the logits of its last row that it gets
    /// alone, and leave each cache as running alone would (the next steps agree too).</summary>
    [Fact]
    public void PromptChunksAndStepsInOnePassEqualEachAlone()
    {
        var (model, tokenizer) = Stories.Value;
        int vocab = model.Config.VocabSize;
        int[] a = tokenizer.Encode("Once upon a time there was a little girl", addBos: true);
        int[] b = tokenizer.Encode("The cat sat on the mat and looked at the bird", addBos: true);
        int[] c = tokenizer.Encode("Lily", addBos: true);
        var together = Enumerable.Range(0, 3).Select(_ => model.CreateSession(64)).ToList();
        var alone = Enumerable.Range(0, 3).Select(_ => model.CreateSession(64)).ToList();
        // b's first five tokens and c's prompt ran before; this pass carries a's whole prompt, the rest of b and c's next token.
        together[1].Forward(b[..5], new float[5 * vocab]);
        alone[1].Forward(b[..5], new float[5 * vocab]);
        together[2].Forward(c, new float[c.Length * vocab]);
        var cLogits = new float[c.Length * vocab];
        alone[2].Forward(c, cLogits);
        int cNext = Kernels.ArgMax(cLogits.AsSpan((c.Length - 1) * vocab, vocab));
        int[] counts = [a.Length, b.Length - 5, 1];
        var batch = new float[3 * vocab];
        InferenceSession.ForwardMany(together, counts, [.. a, .. b[5..], cNext], batch);
        var expected = new float[3][];
        var aLogits = new float[a.Length * vocab];
        alone[0].Forward(a, aLogits);
        expected[0] = aLogits[((a.Length - 1) * vocab)..];
        var bLogits = new float[(b.Length - 5) * vocab];
        alone[1].Forward(b[5..], bLogits);
        expected[1] = bLogits[((b.Length - 6) * vocab)..];
        expected[2] = alone[2].Step(cNext);
        for (int step = 0; ; step++)
        {
            for (int i = 0; i < 3; i++)
            {
                double scale = expected[i].Max(Math.Abs);
                for (int v = 0; v < vocab; v++)
                    Assert.True(Math.Abs(batch[i * vocab + v] - expected[i][v]) <= 1e-5 * scale, $"sequence {i}, step {step}, token {v}");
                Assert.Equal(alone[i].Length, together[i].Length);
            }
            if (step == 3) break;
            int[] next = [.. Enumerable.Range(0, 3).Select(i => Kernels.ArgMax(batch.AsSpan(i * vocab, vocab)))];
            InferenceSession.StepMany(together, next, batch);
            for (int i = 0; i < 3; i++) expected[i] = alone[i].Step(next[i]);
        }
        Assert.Throws<ArgumentException>(() => InferenceSession.ForwardMany(together, [1, 0, 1], [1, 2], new float[3 * vocab]));
        Assert.Throws<InvalidOperationException>(() => InferenceSession.ForwardMany(together, [1, 1, 64], [.. Enumerable.Repeat(1, 66)], new float[3 * vocab]));
    }

    [Fact]
    public async Task ConcurrentRequestsComeOutAsTheirSoloGenerations()
    {
        var (model, tokenizer) = Stories.Value;
        using var factory = new TokenFactory(model, tokenizer, maxBatch: 4);
        var requests = new (string Prompt, int Tokens, SamplingOptions Sampling)[]
        {
            ("Once upon a time", 40, new SamplingOptions()),
            ("The dog", 25, new SamplingOptions { Temperature = 0.9, Seed = 5 }),
            ("Lily", 60, new SamplingOptions { Temperature = 0.7, TopP = 0.9, Seed = 11 }),
            ("One day", 10, new SamplingOptions { StopStrings = ["."] }),
            ("Tom had a", 30, new SamplingOptions()),
        };
        var tasks = requests.Select(r => factory.SubmitAsync(tokenizer.Encode(r.Prompt, addBos: true), r.Tokens, r.Sampling)).ToArray();
        var results = await Task.WhenAll(tasks);
        for (int i = 0; i < requests.Length; i++)
        {
            var solo = Generation.Generate(model, tokenizer, requests[i].Prompt, requests[i].Tokens, requests[i].Sampling);
            Assert.Equal(solo.Text, results[i].Text);
            Assert.Equal(solo.Stop, results[i].Stop);
        }
        Assert.InRange(factory.LargestBatch, 2, 4); // they did share steps, and never more than the batch allows
    }

    /// <summary>A prompt longer than a prefill chunk joins a running stream: it runs a chunk between steps, and both come
    /// out as their solo generations (chunks of whole eights give the numbers of one window).</summary>
    [Fact]
    public async Task ALongPromptIsRunInChunksBetweenSteps()
    {
        var (model, tokenizer) = Stories.Value;
        using var factory = new TokenFactory(model, tokenizer, maxBatch: 4);
        string story = Perplexity.SplitDocuments(File.ReadAllText(SharedData.TinyStoriesText), "<|endoftext|>")[0];
        int[] longPrompt = tokenizer.Encode(story, addBos: true)[..(TokenFactory.PrefillChunk * 2 + 37)];
        // The running stream's first text waits until the long prompt is submitted, so it is surely still running
        // when that prompt joins (however slow this machine is at the moment).
        using var submitted = new ManualResetEventSlim();
        var running = factory.SubmitAsync(tokenizer.Encode("Once upon a time", addBos: true), 80, new SamplingOptions(),
            onText: _ => submitted.Wait(TimeSpan.FromSeconds(30)));
        var joining = factory.SubmitAsync(longPrompt, 20, new SamplingOptions());
        submitted.Set();
        var results = await Task.WhenAll(running, joining);
        Assert.Equal(Generation.Generate(model, tokenizer, "Once upon a time", 80, new SamplingOptions()).Text, results[0].Text);
        var solo = Generation.Generate(model, tokenizer, longPrompt, 20, new SamplingOptions());
        Assert.Equal(solo.Tokens, results[1].Tokens);
        Assert.Equal(2, factory.LargestBatch); // the joined request stepped with the running one
    }

    /// <summary>Finished requests' sessions are kept and handed to the next requests: a second round of requests
    /// (longer and shorter, with a cancelled one among the first) reuses them — caches that grew past their first
    /// allocation included — and every request still comes out as its solo generation, so nothing a recycled cache
    /// held reaches a new sequence. The pool never keeps more sessions than the batch.</summary>
    [Fact]
    public async Task FinishedSessionsAreReusedAndChangeNothing()
    {
        var (model, tokenizer) = Stories.Value;
        using var factory = new TokenFactory(model, tokenizer, maxBatch: 3);
        var prompts = new[] { "Once upon a time", "The dog", "Lily" };
        using var cancel = new CancellationTokenSource();
        var first = prompts.Select((p, i) => factory.SubmitAsync(tokenizer.Encode(p, addBos: true), i == 0 ? 300 : 20, new SamplingOptions())).ToList();
        var doomed = factory.SubmitAsync(tokenizer.Encode("Tom", addBos: true), 100, new SamplingOptions(), _ => cancel.Cancel(), cancel.Token);
        await Task.WhenAll(first);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => doomed);
        await WaitUntil(() => factory.Active == 0);
        long kept = factory.PooledKvBytes;
        Assert.True(kept > 0, "finished sessions were not kept");
        Assert.True(kept <= 3 * model.Options.KvCacheBytes(2L * model.Config.Layers * model.Config.MaxSeqLen * model.Config.KvDim));

        foreach (var (prompt, tokens) in new[] { ("The cat sat", 280), ("Once upon a time", 30), ("A big", 5) })
        {
            var result = await factory.SubmitAsync(tokenizer.Encode(prompt, addBos: true), tokens, new SamplingOptions());
            Assert.Equal(Generation.Greedy(model, tokenizer, prompt, tokens).Text, result.Text);
        }
        await WaitUntil(() => factory.Active == 0);
        Assert.True(factory.PooledKvBytes > 0);
        factory.TrimPool(0);
        Assert.Equal(0, factory.PooledKvBytes);
    }

    private static async Task WaitUntil(Func<bool> condition)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!condition() && clock.Elapsed < TimeSpan.FromSeconds(10)) await Task.Delay(10);
        Assert.True(condition());
    }

    /// <summary>The pool itself: it hands back a kept session empty and with the new capacity only when its cache is
    /// not larger than that capacity, keeps at most its count, trims the largest first, refuses another model's
    /// sessions; a recycled session computes what a new one does, bit for bit.</summary>
    [Fact]
    public void ThePoolHandsOutOnlyCachesThatFit()
    {
        var (model, tokenizer) = Stories.Value;
        int vocab = model.Config.VocabSize;
        var pool = new SessionPool(model, maxSessions: 2);
        var a = pool.Rent(300);
        Assert.Equal(300, a.Capacity);
        var used = new float[10 * vocab];
        a.Forward([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], used);
        pool.Return(a);
        Assert.Equal(1, pool.Count);
        Assert.Equal(a.AllocatedKvBytes, pool.Bytes);
        var small = pool.Rent(100); // a's cache holds 256 positions: more than 100, so not handed out
        Assert.NotSame(a, small);
        var again = pool.Rent(512);
        Assert.Same(a, again);
        Assert.Equal(0, again.Length);
        Assert.Equal(512, again.Capacity);
        Assert.Equal(0, pool.Bytes);

        var ids = tokenizer.Encode("Once upon a time there was", addBos: true);
        var recycled = new float[ids.Length * vocab];
        again.Forward(ids, recycled);
        var fresh = new float[ids.Length * vocab];
        model.CreateSession(512).Forward(ids, fresh);
        Assert.Equal(fresh, recycled);

        pool.Return(again);
        pool.Return(small);
        var newest = model.CreateSession(64);
        pool.Return(newest); // full: the oldest kept (again) goes, to the spares
        Assert.Equal((2, 1), (pool.Count, pool.Spares));
        Assert.Equal(small.AllocatedKvBytes + newest.AllocatedKvBytes + again.AllocatedKvBytes, pool.Bytes);
        pool.Trim(small.AllocatedKvBytes + newest.AllocatedKvBytes); // the spare goes first
        Assert.Equal((2, 0), (pool.Count, pool.Spares));
        pool.Trim(newest.AllocatedKvBytes);
        Assert.Equal(1, pool.Count);
        Assert.Same(newest, pool.Rent(100));
        Assert.Throws<ArgumentException>(() => pool.Return(again, held: [1, 2])); // it holds ids.Length positions
        var other = LlamaModel.Load(CheckpointLoader.Open(SharedData.Stories260K));
        Assert.Throws<ArgumentException>(() => pool.Return(other.CreateSession(8)));
    }

    /// <summary>A kept session dropped from a full pool is held empty as a spare (at most the pool's count of them, counted
    /// in its bytes) and becomes the next session a request needs of its own — the one that fits the capacity nearest
    /// a new session's first allocation, never one larger than the capacity — computing what a new session does, also
    /// when a kept cache's beginning is copied into it; trimming drops the spares first.</summary>
    [Fact]
    public void DroppedSessionsServeTheNextNewOnesInsteadOfNewArrays()
    {
        var (model, tokenizer) = Stories.Value;
        int vocab = model.Config.VocabSize;
        var pool = new SessionPool(model, maxSessions: 2);
        int[] story = tokenizer.Encode("Once upon a time there was a little girl", addBos: true);
        var sessions = new[] { 100, 40, 60, 300 }.Select(c => model.CreateSession(c)).ToArray();
        foreach (var s in sessions) s.Forward(story, new float[story.Length * vocab]);
        foreach (var s in sessions) pool.Return(s, held: story);
        // Kept: the last two; spares: the first two, emptied.
        Assert.Equal((2, 2), (pool.Count, pool.Spares));
        Assert.Equal(sessions.Sum(s => s.AllocatedKvBytes), pool.Bytes);
        Assert.Equal((0, 0), (sessions[0].Length, sessions[1].Length));
        // A prompt that shares nothing, the pool full: a spare, not a kept cache — the one nearest a new session's 256
        // positions without exceeding the capacity (100 of 100; for 50, the 40).
        int[] other = tokenizer.Encode("The dog ran", addBos: true);
        var a = pool.Rent(100, other, out int reused);
        Assert.Same(sessions[0], a);
        Assert.Equal((0, 100, 2, 1), (reused, a.Capacity, pool.Count, pool.Spares));
        var b = pool.Rent(50, other, out _);
        Assert.Same(sessions[1], b);
        var c = pool.Rent(30, other, out _); // no spare fits 30 positions, and neither kept cache: a new session
        Assert.DoesNotContain(c, sessions);
        var logits = new float[other.Length * vocab];
        b.Forward(other, logits);
        var fresh = new float[other.Length * vocab];
        model.CreateSession(50).Forward(other, fresh);
        Assert.Equal(fresh, logits);
        // A prompt sharing a kept cache's beginning, that cache holding much more: the beginning is copied into a spare.
        pool.Return(a, held: []); // full: the oldest kept (sessions[2], 60 positions) becomes a spare
        int[] longer = [.. story, .. tokenizer.Encode(" named Lily who liked to play in the park with her friends every day", addBos: false)];
        var holder = model.CreateSession(100);
        holder.Forward(longer, new float[longer.Length * vocab]);
        pool.Return(holder, held: longer); // full: sessions[3] (256 positions) becomes a spare
        Assert.Equal(2, pool.Spares);
        int[] prompt = [.. story, .. tokenizer.Encode(" who", addBos: false)];
        int shared = prompt.AsSpan().CommonPrefixLength(longer);
        Assert.True(shared >= story.Length && longer.Length - shared >= SessionPool.MinCutShared);
        var copy = pool.Rent(80, prompt, out reused);
        Assert.Same(sessions[2], copy);
        Assert.Equal((shared, shared, 1), (reused, copy.Length, pool.Spares));
        var rest = new float[(prompt.Length - reused) * vocab];
        copy.Forward(prompt.AsSpan(reused), rest);
        var whole = new float[prompt.Length * vocab];
        model.CreateSession(80).Forward(prompt, whole);
        double scale = whole.Max(Math.Abs);
        var wanted = whole.AsSpan(reused * vocab);
        for (int i = 0; i < rest.Length; i++) Assert.True(Math.Abs(rest[i] - wanted[i]) <= 1e-5 * scale, $"logit {i}");
        pool.Trim(0);
        Assert.Equal((0, 0, 0L), (pool.Count, pool.Spares, pool.Bytes));
    }

    /// <summary>A kept session remembers the tokens its positions hold: a prompt that begins with them gets that session
    /// with those positions kept (all but the prompt's last token at most, which must run for its logits), the rest runs
    /// on them, and the logits are a fresh session's; the longest shared beginning wins over a larger cache.</summary>
    [Fact]
    public void ThePoolHandsBackTheSessionHoldingThePromptsBeginning()
    {
        var (model, tokenizer) = Stories.Value;
        int vocab = model.Config.VocabSize;
        var pool = new SessionPool(model, maxSessions: 3);
        int[] story = tokenizer.Encode("Once upon a time there was a little girl", addBos: true);
        int[] other = tokenizer.Encode("The dog ran", addBos: true);
        var holder = model.CreateSession(64);
        holder.Forward(story, new float[story.Length * vocab]);
        pool.Return(holder, held: story);
        var larger = model.CreateSession(300);
        larger.Forward(other, new float[other.Length * vocab]);
        pool.Return(larger, held: other);

        int[] longer = [.. story, .. tokenizer.Encode(" named Lily", addBos: false)];
        var session = pool.Rent(300, longer, out int reused);
        Assert.Same(holder, session);
        Assert.Equal(story.Length, reused);
        Assert.Equal(story.Length, session.Length);
        Assert.Equal(300, session.Capacity);
        int rest = longer.Length - reused;
        var continued = new float[rest * vocab];
        session.Forward(longer.AsSpan(reused), continued);
        var fresh = new float[longer.Length * vocab];
        model.CreateSession(300).Forward(longer, fresh);
        var expected = fresh.AsSpan(reused * vocab);
        double scale = fresh.Max(Math.Abs);
        for (int i = 0; i < continued.Length; i++) Assert.True(Math.Abs(continued[i] - expected[i]) <= 1e-5 * scale, $"logit {i}");

        // The same prompt again: all but its last token are kept.
        pool.Return(session, held: longer);
        var same = pool.Rent(300, longer, out reused);
        Assert.Same(holder, same);
        Assert.Equal(longer.Length - 1, reused);
        // A prompt sharing only the BOS token with both takes neither while the pool has room (they stay for prompts
        // that share more), and the least recently returned one when it is full; no prompt: the larger, empty.
        pool.Return(same, held: longer[..^1]);
        var fresh2 = pool.Rent(300, tokenizer.Encode("Lily", addBos: true), out reused);
        Assert.True(fresh2 != holder && fresh2 != larger && reused == 0 && pool.Count == 2);
        pool.Return(fresh2, held: []);
        Assert.Equal(3, pool.Count);
        Assert.Same(larger, pool.Rent(300, tokenizer.Encode("Lily", addBos: true), out reused)); // full: the oldest (larger went back first)
        Assert.Equal(0, reused);
        Assert.Equal(0, pool.Rent(300).Length);

        // A cache larger than the request's capacity: handed out cut to it when it holds enough of the prompt (its
        // first positions kept and right), not for a shorter shared beginning.
        string story2 = Perplexity.SplitDocuments(File.ReadAllText(SharedData.TinyStoriesText), "<|endoftext|>")[0];
        int[] page = tokenizer.Encode(story2, addBos: true)[..(SessionPool.MinCutShared + 24)];
        var big = model.CreateSession(512);
        big.Forward(page, new float[page.Length * vocab]);
        Assert.Equal(InferenceSession.InitialPositions, big.AllocatedPositions);
        pool.Return(big, held: page);
        // A prompt sharing part of what it holds gets a copy of that part; the cache stays whole in the pool.
        int part = SessionPool.MinCutShared - 1;
        var partial = pool.Rent(page.Length + 10, page[..(part + 1)], out reused);
        Assert.NotSame(big, partial);
        Assert.Equal((part, part), (reused, partial.Length));
        int[] more = [.. page, .. tokenizer.Encode(" The end", addBos: false)];
        var cut = pool.Rent(more.Length + 4, more, out reused);
        Assert.Same(big, cut);
        Assert.Equal((page.Length, more.Length + 4, more.Length + 4), (reused, cut.AllocatedPositions, cut.Capacity));
        var tail = new float[(more.Length - reused) * vocab];
        cut.Forward(more.AsSpan(reused), tail);
        var whole = new float[more.Length * vocab];
        model.CreateSession(more.Length + 4).Forward(more, whole);
        scale = whole.Max(Math.Abs);
        var wanted = whole.AsSpan(reused * vocab);
        for (int i = 0; i < tail.Length; i++) Assert.True(Math.Abs(tail[i] - wanted[i]) <= 1e-5 * scale, $"cut session, logit {i}");
    }

    /// <summary>Prompt caching in the factory: a request whose prompt is a finished request's prompt and answer and more
    /// (a chat's next turn) runs only the new tokens, says so, and comes out as its solo generation; with the cache off,
    /// every prompt runs whole.</summary>
    [Fact]
    public async Task APromptThatBeginsAsAFinishedOneRunsOnlyTheRest()
    {
        var (model, tokenizer) = Stories.Value;
        foreach (bool cache in new[] { true, false })
        {
            using var factory = new TokenFactory(model, tokenizer, maxBatch: 2, promptCache: cache);
            Assert.Equal(cache, factory.PromptCache);
            var first = await factory.SubmitAsync(tokenizer.Encode("Once upon a time", addBos: true), 20, new SamplingOptions());
            Assert.Equal(0, first.CachedPromptTokens);
            int[] next = [.. first.Tokens, .. tokenizer.Encode(" Then the sun", addBos: false)];
            var second = await factory.SubmitAsync(next, 20, new SamplingOptions { Temperature = 0.8, Seed = 3 });
            Assert.Equal(cache ? first.Tokens.Length - 1 : 0, second.CachedPromptTokens); // the last token chosen never ran
            Assert.Equal(Generation.Generate(model, tokenizer, next, 20, new SamplingOptions { Temperature = 0.8, Seed = 3 }).Tokens, second.Tokens);
            var again = await factory.SubmitAsync(next, 5, new SamplingOptions());
            Assert.Equal(cache ? next.Length - 1 : 0, again.CachedPromptTokens);
            Assert.Equal(Generation.Generate(model, tokenizer, next, 5, new SamplingOptions()).Tokens, again.Tokens);
            Assert.Equal(second.CachedPromptTokens + again.CachedPromptTokens, factory.CachedPromptTokens);
        }
    }

    /// <summary>A session that copies another's first positions continues as the other does: the logits after them
    /// equal the source's own (every KV cache type: the stored bits are copied).</summary>
    [Theory]
    [InlineData(KvCacheType.F32)]
    [InlineData(KvCacheType.BF16)]
    [InlineData(KvCacheType.Q8)]
    [InlineData(KvCacheType.Q4)]
    public void ACopiedBeginningContinuesAsItsSource(KvCacheType kv)
    {
        var (_, tokenizer) = Stories.Value;
        var model = LlamaModel.Load(CheckpointLoader.Open(SharedData.Stories260K), new RuntimeOptions { KvCache = kv });
        int vocab = model.Config.VocabSize;
        int[] ids = tokenizer.Encode("Once upon a time there was a little girl named Lily. She loved to play outside in the sun", addBos: true);
        var source = model.CreateSession(300);
        source.Forward(ids[..20], new float[20 * vocab]);
        var expected = new float[(ids.Length - 20) * vocab];
        source.Forward(ids[20..], expected);
        var copy = model.CreateSession(64);
        copy.CopyPrefix(source, 20);
        Assert.Equal(20, copy.Length);
        var continued = new float[(ids.Length - 20) * vocab];
        copy.Forward(ids[20..], continued);
        Assert.Equal(expected, continued);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.CreateSession(64).CopyPrefix(source, 64));
        Assert.Throws<ArgumentException>(() => Stories.Value.Model.CreateSession(64).CopyPrefix(source, 4));
    }

    /// <summary>Requests that arrive together with the same long beginning (a shared system prompt) run it once: the
    /// first runs it, the others wait for those tokens and copy them; each still comes out as its solo generation. With
    /// the cache off, each runs its whole prompt.</summary>
    [Fact]
    public async Task RequestsSharingABeginningRunItOnce()
    {
        var (model, tokenizer) = Stories.Value;
        string story = Perplexity.SplitDocuments(File.ReadAllText(SharedData.TinyStoriesText), "<|endoftext|>")[0];
        int[] common = tokenizer.Encode(story, addBos: true)[..(TokenFactory.IdlePrefillChunk + 30)];
        var prompts = new[] { " Once", " The dog", " Lily", " Tom" }.Select(x => (int[])[.. common, .. tokenizer.Encode(x, addBos: false)]).ToArray();
        foreach (bool cache in new[] { true, false })
        {
            using var factory = new TokenFactory(model, tokenizer, maxBatch: 4, promptCache: cache);
            var results = await Task.WhenAll(prompts.Select(p => factory.SubmitAsync(p, 20, new SamplingOptions())));
            for (int i = 0; i < prompts.Length; i++)
                Assert.Equal(Generation.Generate(model, tokenizer, prompts[i], 20, new SamplingOptions()).Tokens, results[i].Tokens);
            if (!cache)
            {
                Assert.All(results, r => Assert.Equal(0, r.CachedPromptTokens));
                continue;
            }
            Assert.Equal(0, results[0].CachedPromptTokens);
            // Each took the first one's beginning: what their prompts share with it (the common text and any first
            // token of the endings they share).
            var shared = prompts[1..].Select(p => prompts[0].AsSpan().CommonPrefixLength(p)).ToArray();
            Assert.All(shared, n => Assert.InRange(n, common.Length, common.Length + 1));
            Assert.Equal(shared, results[1..].Select(r => r.CachedPromptTokens));
            Assert.Equal(shared.Sum(), factory.CachedPromptTokens);
        }
    }

    [Fact]
    public async Task ACancelledRequestLeavesAndTheOthersFinish()
    {
        var (model, tokenizer) = Stories.Value;
        using var factory = new TokenFactory(model, tokenizer, maxBatch: 4);
        using var cancel = new CancellationTokenSource();
        int pieces = 0;
        var doomed = factory.SubmitAsync(tokenizer.Encode("Once", addBos: true), 400, new SamplingOptions(),
            _ => { if (++pieces == 3) cancel.Cancel(); }, cancel.Token);
        var survivor = factory.SubmitAsync(tokenizer.Encode("Once", addBos: true), 50, new SamplingOptions());
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => doomed);
        var result = await survivor;
        Assert.Equal(Generation.Greedy(model, tokenizer, "Once", 50).Text, result.Text);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (factory.Active != 0 && clock.Elapsed < TimeSpan.FromSeconds(10)) await Task.Delay(10);
        Assert.Equal(0, factory.Active);
    }
}
