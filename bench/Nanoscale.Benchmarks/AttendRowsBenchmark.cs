using System.Diagnostics;
using Nanoscale.Runtime;

namespace Nanoscale.Benchmarks;

/// <summary>
/// The step's attention kernel (<c>Kernels.AttendRows</c>: three query heads over one cached head of 64, SmolLM2's
/// grouping, rows of three heads) alone, on one sequence's cache of POSITIONS rows, or taking turns over CACHES such
/// caches (480 = sixteen sequences × thirty layers, a 16-sequence step's caches: then the rows come from memory, as
/// in a step, where the weights pass through the caches between two visits of a layer). Prints the time a call and the
/// multiply-adds per second of the scores and the weighted sum together.
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- attend-rows [POSITIONS] [CACHES] [f32|f16|bf16|q8|q4]</code>
/// </summary>
internal static class AttendRowsBenchmark
{
    public static int Run(string[] args)
    {
        int positions = args.Length > 0 ? int.Parse(args[0]) : 80;
        int caches = args.Length > 1 ? int.Parse(args[1]) : 1;
        var type = args.Length > 2 ? Enum.Parse<KvCacheType>(args[2], ignoreCase: true) : KvCacheType.F32;
        const int heads = 3, headDim = 64, kvDim = 3 * headDim;
        var random = new Random(1);
        var rows = Enumerable.Range(0, caches).Select(_ =>
        {
            var (keys, values) = (KvRows.Create(type, kvDim), KvRows.Create(type, kvDim));
            keys.Resize((long)positions * kvDim);
            values.Resize((long)positions * kvDim);
            float[] row = new float[kvDim];
            for (int p = 0; p < positions; p++)
            {
                for (int i = 0; i < kvDim; i++) row[i] = (float)(random.NextDouble() * 2 - 1);
                keys.Write(p * kvDim, row);
                values.Write(p * kvDim, row);
            }
            return (keys, values);
        }).ToArray();
        float[] queries = [.. Enumerable.Range(0, heads * headDim).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var scores = new float[heads * positions];
        var output = new float[heads * headDim];
        int calls = Math.Max(caches * 3, 20_000_000 / Math.Max(1, positions) / caches * caches);
        for (int round = 0; round < 3; round++)
        {
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < calls; i++)
            {
                // Each cache's three heads in turn, as a step's layer visits them.
                var (keys, values) = rows[i / 3 % caches];
                Kernels.AttendRows(queries, heads, keys, values, kvDim, i % 3 * headDim, 0.125f, scores, output);
            }
            double seconds = clock.Elapsed.TotalSeconds;
            double multiplyAdds = (double)calls * heads * positions * headDim * 2;
            Console.WriteLine($"attention of {heads} heads over {positions} positions ({type.Name()} cache), {caches} cache(s) in turn: " +
                              $"{seconds / calls * 1e6:0.000} us a call, {multiplyAdds / seconds / 1e9:0.0} G multiply-adds/s");
        }
        return 0;
    }
}
