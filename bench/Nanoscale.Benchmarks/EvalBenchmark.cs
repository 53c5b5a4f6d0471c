using System.Diagnostics;
using System.Globalization;
using static Nanoscale.Benchmarks.ProcessMemory;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Codecs;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Benchmarks;

/// <summary>
/// Evaluation throughput and memory on a generated Llama-shaped model of about 100 M parameters (F32), run once on
/// the plain checkpoint and once on an MXFP4-compressed copy (decoded tile by tile inside the products).
/// Each run reports tokens/s over whole windows (perplexity protocol on random token ids) and the growth of the peak
/// resident set while loading and evaluating.
/// Usage: eval [--dir DIR] [--tokens N] [--ctx N] [--format SPEC] [--only f32|SPEC] [--keep]
/// (run each mode in its own process with --only for a clean peak-RSS reading).
/// </summary>
internal static class EvalBenchmark
{
    public static int Run(string[] args)
    {
        string dir = Arg(args, "--dir") ?? Path.Combine(Path.GetTempPath(), "nanoscale-eval-bench");
        int tokens = int.Parse(Arg(args, "--tokens") ?? "1024", CultureInfo.InvariantCulture);
        int ctx = int.Parse(Arg(args, "--ctx") ?? "256", CultureInfo.InvariantCulture);
        string format = Arg(args, "--format") ?? "mxfp4";
        var options = new SampleOptions
        {
            Dim = 768, HiddenDim = 2048, Layers = 12, Heads = 12, KvHeads = 4, VocabSize = 16000, MaxSeqLen = 1024, DType = DType.F32,
        };
        var plain = Path.Combine(dir, "plain");
        var compressed = Path.Combine(dir, $"model.{format.Replace(':', '_')}.safetensors");
        if (!File.Exists(Path.Combine(plain, "config.json")))
        {
            Console.Error.WriteLine($"generating {SampleCheckpoint.ParameterCount(options) / 1e6:0.0} M F32 parameters in {plain} ...");
            SampleCheckpoint.Write(plain, options);
        }
        if (!File.Exists(compressed))
        {
            using var source = CheckpointLoader.Open(plain);
            Compressor.Compress(source, compressed, new CompressOptions { Codec = CodecRegistry.Create(format) });
        }

        var rng = new Random(1);
        var document = Enumerable.Range(0, tokens + 1).Select(_ => rng.Next(options.VocabSize)).ToArray();
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"model: {SampleCheckpoint.ParameterCount(options) / 1e6:0.0} M parameters; {tokens} predicted tokens in windows of {ctx}; {Environment.ProcessorCount} threads"));
        var only = Arg(args, "--only");
        foreach (var (label, path) in new[] { ("f32", plain), (format, compressed) })
        {
            if (only is not null && only != label) continue;
            GC.Collect();
            GC.WaitForPendingFinalizers();
            ResetPeakRss();
            long before = PeakRssBytes();
            var clock = Stopwatch.StartNew();
            using var checkpoint = LogicalCheckpoint.Open(path);
            using var weights = new LogicalWeightSource(checkpoint);
            var model = LlamaModel.Load(checkpoint.Config!, weights, new RuntimeOptions(), path);
            double loadSeconds = clock.Elapsed.TotalSeconds;
            var result = Perplexity.Evaluate(model, [document], new PerplexityOptions { ContextLength = ctx });
            long peak = PeakRssBytes();
            long fileBytes = File.Exists(path) ? new FileInfo(path).Length : Directory.GetFiles(path).Sum(f => new FileInfo(f).Length);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{label,-8} file {fileBytes / 1e6,7:0.0} MB | load {loadSeconds,5:0.00} s | {result.TokensPerSecond,7:0.0} tokens/s | " +
                $"peak RSS {peak / 1e6,7:0.0} MB (+{(peak - before) / 1e6:0.0} MB over the process before loading)"));
            GC.KeepAlive(model);
        }
        if (!args.Contains("--keep")) Directory.Delete(dir, recursive: true);
        return 0;
    }
}
