namespace Nanoscale.Tensors;

/// <summary>
/// The threads behind <see cref="Parallelism"/>'s loops: one fewer than the cores, started on first use, each waiting
/// for the next loop by spinning for 200 µs after the last loop it ran (a model step runs ~150 loops with a little
/// single-threaded work between them) and then blocking; a loop wakes only as many blocked workers as it may use. A
/// loop is one <c>work</c> delegate run at once on the calling thread and up to <c>threads − 1</c> of these; the
/// delegate itself hands out the items. One loop at a time: a loop started while another runs (a nested loop, or a
/// second caller) is refused, and the caller uses the thread pool instead.
/// </summary>
/// <remarks>
/// Hand-written rather than <see cref="Parallel.For(int, int, Action{int})"/>: on the 2-core machine measured
/// (<c>Nanoscale.Benchmarks fork-join 2 5,50 N GAP</c>) a <c>Parallel.For</c> of two items cost 1.7–2.2 µs beyond its
/// work with 2 µs between loops, 4–6 µs with 20–100 µs between, 44–77 µs after a 500 µs pause, and 1.8 KB of garbage;
/// on these workers 1.9–2.6, 2.3–2.8 and 24–46 µs, 280 bytes. Its workers wait in <c>sched_yield</c> (a few percent of
/// a step's samples in the kernel), and a server's requests queue for the same pool's threads while products hold
/// them. A model step alternated in one process (<c>token-factory</c>, SmolLM2-shaped mxfp4): one stream 196 against
/// 168–176 tokens/s, 16 streams 815–843 against 770–780.
/// </remarks>
internal sealed class LoopWorkers
{
    /// <summary>The process's workers (one fewer than <see cref="Environment.ProcessorCount"/>).</summary>
    public static LoopWorkers Shared { get; } = new(Environment.ProcessorCount - 1);

    /// <summary>How long a worker spins for the next loop before it blocks.</summary>
    private static readonly long SpinTicks = System.Diagnostics.Stopwatch.Frequency / 5000; // 200 µs

    private readonly int _workers;
    private readonly SemaphoreSlim _wake = new(0);
    private readonly object _start = new();
    private bool _started;
    private int _busy;         // 1 while a loop runs
    private long _generation;  // bumped when a loop is published
    private int _slots;        // helpers that may still join the current loop
    private int _helpers;      // helpers the current (or last) loop may use
    private int _inside;       // helpers inside the current loop
    private int _open;         // 1 while the current loop takes helpers
    private int _sleepers;     // workers blocked on _wake
    private Action? _work;
    private Exception? _failure;

    private LoopWorkers(int workers) => _workers = Math.Max(0, workers);

    /// <summary>Threads a loop can have at most: the caller and every worker.</summary>
    public int Threads => _workers + 1;

    /// <summary>
    /// Runs <paramref name="work"/> on this thread and on up to <paramref name="threads"/> − 1 workers at once and
    /// returns when every one of them has returned; false (nothing run) when another loop holds the workers. An
    /// exception escaping <paramref name="work"/> on a worker is rethrown here.
    /// </summary>
    public bool TryRun(int threads, Action work)
    {
        int helpers = Math.Min(threads - 1, _workers);
        if (helpers <= 0)
        {
            work();
            return true;
        }
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0) return false;
        try
        {
            EnsureStarted();
            _work = work;
            _failure = null;
            Volatile.Write(ref _slots, helpers);
            Volatile.Write(ref _helpers, helpers);
            Volatile.Write(ref _open, 1);
            Interlocked.Increment(ref _generation); // a full fence: the fields above are visible before it
            int sleepers = Volatile.Read(ref _sleepers);
            if (sleepers > 0) _wake.Release(Math.Min(sleepers, helpers));
            try { work(); }
            finally
            {
                // No helper joins after this; wait for those inside (they find no items left, or finish theirs), so no
                // helper still runs this loop when the next one starts.
                Interlocked.Exchange(ref _open, 0);
                // The helpers usually finish within microseconds of the caller: a pure spin first (a yield to the kernel
                // cost more than such a wait), then yielding, so a long last item does not hold a core others may need.
                var spin = new SpinWait();
                for (int n = 0; Volatile.Read(ref _inside) != 0; n++)
                {
                    if (n < 1000) Thread.SpinWait(1);
                    else spin.SpinOnce(sleep1Threshold: -1);
                }
                _work = null;
            }
            if (_failure is { } failure) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
            return true;
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    private void EnsureStarted()
    {
        if (Volatile.Read(ref _started)) return;
        lock (_start)
        {
            if (_started) return;
            for (int i = 0; i < _workers; i++)
            {
                int index = i;
                new Thread(() => Wait(index)) { IsBackground = true, Name = "nanoscale loop worker" }.Start();
            }
            Volatile.Write(ref _started, true);
        }
    }

    /// <summary>Worker <paramref name="index"/>: waits for each new loop, joins it while it has room and takes helpers.</summary>
    private void Wait(int index)
    {
        long seen = Volatile.Read(ref _generation);
        long spinFrom = System.Diagnostics.Stopwatch.GetTimestamp();
        while (true)
        {
            long generation;
            while ((generation = Volatile.Read(ref _generation)) == seen)
            {
                if (System.Diagnostics.Stopwatch.GetTimestamp() - spinFrom < SpinTicks)
                {
                    Thread.SpinWait(2);
                    continue;
                }
                // Block; the publisher reads _sleepers after bumping the generation, so one of the two sees the other.
                Interlocked.Increment(ref _sleepers);
                if (Volatile.Read(ref _generation) == seen) _wake.Wait();
                Interlocked.Decrement(ref _sleepers);
                spinFrom = System.Diagnostics.Stopwatch.GetTimestamp();
            }
            seen = generation;
            // The first workers, as many as the last loop could use, spin for the next one from now on (a worker that
            // came too late for a short loop still expects the next); on a machine with more cores than a loop's
            // threads the others keep their deadline and go back to blocking.
            if (Join() | index < Volatile.Read(ref _helpers)) spinFrom = System.Diagnostics.Stopwatch.GetTimestamp();
        }
    }

    /// <summary>Runs the current loop's work if the loop is open and has room; whether it did.</summary>
    private bool Join()
    {
        Interlocked.Increment(ref _inside); // a full fence: the caller's close and this entry are ordered
        try
        {
            if (Volatile.Read(ref _open) == 0 || Interlocked.Decrement(ref _slots) < 0) return false;
            var work = _work;
            if (work is null) return false;
            try { work(); }
            catch (Exception e) { Interlocked.CompareExchange(ref _failure, e, null); }
            return true;
        }
        finally
        {
            Interlocked.Decrement(ref _inside);
        }
    }
}
