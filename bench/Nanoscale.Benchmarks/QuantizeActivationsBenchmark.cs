using System.Diagnostics;
using Nanoscale.Formats;

namespace Nanoscale.Benchmarks;

/// <summary>
/// The 4-bit lane kernels' activation set (<c>NibbleLanes.Vectors.Set</c>: int8 codes per block of 32 with its scale,
/// in the kernel's word order, and −bias × the block's sum) for sixteen vectors of COLS, alternating between two inputs so
/// the set is never kept: the quantizing a 16-sequence step's products do on each thread.
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- quantize-activations [COLS]</code>
/// </summary>
internal static class QuantizeActivationsBenchmark
{
    public static int Run(string[] args)
    {
        const int Vectors = 16;
        int cols = args.Length > 0 ? int.Parse(args[0]) : 576;
        var random = new Random(1);
        float[][] inputs = [.. Enumerable.Range(0, 2).Select(_ => Enumerable.Range(0, Vectors * cols).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray())];
        var set = new NibbleLanes.Vectors();
        for (int round = 0; round < 3; round++)
        {
            const int Calls = 20000;
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < Calls; i++) set.Set(inputs[i & 1], Vectors, cols, evensThenOdds: true, bias: 12);
            double seconds = clock.Elapsed.TotalSeconds;
            Console.WriteLine($"{Vectors} vectors × {cols}: {seconds / Calls * 1e6:0.00} us a set, {seconds / Calls / (Vectors * cols / 32) * 1e9:0.0} ns a block of 32");
        }
        return 0;
    }
}
