using System.Diagnostics;
using System.Globalization;
using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.LowRank;
using Nanoscale.Tensors;

namespace Nanoscale.Benchmarks;

/// <summary>
/// LDLQ (+ the randomized Hadamard transform) at real layer widths (issue 16: 4096×4096 under 60 s, 4096×14336 under
/// 240 s on 2 threads): a random layer and a real-looking Hessian are encoded by the same codec call <c>compress</c>
/// makes, timed whole and by phase, with the process's peak memory.
/// Usage: ldlq-scale [--shapes 4096x4096,4096x14336] [--format caldera:rank=0,q=mxint4,had=1] [--threads 2] [--dir /tmp]
/// </summary>
/// <remarks>
/// The Hessian looks like a transformer layer's: per-channel scales log-normal with 1% outlier channels 20× larger,
/// channels correlated through a rank-64 factor, plus an isotropic part (<c>H = D (B Bᵀ/64 + I) D</c>), normalised and
/// damped as calibration's are. Building it and the weight is not timed.
/// </remarks>
internal static class LdlqScaleBenchmark
{
    public static int Run(string[] args)
    {
        var shapes = (ProcessMemory.Arg(args, "--shapes") ?? "4096x4096,4096x14336").Split(',')
            .Select(s => s.Split('x').Select(v => int.Parse(v, CultureInfo.InvariantCulture)).ToArray()).ToArray();
        string spec = ProcessMemory.Arg(args, "--format") ?? "caldera:rank=0,q=mxint4,had=1";
        int threads = int.Parse(ProcessMemory.Arg(args, "--threads") ?? "2", CultureInfo.InvariantCulture);
        string dir = ProcessMemory.Arg(args, "--dir") ?? Path.GetTempPath();
        var parallelism = new Parallelism(threads);
        Console.WriteLine($"# {spec}, {threads} threads, dense algebra: {DenseAlgebra.Description}");
        Console.WriteLine("| layer | Hessian factor s | LDLQ + transform + error s (whole encode) | peak RSS GiB | activation error |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var shape in shapes)
        {
            int rows = shape[0], cols = shape[1];
            var hessian = RealLookingHessian(cols, 64, seed: 7);
            // The factor alone (what the encode below computes again for the rotated H), for the phase split.
            var clock = Stopwatch.StartNew();
            _ = hessian.ComputeLdlqFactor(native: true);
            double factorSeconds = clock.Elapsed.TotalSeconds;
            GC.Collect();

            string path = Path.Combine(dir, $"ldlq-scale-{rows}x{cols}-{Environment.ProcessId}.safetensors");
            try
            {
                var weights = new float[(long)rows * cols];
                var random = new Random(3);
                for (int r = 0; r < rows; r++)
                {
                    double rowScale = 0.02 * Math.Exp(0.3 * Caldera.Gaussian(random));
                    for (int c = 0; c < cols; c++) weights[(long)r * cols + c] = (float)(rowScale * Caldera.Gaussian(random));
                }
                var bytes = new byte[weights.Length * 4L];
                TensorData.FromFloat(weights, DType.F32, bytes);
                weights = null;
                new SafetensorsWriter(path).Add("model.layers.0.mlp.down_proj.weight", DType.F32, [rows, cols], bytes).Commit();
                bytes = null;
                GC.Collect();
                using var file = CheckpointLoader.Open(path);
                using var view = file.Map(file.Tensors[0]);
                var calibration = new CalibrationSet(new Dictionary<string, Hessian> { [file.Tensors[0].Name] = hessian }, 4096, "generated");
                var codec = CodecRegistry.Create(spec);
                ProcessMemory.ResetPeakRss();
                clock.Restart();
                var encoded = codec.Encode(view, new EncodeOptions { Parallelism = parallelism, Calibration = calibration });
                double seconds = clock.Elapsed.TotalSeconds;
                double peak = ProcessMemory.PeakRssBytes() / (double)(1L << 30);
                string error = encoded.Parameters?.GetValueOrDefault("activation_error") is { } e
                    ? double.Parse(e, CultureInfo.InvariantCulture).ToString("0.0000", CultureInfo.InvariantCulture) : "-";
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"| {rows}×{cols} | {factorSeconds:0.0} | {seconds:0.0} | {peak:0.00} | {error} |"));
            }
            finally
            {
                File.Delete(path);
            }
        }
        return 0;
    }

    /// <summary><c>D (B Bᵀ/r + I) D</c>, normalised and damped like a calibration Hessian.</summary>
    internal static Hessian RealLookingHessian(int n, int rank, int seed)
    {
        var random = new Random(seed);
        var b = new double[(long)n * rank];
        for (long i = 0; i < b.Length; i++) b[i] = Caldera.Gaussian(random);
        var bt = new double[(long)rank * n];
        for (int i = 0; i < n; i++)
            for (int k = 0; k < rank; k++) bt[(long)k * n + i] = b[(long)i * rank + k];
        var sum = new double[(long)n * n];
        DenseAlgebra.Gemm(n, n, rank, 1.0 / rank, b, 0, rank, bt, 0, n, 0, sum, 0, n, Parallelism.AllCores);
        var d = new double[n];
        for (int i = 0; i < n; i++) d[i] = Math.Exp(0.5 * Caldera.Gaussian(random)) * (random.NextDouble() < 0.01 ? 20 : 1);
        for (int i = 0; i < n; i++)
        {
            sum[(long)i * n + i] += 1;
            for (int j = 0; j < n; j++) sum[(long)i * n + j] *= d[i] * d[j];
        }
        return Hessian.FromSum(sum, n, 1);
    }
}
