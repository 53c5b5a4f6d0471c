using System.Diagnostics;
using System.Globalization;
using System.Numerics.Tensors;
using Nanoscale.LowRank;

namespace Nanoscale.Benchmarks;

/// <summary>
/// The randomized Hadamard transform of one weight row (docs/caldera.md), fast (O(n log n), <see cref="FastIncoherence"/>)
/// against the dense product the decoder did before (n multiply-adds of an n-float row of V per element), one thread.
/// Usage: hadamard [--widths 768,4096,14336]
/// </summary>
internal static class HadamardBenchmark
{
    public static int Run(string[] args)
    {
        var widths = (ProcessMemory.Arg(args, "--widths") ?? "768,2048,4096,14336").Split(',').Select(w => int.Parse(w, CultureInfo.InvariantCulture));
        Console.WriteLine("| width | fast rows/s | dense rows/s | speed-up |");
        Console.WriteLine("|---:|---:|---:|---:|");
        foreach (int n in widths)
        {
            var t = new FastIncoherence(n, 1);
            var row = new float[n];
            var scratch = new float[n];
            for (int i = 0; i < n; i++) row[i] = (float)Math.Sin(i);
            double fast = RowsPerSecond(() => t.Decode(row, scratch));
            // The dense decode: ŵ = ŵ' V with V as n × n floats (only a slice of rows when V would not fit in 1 GB).
            int denseRows = (int)Math.Min(n, (1L << 28) / n);
            var v = new float[(long)denseRows * n];
            for (long i = 0; i < v.Length; i++) v[i] = (i & 1) == 0 ? 0.01f : -0.01f;
            var output = new float[n];
            double dense = RowsPerSecond(() =>
            {
                Array.Clear(output);
                for (int k = 0; k < n; k++)
                    TensorPrimitives.MultiplyAdd(v.AsSpan((int)((long)(k % denseRows) * n), n), row[k], output, output);
            });
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {n} | {fast:0} | {dense:0.0} | {fast / dense:0}× |"));
        }
        return 0;
    }

    private static double RowsPerSecond(Action body)
    {
        body();
        int count = 0;
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < 1 || count < 3)
        {
            body();
            count++;
        }
        return count / clock.Elapsed.TotalSeconds;
    }
}
