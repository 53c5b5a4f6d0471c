using System.Diagnostics;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Nanoscale.Formats;

namespace Nanoscale.Benchmarks;

/// <summary>
/// <c>-- lanes-kernel [rows] [cols] [vectors] [seconds]</c>: the 4-bit lane kernel (<c>NibbleLanes.Group</c>, MXFP4's
/// table) alone, one thread, on every arithmetic this CPU has (<c>vpmaddubsw</c> + <c>vpmaddwd</c> on 256 bits,
/// <c>vpdpbusd</c> on 256 bits, the pair on 512 bits), each for <c>seconds</c> (default 2) so a profiler sees it: G int8
/// multiply-adds/s, unpacking included. Random codes and activations; the three must give the same floats (checked).
/// </summary>
internal static unsafe class LanesKernelBenchmark
{
    public static int Run(string[] args)
    {
        int rows = args.Length > 0 ? int.Parse(args[0]) : 1536;
        int cols = args.Length > 1 ? int.Parse(args[1]) : 576;
        int vectors = args.Length > 2 ? int.Parse(args[2]) : 16;
        double seconds = args.Length > 3 ? double.Parse(args[3], System.Globalization.CultureInfo.InvariantCulture) : 2;
        if (cols % 32 != 0 || rows < 1 || vectors is < 1 or > NibbleLanes.MaxVectors)
        {
            Console.Error.WriteLine($"rows ≥ 1, cols a multiple of 32, vectors 1..{NibbleLanes.MaxVectors}");
            return 2;
        }
        int blocks = cols / 32;
        var random = new Random(1);
        var codes = GC.AllocateArray<byte>(rows * blocks * 16, pinned: true);
        random.NextBytes(codes);
        var x = new float[vectors * cols];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(random.NextDouble() - 0.5);
        // MXFP4's unsigned table (E2M1 doubled + 12) and its bias.
        sbyte[] table = [12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0];
        var a = new NibbleLanes.Vectors();
        a.Set(x, vectors, cols, evensThenOdds: true, bias: 12);
        var factors = GC.AllocateArray<float>(blocks * NibbleLanes.GroupRows, pinned: true);
        for (int i = 0; i < factors.Length; i++) factors[i] = MathF.ScaleB(1, random.Next(-4, 4));
        var tables = new NibbleLanes.Tables(NibbleDot.Broadcast(table));
        var results = new List<(NibbleLanes.Arithmetic, float[])>();
        foreach (var arithmetic in Arithmetics())
        {
            var y = GC.AllocateArray<float>(vectors * rows, pinned: true);
            var unpacked = NibbleLanes.Unpacked(blocks);
            // Pinned arrays: their addresses stay.
            byte* c = (byte*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref codes[0]);
            float* f = (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref factors[0]);
            float* y0 = (float*)System.Runtime.CompilerServices.Unsafe.AsPointer(ref y[0]);
            {
                void Pass()
                {
                    for (int r = 0; r < rows; r += NibbleLanes.GroupRows)
                        NibbleLanes.Group(c + (nint)r * blocks * 16, blocks * 16, Math.Min(NibbleLanes.GroupRows, rows - r), blocks, f, a, tables,
                            unpacked, y0 + r, rows, arithmetic);
                }
                Pass();
                long passes = 0;
                double best = double.MaxValue;
                var total = Stopwatch.StartNew();
                while (total.Elapsed.TotalSeconds < seconds)
                {
                    var clock = Stopwatch.StartNew();
                    Pass();
                    best = Math.Min(best, clock.Elapsed.TotalSeconds);
                    passes++;
                }
                double mean = total.Elapsed.TotalSeconds / passes;
                double macs = (double)rows * cols * vectors;
                Console.WriteLine($"{arithmetic,-8} {rows} × {cols}, {vectors} vectors: best {macs / best / 1e9,6:0.0}, mean {macs / mean / 1e9,6:0.0} G int8 multiply-adds/s ({passes} passes)");
            }
            results.Add((arithmetic, y));
        }
        foreach (var (arithmetic, y) in results.Skip(1))
            if (!y.AsSpan().SequenceEqual(results[0].Item2))
            {
                Console.Error.WriteLine($"{arithmetic} differs from {results[0].Item1}");
                return 1;
            }
        return 0;
    }

    private static IEnumerable<NibbleLanes.Arithmetic> Arithmetics()
    {
        yield return NibbleLanes.Arithmetic.Widened;
        if (AvxVnni.IsSupported) yield return NibbleLanes.Arithmetic.Vnni;
        if (NibbleLanes.WideSupported) yield return NibbleLanes.Arithmetic.Wide;
    }
}
