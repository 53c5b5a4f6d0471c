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
    private const int Cols = 4096;

    private static float[] Gaussian(int count)
    {
        var random = new Random(2026);
        var w = new float[count / Cols * Cols];
        for (int i = 0; i < w.Length; i++)
        {
            double u1 = 1.0 - random.NextDouble(), u2 = random.NextDouble();
            w[i] = (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }
        return w;
    }

    private static double Mse(IBlockCodec codec, float[] w, out double bpw, out double seconds)
    {
        int rows = w.Length / Cols;
        var clock = Stopwatch.StartNew();
        var (blocks, scales, tensorData) = BlockMatrix.Encode(codec, w, rows, Cols);
        seconds = clock.Elapsed.TotalSeconds;
        var decoded = new float[w.Length];
        codec.Dequantize(blocks, scales, tensorData, rows, Cols, new CodecOptions(), decoded);
        double mse = 0;
        for (int i = 0; i < w.Length; i++) mse += (double)(w[i] - decoded[i]) * (w[i] - decoded[i]);
        bpw = (blocks.Length + scales.Length + tensorData.Length) * 8.0 / w.Length;
        return mse / w.Length;
    }

    /// <summary>
    /// The residual stage's scale ρ of <c>e8:bits=3|4</c> against the mean squared error on Gaussian weights: the
    /// measurement the codec's constants come from.
    /// <code>dotnet bench/Nanoscale.Benchmarks/bin/Release/net10.0/Nanoscale.Benchmarks.dll e8-rvq [weights]</code>
    /// </summary>
    public static int Residual(string[] args)
    {
        var w = Gaussian(args.Length > 0 ? int.Parse(args[0]) : 1 << 18);
        Console.WriteLine($"Gaussian weights, σ = 1, {w.Length:N0}; e8 residual stage at ρ × the block scale");
        Console.WriteLine("| bits | ρ | MSE per weight | SNR dB |");
        Console.WriteLine("|---:|---:|---:|---:|");
        foreach (int bits in (int[])[3, 4])
            for (int step = 0; step <= 20; step++)
            {
                float rho = 0.15f + 0.0125f * step;
                double mse = Mse(new Nanoscale.Formats.E8.E8Codec("e8", bits, rho), w, out _, out _);
                Console.WriteLine($"| {bits} | {rho:0.000} | {mse:0.00000} | {-10 * Math.Log10(mse):0.00} |");
            }
        return 0;
    }

    public static int Run(string[] args)
    {
        string[] formats = (args.Length > 0 ? args[0] : "e8,e8:bits=3,e8:bits=4,mxint2,mxint3,nxfp3,mxfp4,nxfp4,nvfp4").Split(',');
        var w = Gaussian(args.Length > 1 ? int.Parse(args[1]) : 1 << 20);
        int rows = w.Length / Cols, cols = Cols;
        Console.WriteLine($"Gaussian weights, σ = 1, {w.Length:N0} of them ({rows} × {cols})");
        Console.WriteLine("| format | bits per weight | MSE per weight | SNR dB | encode s |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var spec in formats)
        {
            double mse = Mse(CodecRegistry.CreateBlockCodec(spec), w, out double bpw, out double seconds);
            Console.WriteLine($"| `{spec}` | {bpw:0.000} | {mse:0.0000} | {-10 * Math.Log10(mse):0.00} | {seconds:0.0} |");
        }
        Console.WriteLine("| Lloyd–Max 2-bit scalar (no scale stored) | 2 | 0.1175 | 9.30 | |");
        Console.WriteLine($"| rate–distortion bound at 2 bits | 2 | {Math.Pow(2, -4):0.0000} | {40 * Math.Log10(2):0.00} | |");
        Console.WriteLine($"| rate–distortion bound at 2.25 bits | 2.25 | {Math.Pow(2, -4.5):0.0000} | {45 * Math.Log10(2):0.00} | |");
        return 0;
    }
}
