using System.Diagnostics;
using Nanoscale.Codecs;
using Nanoscale.Formats;

namespace Nanoscale.Benchmarks;

/// <summary>
/// Mean squared error per weight of each format on Gaussian weights (σ = 1), with the stored bits per weight, beside
/// the scalar 2-bit Lloyd–Max quantizer and the rate–distortion bound (docs/e8.md).
/// <code>dotnet bench/Nanoscale.Benchmarks/bin/Release/net10.0/Nanoscale.Benchmarks.dll e8-mse [e8,mxint2,mxint3,nxfp3,mxfp4] [weights]</code>
/// </summary>
internal static class E8Distortion
{
    public static int Run(string[] args)
    {
        string[] formats = (args.Length > 0 ? args[0] : "e8,mxint2,mxint3,nxfp3,mxfp4,nvfp4").Split(',');
        int count = args.Length > 1 ? int.Parse(args[1]) : 1 << 20;
        const int cols = 4096;
        int rows = count / cols;
        var random = new Random(2026);
        var w = new float[rows * cols];
        for (int i = 0; i < w.Length; i++)
        {
            double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
            w[i] = (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        Console.WriteLine($"Gaussian weights, σ = 1, {w.Length:N0} of them ({rows} × {cols})");
        Console.WriteLine("| format | bits per weight | MSE per weight | SNR dB | encode s |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var spec in formats)
        {
            var codec = CodecRegistry.CreateBlockCodec(spec);
            var clock = Stopwatch.StartNew();
            var (blocks, scales, tensorData) = BlockMatrix.Encode(codec, w, rows, cols);
            double seconds = clock.Elapsed.TotalSeconds;
            var decoded = new float[w.Length];
            codec.Dequantize(blocks, scales, tensorData, rows, cols, new CodecOptions(), decoded);
            double mse = 0;
            for (int i = 0; i < w.Length; i++) mse += (double)(w[i] - decoded[i]) * (w[i] - decoded[i]);
            mse /= w.Length;
            double bpw = (blocks.Length + scales.Length + tensorData.Length) * 8.0 / w.Length;
            Console.WriteLine($"| `{spec}` | {bpw:0.000} | {mse:0.0000} | {-10 * Math.Log10(mse):0.00} | {seconds:0.0} |");
        }
        Console.WriteLine("| Lloyd–Max 2-bit scalar (no scale stored) | 2 | 0.1175 | 9.30 | |");
        Console.WriteLine($"| rate–distortion bound at 2 bits | 2 | {Math.Pow(2, -4):0.0000} | {40 * Math.Log10(2):0.00} | |");
        Console.WriteLine($"| rate–distortion bound at 2.25 bits | 2.25 | {Math.Pow(2, -4.5):0.0000} | {45 * Math.Log10(2):0.00} | |");
        return 0;
    }
}
