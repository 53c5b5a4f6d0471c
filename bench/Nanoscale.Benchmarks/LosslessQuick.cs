using System.Diagnostics;
using Nanoscale.Lossless;
using ZstdSharp;
using Nanoscale.Tensors;

namespace Nanoscale.Benchmarks;

/// <summary>
/// <c>dotnet run -c Release --project bench/Nanoscale.Benchmarks -- lossless-quick</c>: sizes against the order-0
/// bound and zstd, and best-of-N stopwatch throughput, in seconds rather than BenchmarkDotNet's minutes.
/// </summary>
internal static class LosslessQuick
{
    public static void Run()
    {
        var original = LosslessData.Gpt2AttnBf16;
        double gb = original.Length / 1e9;
        Console.WriteLine($"gpt2-attn BF16 weights: {original.Length} bytes ({original.Length / 2} weights)");
        foreach (double minimumSavings in new[] { 0.0, 0.01 })
        {
            var options = new LosslessOptions { MinimumSavings = minimumSavings };
            var encoded = LosslessCodec.Encode(original, DType.BF16, options, out var report);
            Console.WriteLine($"\nMinimumSavings = {minimumSavings}: {report.EncodedBytes} bytes, ratio {report.Ratio:F4}:1, " +
                              $"bound {report.BoundBytes} ({report.BoundRatio:F4}:1), encoded/bound {report.EncodedOverBound:F5}, {report.BitsPerWeight:F3} bpw");
            foreach (var p in report.Planes)
                Console.WriteLine($"  {p.Name,-22} raw {p.RawBytes,10} coded {p.CodedBytes,10} H {p.EntropyBitsPerSymbol:F4} b/sym bound {p.BoundBytes,10} " +
                                  $"coded/bound {p.CodedOverBound:F5} tables {p.TableBytes} chunks coded/raw {p.ChunksCoded}/{p.ChunksRaw}");
            var decoded = new byte[original.Length];
            var buffer = new byte[LosslessCodec.GetMaxEncodedLength(original.Length, DType.BF16, options)];
            foreach (int threads in new[] { 1, 2 })
            {
                var o = options with { Parallelism = new(threads) };
                double enc = Best(() => LosslessCodec.Encode(original, DType.BF16, buffer, o));
                double dec = Best(() => LosslessCodec.Decode(encoded, decoded, "gpt2-attn", o));
                Console.WriteLine($"  {threads} thread(s): encode {gb / enc:F2} GB/s, decode {gb / dec:F2} GB/s");
            }
            if (!decoded.AsSpan().SequenceEqual(original)) throw new InvalidOperationException("round trip failed");
        }
        const int tensorBytes = 768 * 768 * 2;
        foreach (int chunkKiB in new[] { 128, 256, 512, 1024, 2048 })
        {
            var options = new LosslessOptions { ChunkSizeBytes = chunkKiB << 10 };
            long total = 0;
            for (int t = 0; t * tensorBytes < original.Length; t++)
                total += LosslessCodec.Encode(original.AsSpan(t * tensorBytes, tensorBytes), DType.BF16, options).Length;
            Console.WriteLine($"tensor by tensor, {chunkKiB} KiB chunks: {total} bytes, ratio {(double)original.Length / total:F4}:1");
        }
        foreach (int k in new[] { 7, 6, 5, 4, 3, 2, 1, 0 })
        {
            VariablePrecision.Encode(original, DType.BF16, new VariablePrecisionOptions { MantissaBits = k }, out var vp);
            Console.WriteLine($"vp:mant={k}: {vp.BitsPerWeight:F3} bpw, SQNR {vp.SqnrDb:F2} dB");
        }
        var exponentCounts = new long[256];
        for (int i = 0; i < original.Length; i += 2) exponentCounts[((original[i] | (original[i + 1] << 8)) >> 7) & 0xFF]++;
        int mode = Array.IndexOf(exponentCounts, exponentCounts.Max());
        Console.WriteLine($"modal exponent field {mode}");
        foreach (int k in new[] { 4, 3 })
        foreach (var (taper, width, offset) in new[] { (1, 2, 0), (1, 1, 2), (1, 3, 3), (2, 3, 3) })
        {
            var o = new VariablePrecisionOptions { MantissaBits = k, TaperBitsPerBinade = taper, TaperWidth = width, TaperCenter = mode + offset };
            VariablePrecision.Encode(original, DType.BF16, o, out var vp);
            Console.WriteLine($"vp:mant={k},taper={taper},width={width},center={mode + offset}: {vp.BitsPerWeight:F3} bpw, SQNR {vp.SqnrDb:F2} dB");
        }
        foreach (int level in new[] { 3, 19 })
        {
            var bytes = level >= 19 ? original[..(8 * 768 * 768 * 2)] : original;
            using var compressor = new Compressor(level);
            var clock = Stopwatch.StartNew();
            var compressed = compressor.Wrap(bytes).ToArray();
            double seconds = clock.Elapsed.TotalSeconds;
            using var decompressor = new Decompressor();
            double dec = Best(() => decompressor.Unwrap(compressed));
            Console.WriteLine($"zstd -{level} on {bytes.Length} bytes: ratio {(double)bytes.Length / compressed.Length:F4}:1, " +
                              $"compress {bytes.Length / 1e9 / seconds:F3} GB/s, decompress {bytes.Length / 1e9 / dec:F2} GB/s (1 thread)");
        }
    }

    private static double Best(Action action, int runs = 7)
    {
        action();
        double best = double.MaxValue;
        for (int i = 0; i < runs; i++)
        {
            var clock = Stopwatch.StartNew();
            action();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        return best;
    }
}
