using System.Diagnostics;
using Nanoscale.Tensors;

namespace Nanoscale.Benchmarks;

/// <summary>
/// <c>-- fork-join [threads] [work-µs,...] [loops] [gap-µs]</c>: what one parallel loop of the library
/// (<see cref="Parallelism.For"/>, one item per thread, each item spinning for the given microseconds) costs beyond its
/// work, with a gap of single-threaded work between loops (default 2 µs, as a norm between two products of a step; a
/// gap longer than the workers' spin, 200 µs, measures a wake-up from blocking). A 30-layer step runs ~150 such loops,
/// so a few microseconds each are a visible share of a 6 ms step.
/// </summary>
internal static class ForkJoinBenchmark
{
    public static int Run(string[] args)
    {
        int threads = args.Length > 0 ? int.Parse(args[0]) : 2;
        double[] works = (args.Length > 1 ? args[1] : "0,5,20,50").Split(',').Select(double.Parse).ToArray();
        int loops = args.Length > 2 ? int.Parse(args[2]) : 20000;
        double gapMicroseconds = args.Length > 3 ? double.Parse(args[3]) : 2;
        var parallelism = new Parallelism(threads);
        Console.WriteLine($"| work a item (µs) | loops | µs a loop | overhead a loop (µs) | allocated bytes a loop |");
        Console.WriteLine("|---:|---:|---:|---:|---:|");
        foreach (double work in works)
        {
            long ticks = (long)(work * Stopwatch.Frequency / 1e6), gap = (long)(gapMicroseconds * Stopwatch.Frequency / 1e6);
            for (int i = 0; i < 1000; i++) parallelism.For(threads, _ => Spin(ticks));
            double best = double.MaxValue;
            long allocated = 0;
            for (int round = 0; round < 5; round++)
            {
                long bytes = GC.GetAllocatedBytesForCurrentThread();
                var clock = Stopwatch.StartNew();
                for (int i = 0; i < loops; i++)
                {
                    parallelism.For(threads, _ => Spin(ticks));
                    Spin(gap);
                }
                double perLoop = clock.Elapsed.TotalMicroseconds / loops - gapMicroseconds;
                if (perLoop < best) (best, allocated) = (perLoop, (GC.GetAllocatedBytesForCurrentThread() - bytes) / loops);
            }
            Console.WriteLine($"| {work:0.0} | {loops} | {best:0.00} | {best - work:0.00} | {allocated} |");
        }
        return 0;
    }

    private static void Spin(long ticks)
    {
        long end = Stopwatch.GetTimestamp() + ticks;
        while (Stopwatch.GetTimestamp() < end) { }
    }
}
