using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// Shared beginnings (<see cref="KvPrefix"/>): a system prompt many requests begin with is held once and read by all
/// of them. A session on one computes exactly what a session holding a copy computes (bit for bit: the attention row
/// reads the same numbers in the same groups), the pool makes and drops them, the factory's requests read them, and a
/// KV budget counts one once.
/// </summary>
public class SharedPrefixTests
{
    private static readonly Lazy<ITokenizer> Tokenizer = new(() => Llama2cTokenizer.Load(SharedData.Tok512));

    /// <summary>The first story of the TinyStories sample, at least <paramref name="count"/> tokens of it.</summary>
    private static int[] Story(int count)
    {
        string story = string.Join(" ", Perplexity.SplitDocuments(File.ReadAllText(SharedData.TinyStoriesText), "<|endoftext|>").Take(3));
        int[] ids = Tokenizer.Value.Encode(story, addBos: true);
        Assert.True(ids.Length >= count);
        return ids[..count];
    }

    /// <summary>A request of the first 176 tokens of <see cref="Story"/> (a beginning of whole granules), the first four
    /// tokens of <paramref name="ending"/>, and <paramref name="max"/> new tokens (greedy, to the last).</summary>
    private static CompletionRequest OnCommon(string ending, int max) => new()
    {
        PromptIds = [.. Story(176), .. Tokenizer.Value.Encode(ending, addBos: false)[..4]], MaxTokens = max,
        Sampling = new SamplingOptions { StopTokenIds = [] },
    };

    /// <summary>A service on stories260K under <paramref name="budget"/> bytes of KV cache.</summary>
    private static CompletionService Budgeted(long budget) => new(LoadedModel.Open(SharedData.Stories260K), "s", kvBudgetBytes: budget);

    /// <summary>Runs a first request (40 new tokens, so its kept cache holds much more than the common beginning), then
    /// a second that shares the beginning with that cache and so makes it a shared one.</summary>
    private static async Task ShareTheCommonBeginning(CompletionService service)
    {
        await service.CompleteAsync(OnCommon(" Once upon a time", 40));
        await service.CompleteAsync(OnCommon(" The dog ran far away", 12));
        Assert.Equal(1, service.SharedPrefixes.Count);
        Assert.Equal(service.KvBytes(176), service.SharedPrefixes.Bytes);
    }

    /// <summary>Each answer is what a server without the prompt cache answers to its request.</summary>
    private static async Task AssertAnswersAsWithoutTheCache(IEnumerable<(CompletionRequest Request, string Text)> answers)
    {
        using var plain = new CompletionService(LoadedModel.Open(SharedData.Stories260K), "s", promptCache: false);
        foreach (var (request, text) in answers) Assert.Equal((await plain.CompleteAsync(request)).Text, text);
    }

