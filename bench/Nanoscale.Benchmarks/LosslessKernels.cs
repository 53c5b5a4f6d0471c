using System.Diagnostics;
using System.IO.Hashing;
using Nanoscale.Lossless;

namespace Nanoscale.Benchmarks;

/// <summary><c>-- lossless-kernels</c>: best-of-N time of each stage on 1 MiB chunks, to see where time goes.</summary>
internal static class LosslessKernels
{
    public static void Run()
    {
        var original = LosslessData.Gpt2AttnBf16[..(32 << 20)];
        int chunk = 1 << 20, n = chunk / 2, chunks = original.Length / chunk;
        var planes = new byte[chunk];
        var counts = new uint[256];
        var freqs = new uint[256];
        var enc = new RansEncSymbol[256];
        var dec = new RansDecodeTable();
        var coded = new byte[Rans.MaxEncodedLength(n)];
        var merged = new byte[chunk];
        double symbols = (double)chunks * n;

        Report("split", () => { for (int c = 0; c < chunks; c++) BytePlanes.Split(PlaneLayout.BFloat16, original.AsSpan(c * chunk, chunk), planes); }, original.Length);
        Report("histogram x2", () => { for (int c = 0; c < chunks; c++) { BytePlanes.Histogram(planes.AsSpan(0, n), counts); BytePlanes.Histogram(planes.AsSpan(n, n), counts); } }, original.Length);
        Report("xxhash3", () => { for (int c = 0; c < chunks; c++) XxHash3.HashToUInt64(original.AsSpan(c * chunk, chunk)); }, original.Length);
        BytePlanes.Histogram(planes.AsSpan(0, n), counts);
        RansFrequencies.Normalize(counts, freqs);
        Report("normalize (per chunk)", () => { for (int c = 0; c < chunks; c++) RansFrequencies.Normalize(counts, freqs); }, original.Length);
        RansFrequencies.BuildEncodeTable(freqs, enc);
        RansFrequencies.BuildDecodeTable(freqs, dec, Rans.NarrowStates);
        RansFrequencies.BuildDecodeTable(freqs, dec, Rans.WideStates);
        var outPlane = new byte[n];
        foreach (int states in (int[])[Rans.NarrowStates, Rans.WideStates])
        {
            int length = 0;
            Report($"rans encode exp ({states})", () => { for (int c = 0; c < chunks; c++) length = Rans.Encode(planes.AsSpan(0, n), enc, coded, states); }, original.Length, symbols);
            Report($"rans decode exp ({states})", () => { for (int c = 0; c < chunks; c++) Rans.Decode(coded.AsSpan(0, length), dec, outPlane, states, out _); }, original.Length, symbols);
        }
        Report("merge", () => { for (int c = 0; c < chunks; c++) BytePlanes.Merge(PlaneLayout.BFloat16, planes.AsSpan(0, n), planes.AsSpan(n, n), default, default, merged); }, original.Length);
    }

    private static void Report(string name, Action action, long bytes, double symbols = 0)
    {
        action();
        double best = double.MaxValue;
        for (int i = 0; i < 15; i++)
        {
            var clock = Stopwatch.StartNew();
            action();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        var perSymbol = symbols > 0 ? $", {symbols / best / 1e6:F0} M symbols/s" : "";
        Console.WriteLine($"{name,-24} {bytes / best / 1e9,6:F2} GB/s of original bytes{perSymbol}");
    }
}
