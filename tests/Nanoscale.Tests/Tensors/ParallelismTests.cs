using System.Collections.Concurrent;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.Tensors;

/// <summary>
/// The library's parallel loops (<see cref="Parallelism.ForEach{TScratch}"/> on <see cref="LoopWorkers"/>, the thread
/// pool when the workers are taken): every item once, the lowest-numbered failure after every item ran, a scratch per
/// thread, real concurrency, and nested and simultaneous loops that finish.
/// </summary>
public class ParallelismTests
{
    /// <summary>Counts 0–40 on 1–4 threads, many loops in a row (the workers' hand-over between loops): each item runs
    /// exactly once.</summary>
    [Fact]
    public void EveryItemRunsOnce()
    {
        for (int threads = 1; threads <= 4; threads++)
            for (int count = 0; count <= 40; count++)
            {
                var runs = new int[count];
                new Parallelism(threads).For(count, i => Interlocked.Increment(ref runs[i]));
                Assert.All(runs, n => Assert.Equal(1, n));
            }
    }

    /// <summary>Items 5 and 3 fail: every item still runs, and the failure of item 3 is the one thrown, whichever thread
    /// ran it first.</summary>
    [Fact]
    public void TheLowestFailingItemIsThrownAfterEveryItemRan()
    {
        for (int round = 0; round < 50; round++)
        {
            var runs = new int[12];
            var error = Assert.Throws<InvalidOperationException>(() => new Parallelism(2).For(12, i =>
            {
                Interlocked.Increment(ref runs[i]);
                if (i is 3 or 5) throw new InvalidOperationException($"item {i}");
            }));
            Assert.Equal("item 3", error.Message);
            Assert.All(runs, n => Assert.Equal(1, n));
        }
    }

    /// <summary>A scratch is made once per thread that runs items, and no two threads hold the same scratch.</summary>
    [Fact]
    public void EachThreadMakesItsOwnScratch()
    {
        for (int round = 0; round < 50; round++)
        {
            var made = new ConcurrentBag<(int Thread, object Scratch)>();
            var users = new ConcurrentDictionary<object, int>();
            new Parallelism(2).ForEach(64, () =>
            {
                var scratch = new object();
                made.Add((Environment.CurrentManagedThreadId, scratch));
                return scratch;
            }, (i, scratch) => Assert.Equal(users.GetOrAdd(scratch, Environment.CurrentManagedThreadId), Environment.CurrentManagedThreadId));
            Assert.True(made.Count <= 2, $"{made.Count} scratches for 2 threads");
            Assert.Equal(made.Count, made.Select(m => m.Thread).Distinct().Count());
        }
    }

    /// <summary>Two items that each wait for the other finish only if two threads run them at once (bounded: a lone
    /// thread would fail after 10 s instead of hanging).</summary>
    [Fact]
    public void TwoItemsRunAtOnce()
    {
        if (Environment.ProcessorCount < 2) return;
        for (int round = 0; round < 20; round++)
        {
            using var both = new CountdownEvent(2);
            new Parallelism(2).For(2, _ =>
            {
                both.Signal();
                Assert.True(both.Wait(TimeSpan.FromSeconds(10)), "the other item never started");
            });
        }
    }

    /// <summary>A loop inside a loop's item (the workers are taken: the thread pool runs it) and loops from several
    /// threads at once all finish with every item run once.</summary>
    [Fact]
    public async Task NestedAndSimultaneousLoopsFinish()
    {
        var outer = new int[6];
        var inner = new int[6 * 10];
        new Parallelism(2).For(6, i =>
        {
            Interlocked.Increment(ref outer[i]);
            new Parallelism(2).For(10, j => Interlocked.Increment(ref inner[i * 10 + j]));
        });
        Assert.All(outer, n => Assert.Equal(1, n));
        Assert.All(inner, n => Assert.Equal(1, n));

        var counts = new int[4 * 200];
        var callers = Enumerable.Range(0, 4).Select(c => Task.Run(() =>
        {
            for (int loop = 0; loop < 50; loop++)
                new Parallelism(2).For(4, i => Interlocked.Increment(ref counts[c * 200 + loop * 4 + i]));
        })).ToArray();
        await Task.WhenAll(callers).WaitAsync(TimeSpan.FromSeconds(60)); // a TimeoutException if they do not finish
        Assert.All(counts, n => Assert.Equal(1, n));
    }
}
