using System.Runtime.ExceptionServices;

namespace Nanoscale.Tensors;

/// <summary>
/// How many threads a piece of work may use, with one meaning everywhere in the library: 0 (the default) = every core,
/// 1 = the calling thread only, n = at most n threads. It travels inside each room's options object (STYLE §4), and the
/// loops below are the only place work is spread over threads.
/// </summary>
/// <remarks>
/// The loops run every item to the end even when one fails, then rethrow the failure of the lowest-numbered item, so
/// which error a caller sees never depends on thread timing (two NaN weights in different rows always report the first).
/// </remarks>
public readonly record struct Parallelism
{
    public Parallelism(int maxThreads)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxThreads);
        MaxThreads = maxThreads;
    }

    /// <summary>The limit as given: 0 = every core.</summary>
    public int MaxThreads { get; }

    /// <summary>Every core (the default).</summary>
    public static Parallelism AllCores => default;

    /// <summary>The calling thread only.</summary>
    public static Parallelism SingleThread => new(1);

    /// <summary>Threads the work may actually use.</summary>
    public int Threads => MaxThreads > 0 ? MaxThreads : Environment.ProcessorCount;

    public override string ToString() => MaxThreads == 0 ? $"all {Environment.ProcessorCount} cores" : $"{MaxThreads} thread(s)";

    /// <summary>Runs <paramref name="body"/>(i) for i in [0, count) on up to <see cref="Threads"/> threads.</summary>
    internal void For(int count, Action<int> body) => ForEach(count, static () => 0, (i, _) => body(i));

    /// <summary>As <see cref="For"/>, with scratch state made once per worker thread.</summary>
    internal void ForEach<TScratch>(int count, Func<TScratch> createScratch, Action<int, TScratch> body)
    {
        if (count <= 0) return;
        int threads = Math.Min(Threads, count);
        if (threads <= 1)
        {
            var scratch = createScratch();
            for (int i = 0; i < count; i++) body(i, scratch);
            return;
        }
        Exception?[]? failures = null;
        var gate = new object();
        void Run(int i, TScratch scratch)
        {
            try { body(i, scratch); }
            catch (Exception e)
            {
                lock (gate) (failures ??= new Exception?[count])[i] = e;
            }
        }
        // The items in one contiguous range per thread (a thread's tiles of a product are then one stream through
        // memory: handing out items in turn made a one-token step 13% slower); a thread that finishes its range takes
        // the next items of the others'. Each thread makes its scratch at its first item.
        // As many ranges as threads can take part (more threads asked for than the machine's workers give fewer).
        int ranges = Math.Min(threads, LoopWorkers.Shared.Threads);
        var next = new int[ranges];
        for (int r = 0; r < ranges; r++) next[r] = (int)((long)count * r / ranges);
        int joined = -1;
        void Work()
        {
            TScratch scratch = default!;
            bool made = false;
            int own = Interlocked.Increment(ref joined) % ranges;
            for (int k = 0; k < ranges; k++)
            {
                int range = (own + k) % ranges, end = (int)((long)count * (range + 1) / ranges);
                for (int i = Interlocked.Increment(ref next[range]) - 1; i < end; i = Interlocked.Increment(ref next[range]) - 1)
                {
                    if (!made)
                    {
                        try { scratch = createScratch(); }
                        catch (Exception e)
                        {
                            lock (gate) (failures ??= new Exception?[count])[i] = e;
                            continue;
                        }
                        made = true;
                    }
                    Run(i, scratch);
                }
            }
        }
        // The library's own workers; the thread pool when another loop holds them (a nested loop, a second caller).
        if (!LoopWorkers.Shared.TryRun(threads, Work))
            Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = threads }, createScratch, (i, _, scratch) =>
            {
                Run(i, scratch);
                return scratch;
            }, _ => { });
        if (failures?.FirstOrDefault(e => e is not null) is { } first)
            ExceptionDispatchInfo.Capture(first).Throw();
    }

    /// <summary>
    /// Splits [0, <paramref name="length"/>) into at most <see cref="Threads"/> contiguous ranges of at least
    /// <paramref name="minPerRange"/> items and runs <paramref name="body"/>(start, count) on each.
    /// </summary>
    internal void ForRanges(int length, long minPerRange, Action<int, int> body)
    {
        int parts = (int)Math.Min(Threads, Math.Max(1, length / Math.Max(1, minPerRange)));
        if (parts <= 1)
        {
            body(0, length);
            return;
        }
        For(parts, part =>
        {
            int start = (int)((long)length * part / parts), end = (int)((long)length * (part + 1) / parts);
            body(start, end - start);
        });
    }
}
