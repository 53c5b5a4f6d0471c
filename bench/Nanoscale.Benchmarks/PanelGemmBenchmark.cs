using System.Diagnostics;
using Nanoscale.Runtime;

namespace Nanoscale.Benchmarks;

/// <summary>
/// The float product of many tokens (<see cref="PanelGemm"/>) alone, on one thread, against the FMA peak: ROWS float
/// rows (decoded once, as a window's tile is) or, with <c>bf16</c>, the same rows as stored BF16, times TOKENS packed
/// tokens in one call; best of 20 after a warm-up. <c>narrow</c>: the 256-bit kernels an AVX2 machine runs, where
/// AVX-512 is.
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- panel-gemm [rows 512] [cols 2048] [tokens 64] [f32|bf16] [narrow]</code>
/// </summary>
internal static class PanelGemmBenchmark
{
    public static unsafe int Run(string[] args)
    {
        int rows = args.Length > 0 ? int.Parse(args[0]) : 512, cols = args.Length > 1 ? int.Parse(args[1]) : 2048;
        int tokens = args.Length > 2 ? int.Parse(args[2]) : 64;
        bool bf16 = args.Length > 3 && args[3] == "bf16", narrow = args.Length > 4 && args[4] == "narrow";
        var random = new Random(1);
        float[] w = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)(random.NextDouble() - 0.5))];
        ushort[] stored = [.. w.Select(v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16))];
        float[] x = [.. Enumerable.Range(0, tokens * cols).Select(_ => (float)(random.NextDouble() - 0.5))];
        var y = new float[tokens * rows];
        using var packed = new LinearKernels.PackedTokens(x, tokens, cols); // as the runtime packs them: from a 64-byte boundary
        double best = double.MaxValue;
        float* xp = packed.Pointer;
        fixed (float* wp = w)
        fixed (ushort* sp = stored)
        fixed (float* yp = y)
        {
            for (int run = 0; run < 23; run++)
            {
                var clock = Stopwatch.StartNew();
                if (bf16 && narrow) PanelGemm.MultiplyBf16Narrow(sp, rows, cols, xp, tokens, yp, rows);
                else if (bf16) PanelGemm.MultiplyBf16(sp, rows, cols, xp, tokens, yp, rows);
                else if (narrow) PanelGemm.MultiplyNarrow(wp, rows, cols, xp, tokens, yp, rows);
                else PanelGemm.Multiply(wp, rows, cols, xp, tokens, yp, rows);
                if (run >= 3) best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
        }
        double macs = (double)rows * cols * tokens;
        Console.WriteLine($"panel kernel ({(bf16 ? "bf16" : "f32")} rows{(narrow ? ", 256-bit" : "")}), {rows} rows × {cols} columns × {tokens} tokens, one thread: {macs / best / 1e9:0.0} G multiply-adds/s ({best * 1e3:0.000} ms)");
        return 0;
    }
}
