using System.Diagnostics;
using System.Globalization;
using System.Numerics;
using Nanoscale.Formats.E8;
using Nanoscale.LowRank;
using Nanoscale.Tensors;

namespace Nanoscale.Benchmarks;

/// <summary>
/// The E8 codebook's nearest-point search (Conway and Sloane's decoding, <see cref="E8Lattice.Quantize"/>) against a
/// brute-force search over all 2^16 codebook points, on many random vectors (issue 16 asks for 10^6), on two
/// distributions: uniform in ±1.4 lattice units per coordinate (the range a block's scale maps most weights to) and
/// Gaussian with σ = 0.5. Reports how many vectors have their nearest lattice point inside the codebook, how many of
/// those the search gets wrong (must be 0), and for the rest (the search shrinks them toward 0 until their nearest
/// point is inside) how far the chosen point is from the codebook's true nearest.
/// Usage: e8-exact [vectors=1000000] [threads=2]
/// </summary>
internal static class E8NearestCheck
{
    public static int Run(string[] args)
    {
        int count = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 1_000_000;
        int threads = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 2;
        int n = E8Lattice.CodebookSize;
        // Points as 8 coordinate planes of floats (exact: halves of small integers) and their squared norms.
        var planes = new float[8][];
        for (int i = 0; i < 8; i++) planes[i] = new float[n];
        var norms = new float[n];
        Span<float> point = stackalloc float[8];
        for (int k = 0; k < n; k++)
        {
            E8Lattice.Decode(k, 1f, point); // scale 1: the lattice point itself
            float norm = 0;
            for (int i = 0; i < 8; i++)
            {
                planes[i][k] = point[i];
                norm += point[i] * point[i];
            }
            norms[k] = norm;
        }
        Console.WriteLine($"E8 codebook {n} points; {count:N0} vectors per distribution; {threads} threads");
        Console.WriteLine("| distribution | nearest lattice point in codebook | search ≠ brute force (inside) | outside: mean / max extra distance² | s |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var (name, sample) in new (string, Func<Random, double>)[]
                 {
                     ("uniform ±1.4", r => (r.NextDouble() * 2 - 1) * 1.4),
                     ("Gaussian σ 0.5", r => 0.5 * Caldera.Gaussian(r)),
                 })
        {
            long inside = 0, wrong = 0, outside = 0;
            double extraSum = 0, extraMax = 0;
            var gate = new object();
            var clock = Stopwatch.StartNew();
            const int Chunk = 10_000;
            int chunks = (count + Chunk - 1) / Chunk;
            new Parallelism(threads).ForEach(chunks, () => new float[n], (chunk, distances) =>
            {
                var random = new Random(1000 * chunk + name.Length);
                long localInside = 0, localWrong = 0, localOutside = 0;
                double localSum = 0, localMax = 0;
                Span<double> x = stackalloc double[8];
                Span<sbyte> nearest = stackalloc sbyte[8];
                Span<float> chosen = stackalloc float[8];
                for (int v = chunk * Chunk, end = Math.Min(count, v + Chunk); v < end; v++)
                {
                    for (int i = 0; i < 8; i++) x[i] = sample(random);
                    int best = BruteForce(x, planes, norms, distances);
                    int index = E8Lattice.Quantize(x);
                    E8Lattice.Nearest(x, nearest);
                    double dBest = Distance(x, best), dChosen = Distance(x, index);
                    if (E8Lattice.TryIndex(nearest, out _))
                    {
                        localInside++;
                        if (dChosen > dBest + 1e-12) localWrong++;
                    }
                    else
                    {
                        localOutside++;
                        localSum += dChosen - dBest;
                        localMax = Math.Max(localMax, dChosen - dBest);
                    }
                }
                lock (gate)
                {
                    inside += localInside;
                    wrong += localWrong;
                    outside += localOutside;
                    extraSum += localSum;
                    extraMax = Math.Max(extraMax, localMax);
                }
            });
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {name} | {inside:N0} ({100.0 * inside / count:0.000}%) | {wrong} | {(outside > 0 ? extraSum / outside : 0):0.0000} / {extraMax:0.0000} ({outside:N0} vectors) | {clock.Elapsed.TotalSeconds:0.0} |"));
        }
        return 0;

        double Distance(ReadOnlySpan<double> x, int index)
        {
            Span<float> p = stackalloc float[8];
            E8Lattice.Decode(index, 1f, p);
            double d = 0;
            for (int i = 0; i < 8; i++) d += (x[i] - p[i]) * (x[i] - p[i]);
            return d;
        }
    }

    /// <summary>The index of the codebook point nearest to x: ‖p‖² − 2 p·x over all points in floats, then the few within
    /// float rounding of the minimum compared again in doubles.</summary>
    private static int BruteForce(ReadOnlySpan<double> x, float[][] planes, float[] norms, float[] distances)
    {
        int n = norms.Length, width = Vector<float>.Count;
        Span<Vector<float>> xs = stackalloc Vector<float>[8];
        for (int i = 0; i < 8; i++) xs[i] = new Vector<float>((float)(-2 * x[i]));
        var min = new Vector<float>(float.MaxValue);
        for (int k = 0; k < n; k += width)
        {
            var d = new Vector<float>(norms, k);
            for (int i = 0; i < 8; i++) d += xs[i] * new Vector<float>(planes[i], k);
            d.CopyTo(distances, k);
            min = Vector.Min(min, d);
        }
        float m = float.MaxValue;
        for (int i = 0; i < width; i++) m = Math.Min(m, min[i]);
        int best = -1;
        double bestDistance = double.MaxValue;
        for (int k = 0; k < n; k++)
        {
            if (distances[k] > m + 1e-3f) continue;
            double d = 0;
            for (int i = 0; i < 8; i++) d += (x[i] - planes[i][k]) * (x[i] - planes[i][k]);
            if (d < bestDistance)
            {
                bestDistance = d;
                best = k;
            }
        }
        return best;
    }
}