    /// <summary>Three sessions continue the same 40 positions: one holding a copy of them, the source after its beginning
    /// became a shared one (its own rows shrink to the positions after it), and a new session on that shared one. One
    /// token at a time (the attention row), a window (the generic loops), several sessions in one pass, and on past
    /// the first allocation (the own rows grow): the logits are the copy's, bit for bit, in every cache type.</summary>
    [Theory]
    [InlineData(KvCacheType.F32)]
    [InlineData(KvCacheType.F16)]
    [InlineData(KvCacheType.BF16)]
    [InlineData(KvCacheType.Q8)]
    [InlineData(KvCacheType.Q4)]
    public void ASessionOnASharedBeginningComputesWhatACopyDoes(KvCacheType kv)
    {
        var model = LlamaModel.Load(CheckpointLoader.Open(SharedData.Stories260K), new RuntimeOptions { KvCache = kv });
        int vocab = model.Config.VocabSize;
        int[] ids = Story(300);
        var source = model.CreateSession(320);
        source.Forward(ids[..40], new float[40 * vocab]);
        var copy = model.CreateSession(320);
        copy.CopyPrefix(source, 40);
        var twin = model.CreateSession(320); // the source's partner in the several-session passes below
        twin.CopyPrefix(source, 40);
        long whole = source.AllocatedKvBytes;
        var prefix = source.ShareBeginning(ids[..40]);
        Assert.Same(prefix, source.Prefix);
        Assert.Equal(40, source.Length);
        Assert.Equal(model.Options.KvCacheBytes(2L * model.Config.Layers * 40 * model.Config.KvDim), prefix.Bytes);
        Assert.Equal(whole - prefix.Bytes, source.AllocatedKvBytes);
        var reader = model.CreateSession(320);
        reader.Attach(prefix);
        Assert.Equal(40, reader.Length);
        Assert.Equal(model.Options.KvCacheBytes(2L * model.Config.Layers * (reader.AllocatedPositions - 40) * model.Config.KvDim), reader.AllocatedKvBytes);
        InferenceSession[] sessions = [copy, source, reader, twin];

        // Steps, one token at a time.
        for (int t = 40; t < 46; t++)
        {
            var logits = sessions.Select(s => s.Step(ids[t])).ToArray();
            Assert.All(logits, l => Assert.Equal(logits[0], l));
        }
        // A window of 24 tokens.
        var windows = sessions.Select(s =>
        {
            var logits = new float[24 * vocab];
            s.Forward(ids.AsSpan(46, 24), logits);
            return logits;
        }).ToArray();
        Assert.All(windows, w => Assert.Equal(windows[0], w));
        // Two sessions in one pass (a token factory's step with a prompt chunk in it: the reader's 20 tokens and the
        // source's one), against the copies in the same places of the same pass; the reader goes on past 256 positions.
        for (int start = 70, step = 70; start < 290; start += 20, step++)
        {
            int[] tokens = [.. ids[start..(start + 20)], ids[step]];
            var shared = new float[2 * vocab];
            var copied = new float[2 * vocab];
            InferenceSession.ForwardMany([reader, source], [20, 1], tokens, shared);
            InferenceSession.ForwardMany([copy, twin], [20, 1], tokens, copied);
            Assert.Equal(copied, shared);
        }
        Assert.True(reader.AllocatedPositions > InferenceSession.InitialPositions);
        Assert.Equal(copy.Step(ids[290]), reader.Step(ids[290]));
    }

    /// <summary>stories260K, 80 tokens of the story, a session that ran the first 48 of them, and a session holding a
    /// copy of its first <paramref name="copied"/> positions.</summary>
    private static (LlamaModel Model, int[] Ids, InferenceSession Source, InferenceSession Copy) SourceAndCopy(int copied)
    {
        var model = LlamaModel.Load(CheckpointLoader.Open(SharedData.Stories260K));
        int[] ids = Story(80);
        var source = model.CreateSession(128);
        source.Forward(ids[..48], new float[48 * model.Config.VocabSize]);
        var copy = model.CreateSession(128);
        copy.CopyPrefix(source, copied);
        return (model, ids, source, copy);
    }

    /// <summary>Both sessions take <paramref name="count"/> tokens from <paramref name="from"/> as one window: the same
    /// logits, bit for bit.</summary>
    private static void AssertContinueAlike(InferenceSession expected, InferenceSession actual, int[] ids, int from, int count)
    {
        int vocab = expected.Model.Config.VocabSize;
        var a = new float[count * vocab];
        var b = new float[count * vocab];
        expected.Forward(ids.AsSpan(from, count), a);
        actual.Forward(ids.AsSpan(from, count), b);
        Assert.Equal(a, b);
    }

    /// <summary>A view of a shared beginning (its first positions, reading its rows) is what a copy of those positions
    /// is: a session on a 40-position view of a 48-position one continues, step and window, as a copy of 40 does.</summary>
    [Fact]
    public void ASessionOnAViewComputesWhatACopyDoes()
    {
        var (model, ids, source, copy) = SourceAndCopy(40);
        var view = source.ShareBeginning(ids[..48]).View(40);
        Assert.Equal(ids[..40], view.Tokens);
        var reader = model.CreateSession(128);
        reader.Attach(view);
        Assert.Equal(copy.Step(ids[40]), reader.Step(ids[40]));
        AssertContinueAlike(copy, reader, ids, 41, 20);
        Assert.Throws<ArgumentOutOfRangeException>(() => view.Root.View(48));
        Assert.Throws<ArgumentException>(() => view.Root.View(44)); // not whole granules
    }

