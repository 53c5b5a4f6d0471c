using System.Diagnostics;
using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.Tensors;

namespace Nanoscale.Benchmarks;

/// <summary>
/// Stopwatch throughput of each format's one-token product on its stored codes (<c>IBlockCodec.TryDotRows</c>), one
/// thread or rows split over several, on a matrix far larger than the caches (default 16384 × 2048): weight bytes read per second. Quick
/// comparisons of the step kernels; BenchmarkDotNet's repetitions add nothing at this size.
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- dot-kernels [mxfp4,q4_0,q8_0,ggml-mxfp4,nvfp4,nxfp4,f16,bf16] [rows] [cols] [threads] [vectors (one thread, TryDotRowsMany)]</code>
/// </summary>
internal static class DotKernelQuick
{
    public static int Run(string[] args)
    {
        string[] formats = (args.Length > 0 ? args[0] : "mxfp4,ggml-mxfp4,q4_0,q8_0,nvfp4,nxfp4").Split(',');
        int rows = args.Length > 1 ? int.Parse(args[1]) : 16384, cols = args.Length > 2 ? int.Parse(args[2]) : 2048;
        int threads = args.Length > 3 ? int.Parse(args[3]) : 1;
        int vectors = args.Length > 4 ? int.Parse(args[4]) : 1;
        var random = new Random(1);
        var w = new float[(long)rows * cols];
        for (long i = 0; i < w.Length; i++) w[i] = (float)((random.NextDouble() - 0.5) * Math.Exp(random.Next(-3, 3)));
        var x = new float[cols * vectors];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(random.NextDouble() - 0.5);
        var y = new float[rows * vectors];
        foreach (var spec in formats)
        {
            if (spec is "f16" or "bf16")
            {
                SixteenBit(spec == "f16" ? DType.F16 : DType.BF16, w, rows, cols, x, y, threads, vectors);
                continue;
            }
            var codec = CodecRegistry.CreateBlockCodec(spec);
            var (blocks, scales, tensorData) = BlockMatrix.Encode(codec, w, rows, cols);
            if (!codec.TryDotRows(blocks, scales, tensorData, rows, cols, x, y)) { Console.WriteLine($"{spec}: no step kernel"); continue; }
            // Several vectors in calls of at most the codec's MaxDotVectors, as the runtime makes them.
            int chunk = Math.Clamp(codec.MaxDotVectors(cols), 1, vectors);
            bool Many()
            {
                for (int v0 = 0; v0 < vectors; v0 += chunk)
                {
                    int n = Math.Min(chunk, vectors - v0);
                    if (!codec.TryDotRowsMany(blocks, scales, tensorData, rows, cols, n, x.AsSpan(v0 * cols, n * cols), y.AsSpan(v0 * rows), rows)) return false;
                }
                return true;
            }
            if (vectors > 1 && !Many()) { Console.WriteLine($"{spec}: no several-vector kernel"); continue; }
            double best = double.MaxValue;
            for (int run = 0; run < 40; run++)
            {
                var clock = Stopwatch.StartNew();
                if (vectors > 1) Many();
                else if (threads == 1) codec.TryDotRows(blocks, scales, tensorData, rows, cols, x, y);
                else
                {
                    // Row ranges split evenly over the threads (whole rows: every format here has one row of blocks per row).
                    int per = (rows + threads - 1) / threads, rowBytes = blocks.Length / rows, rowScales = scales.Length / rows;
                    Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
                    {
                        int r0 = i * per, n = Math.Min(rows, r0 + per) - r0;
                        codec.TryDotRows(blocks.AsSpan(r0 * rowBytes, n * rowBytes), scales.AsSpan(r0 * rowScales, n * rowScales), tensorData, n, cols, x, y.AsSpan(r0, n));
                    });
                }
                best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
            double bytes = blocks.Length + scales.Length;
            Console.WriteLine($"{spec,-12} {bytes / best / 1e9,6:0.00} GB/s of codes, {(double)rows * cols / best / 1e9,6:0.00} G weights/s, " +
                              $"{(double)rows * cols * vectors / best / 1e9,6:0.00} G multiply-adds/s, {best * 1e3,7:0.00} ms");
        }
        return 0;
    }

    /// <summary>Plain F16/BF16 rows (<c>TensorData.TryDotRows</c>, as mapped checkpoints and the cast codecs use it);
    /// with several vectors <c>TensorData.TryDotRowsMany</c> on one thread, the vectors in calls of
    /// <c>ManyVectorsPerCall</c> over blocks of 128 rows (as the runtime's several-token product does).</summary>
    private static void SixteenBit(DType dtype, float[] w, int rows, int cols, float[] x, float[] y, int threads, int vectors)
    {
        var bytes = new byte[w.LongLength * 2];
        TensorData.FromFloat(w, dtype, bytes);
        if (!TensorData.TryDotRows(bytes, dtype, rows, cols, x, y)) { Console.WriteLine($"{dtype}: no step kernel"); return; }
        double best = double.MaxValue;
        int per = (rows + threads - 1) / threads;
        for (int run = 0; run < 40; run++)
        {
            var clock = Stopwatch.StartNew();
            if (vectors > 1)
            {
                const int Block = 128;
                for (int r0 = 0; r0 < rows; r0 += Block)
                {
                    int n = Math.Min(Block, rows - r0);
                    for (int v = 0; v < vectors; v += TensorData.ManyVectorsPerCall)
                    {
                        int k = Math.Min(TensorData.ManyVectorsPerCall, vectors - v);
                        TensorData.TryDotRowsMany(bytes.AsSpan(r0 * cols * 2, n * cols * 2), dtype, n, cols, k, x.AsSpan(v * cols, k * cols),
                            y.AsSpan(v * rows + r0, (k - 1) * rows + n), rows);
                    }
                }
            }
            else
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
                {
                    int r0 = i * per, n = Math.Min(rows, r0 + per) - r0;
                    TensorData.TryDotRows(bytes.AsSpan(r0 * cols * 2, n * cols * 2), dtype, n, cols, x, y.AsSpan(r0, n));
                });
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        Console.WriteLine($"{dtype.ToString().ToLowerInvariant(),-12} {bytes.Length / best / 1e9,6:0.00} GB/s of codes, {(double)rows * cols / best / 1e9,6:0.00} G weights/s, " +
                          $"{(double)rows * cols * vectors / best / 1e9,6:0.00} G multiply-adds/s, {best * 1e3,7:0.00} ms");
    }
}