    /// <summary>Going back into a shared beginning (a conversation that forks inside the system prompt) copies its first
    /// positions into the session's own rows: the session reads the shared one no more, and continues as the copy.</summary>
    [Fact]
    public void TruncatingIntoASharedBeginningCopiesItsFirstPositions()
    {
        var (model, ids, source, copy) = SourceAndCopy(48);
        int vocab = model.Config.VocabSize;
        var reader = model.CreateSession(128);
        reader.Attach(source.ShareBeginning(ids[..48]));
        reader.Forward(ids.AsSpan(48, 10), new float[10 * vocab]);
        reader.Truncate(20);
        copy.Truncate(20);
        Assert.Null(reader.Prefix);
        Assert.Equal(copy.AllocatedKvBytes, reader.AllocatedKvBytes);
        AssertContinueAlike(copy, reader, ids, 20, 30);
        // A copy of a session on a shared beginning reads it too, when the copy covers it.
        var onIt = model.CreateSession(128);
        onIt.CopyPrefix(source, 44);
        Assert.Null(onIt.Prefix); // 44 positions do not cover the 48 shared ones: copied
        onIt.CopyPrefix(source, 48);
        Assert.Same(source.Prefix, onIt.Prefix);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.CreateSession(48).Attach(source.Prefix!)); // no room after it
        Assert.Throws<ArgumentException>(() => LlamaModel.Load(CheckpointLoader.Open(SharedData.Stories260K)).CreateSession(128).Attach(source.Prefix!));
    }

    /// <summary>The pool: a prompt sharing a long beginning with a kept cache that holds much more gets a session on a
    /// shared beginning made from that cache (which then reads it too: its own bytes shrink); the pool's bytes count it
    /// once, not while a request pins it; it is found for later prompts, and dropped when trimmed and no kept session
    /// reads it — and kept again when a session reading it comes back.</summary>
    [Fact]
    public void ThePoolSharesALongBeginningOnceAndDropsItWhenNoOneNeedsIt()
    {
        var model = LlamaModel.Load(CheckpointLoader.Open(SharedData.Stories260K));
        int vocab = model.Config.VocabSize;
        var pool = new SessionPool(model, maxSessions: 4);
        int[] ids = Story(200);
        var kept = model.CreateSession(256);
        kept.Forward(ids[..120], new float[120 * vocab]);
        pool.Return(kept, held: ids[..120]);
        long keptBytes = kept.AllocatedKvBytes;
        Assert.Equal(keptBytes, pool.Bytes);

        int[] prompt = [.. ids[..61], .. Tokenizer.Value.Encode(" The end", addBos: false)];
        var session = pool.Rent(128, prompt, out int reused);
        Assert.NotSame(kept, session);
        Assert.Equal(ids[..120].AsSpan().CommonPrefixLength(prompt), reused);
        var prefix = Assert.IsType<KvPrefix>(session.Prefix);
        Assert.Same(prefix, kept.Prefix);
        int n = prefix.Positions;
        Assert.Equal(KvPrefix.Whole(reused), n); // whole granules of eight
        Assert.Equal((1, prefix.Bytes), pool.Prefixes);
        Assert.Equal(keptBytes - prefix.Bytes, kept.AllocatedKvBytes); // the kept cache's own rows shrank by what is now shared
        Assert.Equal(keptBytes, pool.Bytes);
        var tail = new float[(prompt.Length - reused) * vocab];
        session.Forward(prompt.AsSpan(reused), tail);
        var fresh = new float[prompt.Length * vocab];
        model.CreateSession(128).Forward(prompt, fresh);
        double scale = fresh.Max(Math.Abs);
        for (int i = 0; i < tail.Length; i++) Assert.True(Math.Abs(tail[i] - fresh[reused * vocab + i]) <= 1e-5 * scale, $"logit {i}");

        // Found for a later prompt; pinned, it leaves the pool's bytes (the request's budget counts it).
        Assert.Same(prefix, pool.FindPrefix([.. ids[..n], 5, 6], 200));
        // A prompt sharing less of it (all but its last token at most; room for one more position): a view of the whole
        // granules it shares, reading the same rows; under 32 positions, none.
        var view = pool.FindPrefix(ids[..n], 200)!;
        Assert.Equal((n - 8, prefix, prefix.Bytes), (view.Positions, view.Root, view.Bytes));
        Assert.Same(prefix.Keys, view.Keys);
        Assert.Equal(n - 8, pool.FindPrefix([.. ids[..n], 5], n)!.Positions);
        Assert.Null(pool.FindPrefix([.. ids[..30], 5, 6], 200));
        Assert.Null(pool.FindPrefix([.. ids[..n], 5], 32));
        Assert.Same(prefix, pool.PinPrefix([.. ids[..(n + 4)]], 200, out bool first));
        Assert.True(first);
        Assert.Same(prefix, pool.PinPrefix([.. ids[..(n + 4)]], 200, out first));
        Assert.False(first);
        Assert.Equal(keptBytes - prefix.Bytes, pool.Bytes);
        pool.Trim(0);
        Assert.Equal((0, 0L), (pool.Count, pool.Bytes)); // the kept cache went; the pinned prefix stays
        Assert.Equal(1, pool.Prefixes.Count);
        Assert.False(pool.UnpinPrefix(prefix));
        Assert.True(pool.UnpinPrefix(prefix));
        Assert.Throws<InvalidOperationException>(() => pool.UnpinPrefix(prefix));
        Assert.True(pool.Pin(view)); // a view is counted as its root: pinned, the root leaves the kept bytes
        Assert.Equal(0, pool.Bytes);
        Assert.False(pool.Pin(prefix));
        Assert.False(pool.UnpinPrefix(prefix));
        Assert.True(pool.UnpinPrefix(view));
        Assert.Equal(prefix.Bytes, pool.Bytes);
        pool.Trim(0); // read by the running session alone: dropped (its request's budget holds those positions)
        Assert.Equal((0, 0L), pool.Prefixes);
        pool.Return(session, held: prompt[..session.Length]);
        Assert.Equal((1, prefix.Bytes), pool.Prefixes); // a kept session reads it: counted again
        Assert.Equal(session.AllocatedKvBytes + prefix.Bytes, pool.Bytes);
        pool.Trim(0);
        Assert.Equal((0, 0L, 0), (pool.Count, pool.Bytes, pool.Prefixes.Count));
    }

    /// <summary>Beginnings a few positions apart (prompts sharing a system message and a word or two more) read one kept
    /// shared beginning rather than making a copy each; one 32 or more positions longer is a new one (a session that
    /// reads a shared beginning keeps reading it: a budget may count that one for its request); under 32 positions none
    /// is made.</summary>
    [Fact]
    public void BeginningsAFewPositionsApartReadOneSharedBeginning()
    {
        var model = LlamaModel.Load(CheckpointLoader.Open(SharedData.Stories260K));
        int vocab = model.Config.VocabSize;
        var pool = new SessionPool(model, maxSessions: 4);
        int[] ids = Story(120);
        InferenceSession Holding(int n)
        {
            var session = model.CreateSession(128);
            session.Forward(ids[..n], new float[n * vocab]);
            return session;
        }
        var first = Holding(100);
        var shared = pool.Share(first, ids, 64)!;
        Assert.Equal(64, shared.Positions);
        var second = Holding(100);
        long whole = second.AllocatedKvBytes;
        Assert.Same(shared, pool.Share(second, ids, 90)); // 88 positions: 24 more than the kept one
        Assert.Same(shared, second.Prefix);
        Assert.Equal(whole - shared.Bytes, second.AllocatedKvBytes);
        var longer = pool.Share(second, ids, 99)!; // 96: 32 more
        Assert.Equal(96, longer.Positions);
        Assert.Same(shared, second.Prefix);
        var third = Holding(100);
        Assert.Same(longer, pool.Share(third, ids, 99));
        Assert.Same(longer, third.Prefix); // it read none: it reads the longer
        Assert.Same(shared, first.Prefix);
        Assert.Equal(2, pool.Prefixes.Count);
        Assert.True(pool.Pin(longer));
        Assert.False(pool.Pin(longer));
        Assert.False(pool.UnpinPrefix(longer));
        Assert.True(pool.UnpinPrefix(longer));
        Assert.Null(pool.Share(Holding(40), ids, 31));
        // Fewer positions of a kept one: a view of it, nothing copied, no new one kept.
        var fourth = Holding(100);
        var part = pool.Share(fourth, ids, 85)!; // 80 of longer's 96
        Assert.Equal((80, longer), (part.Positions, part.Root));
        Assert.Same(part, fourth.Prefix);
        Assert.Equal(2, pool.Prefixes.Count);
        Assert.Throws<ArgumentException>(() => pool.Share(LlamaModel.Load(CheckpointLoader.Open(SharedData.Stories260K)).CreateSession(8), ids, 40));
        // Both still compute what a fresh session does.
        var fresh = model.CreateSession(128);
        fresh.Forward(ids[..100], new float[100 * vocab]);
        var expected = fresh.Step(ids[100]);
        double scale = expected.Max(Math.Abs);
        foreach (var session in new[] { first, second, third, fourth })
        {
            var step = session.Step(ids[100]);
            for (int i = 0; i < vocab; i++) Assert.True(Math.Abs(step[i] - expected[i]) <= 1e-5 * scale, $"logit {i}");
        }
    }

    /// <summary>Requests arriving together with a long common beginning: the first runs it, the others read it as a
    /// shared beginning (held once) and copy only what follows; a later one reads it from the pool. Each comes out as
    /// its solo generation.</summary>
    [Fact]
    public async Task RequestsWithACommonBeginningReadOneSharedCopy()
    {
        var model = LlamaModel.Load(CheckpointLoader.Open(SharedData.Stories260K));
        var tokenizer = Tokenizer.Value;
        int[] common = Story(TokenFactory.IdlePrefillChunk + 30);
        var prompts = new[] { " Once", " The dog", " Lily", " Tom", " Sue" }.Select(x => (int[])[.. common, .. tokenizer.Encode(x, addBos: false)]).ToArray();
        using var factory = new TokenFactory(model, tokenizer, maxBatch: 4);
        var results = await Task.WhenAll(prompts[..4].Select(p => factory.SubmitAsync(p, 20, new SamplingOptions())));
        var later = await factory.SubmitAsync(prompts[4], 20, new SamplingOptions());
        int shared = KvPrefix.Whole(common.Length);
        Assert.Equal((1, model.Options.KvCacheBytes(2L * model.Config.Layers * shared * model.Config.KvDim)), factory.SharedPrefixes);
        Assert.InRange(later.CachedPromptTokens, shared, common.Length + 1);
        foreach (var (prompt, result) in prompts.Zip([.. results, later]))
            Assert.Equal(Generation.Generate(model, tokenizer, prompt, 20, new SamplingOptions()).Tokens, result.Tokens);
    }

    /// <summary>A cold burst under a KV budget: four requests with a common 176-position beginning arrive together and
    /// are admitted whole (180 prompt and 60 new positions, 307 200 bytes each; 700 000 hold two), no shared beginning
    /// existing yet. When the second
    /// starts, the first's beginning becomes a shared one; from then on both are counted for the positions after it
    /// and the beginning once, so the others are admitted while they run (more than two in the batch at once). What is
    /// reserved stays within the budget, and so do the caches kept after; nothing stays reserved; answers equal the solo
    /// generations. (Reserved and kept are not summed while requests finish: a finished request's session goes back to
    /// the pool just before its reservation is released, so the sum read then counts that session twice.)</summary>
    [Fact]
    public async Task ABurstAdmittedWholeIsCountedForLessOnceItsBeginningIsShared()
    {
        const long Budget = 700_000;
        using var service = Budgeted(Budget);
        var requests = new[] { " Lily went to the park", " Tom had a red ball", " Sue saw a big bird", " Ben liked to sing" }.Select(e => OnCommon(e, 60)).ToArray();
        long worst = 0;
        var answers = await Task.WhenAll(requests.Select(r => service.CompleteAsync(r,
            _ => { lock (requests) worst = Math.Max(worst, service.ReservedKvBytes); })));
        Assert.True(service.LargestBatch >= 3, $"largest batch {service.LargestBatch}: whole requests fit two at a time");
        Assert.InRange(worst, 1, Budget);
        Assert.InRange(service.PooledKvBytes, 1, Budget);
        Assert.Equal(0, service.ReservedKvBytes);
        Assert.Equal(1, service.SharedPrefixes.Count);
        await AssertAnswersAsWithoutTheCache(requests.Zip(answers.Select(a => a.Text)));
    }

    /// <summary>Requests on a shared beginning that are cancelled — some while running, some while waiting for room —
    /// leave nothing reserved and no pin behind: afterwards the budget holds nothing, the shared beginning counts among
    /// the kept caches again, and a new request on it answers as without the cache.</summary>
    [Fact]
    public async Task CancelledRequestsOnASharedBeginningLeaveNothingBehind()
    {
        // 600 000 bytes: the shared beginning (225 280) and one request of 200 new tokens (204 positions after it) at a
        // time, so the others wait for room.
        const long Budget = 600_000;
        using var service = Budgeted(Budget);
        await ShareTheCommonBeginning(service);
        string[] endings = [" Lily went to the park", " Tom had a red ball", " Sue saw a big bird", " Ben liked to sing", " Max ran to the tree", " Ann had a blue hat"];
        var cancels = endings.Select(_ => new CancellationTokenSource()).ToArray();
        var tasks = endings.Select((e, i) => service.CompleteAsync(OnCommon(e, 200), piece => { if (i % 2 == 0) cancels[i].Cancel(); }, cancels[i].Token)).ToArray();
        cancels[5].CancelAfter(5); // perhaps still waiting for room
        foreach (var (task, i) in tasks.Select((t, i) => (t, i)))
        {
            try { await task; }
            catch (OperationCanceledException) { Assert.True(i % 2 == 0 || i == 5, $"request {i} was not cancelled"); }
        }
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while ((service.InService != 0 || service.ReservedKvBytes != 0) && clock.Elapsed < TimeSpan.FromSeconds(10)) await Task.Delay(10);
        Assert.Equal((0, 0L), (service.InService, service.ReservedKvBytes));
        Assert.InRange(service.PooledKvBytes, service.SharedPrefixes.Bytes, Budget); // counted among the kept caches again
        var request = OnCommon(" Kim sang a song", 12);
        var again = await service.CompleteAsync(request);
        Assert.True(again.CachedPromptTokens >= 176);
        await AssertAnswersAsWithoutTheCache([(request, again.Text)]);
        Assert.Equal(0, service.ReservedKvBytes);
    }

    /// <summary>Under a KV budget, requests on a kept shared beginning are counted for the positions after it, and the
    /// beginning once: stories260K holds 1280 bytes a position, each request here 180 prompt and 40 new positions
    /// (281 600 bytes whole); a budget of 600 000 admits two whole ones at a time, but four on a shared beginning of
    /// 176 positions (4 × 56 320 + 225 280). While they run, what is reserved stays within the budget (and holds at once
    /// the beginning and at least three requests' positions after it), and so do the caches kept after; nothing stays
    /// reserved; answers equal the solo generations.</summary>
    [Fact]
    public async Task ABudgetCountsASharedBeginningOnce()
    {
        const long Budget = 600_000;
        using var service = Budgeted(Budget);
        await ShareTheCommonBeginning(service);
        long worst = 0;
        var requests = new[] { " Lily went to the park", " Tom had a red ball", " Sue saw a big bird", " Ben liked to sing" }.Select(e => OnCommon(e, 40)).ToArray();
        var answers = await Task.WhenAll(requests.Select(r => service.CompleteAsync(r,
            _ => { lock (requests) worst = Math.Max(worst, service.ReservedKvBytes); })));
        Assert.True(service.LargestBatch >= 3, $"largest batch {service.LargestBatch}: whole requests would fit two at a time");
        Assert.InRange(worst, service.KvBytes(176) + 3 * service.KvBytes(44), Budget);
        Assert.Equal(0, service.ReservedKvBytes);
        Assert.InRange(service.PooledKvBytes, service.KvBytes(176), Budget);
        await AssertAnswersAsWithoutTheCache(requests.Zip(answers.Select(a => a.Text)));
    }
}
