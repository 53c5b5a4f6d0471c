using System.Diagnostics;
using System.Globalization;
using static Nanoscale.Benchmarks.ProcessMemory;
using System.IO.Hashing;
using Nanoscale.IO;
using Nanoscale.Pipeline;

namespace Nanoscale.Benchmarks;

/// <summary>
/// Generates a multi-GB sharded Llama-shaped checkpoint (or reuses one) and reads every tensor through
/// <see cref="CheckpointLoader"/>, twice: hashing the raw mapped bytes, and converting them to float32 in chunks.
/// Reports throughput and the process's peak resident memory (VmHWM), which must stay far below the checkpoint size.
/// Usage: io-read [--dir DIR] [--layers N] [--keep]
/// </summary>
internal static class IoReadBenchmark
{
    public static int Run(string[] args)
    {
        string dir = Arg(args, "--dir") ?? Path.Combine(Path.GetTempPath(), "nanoscale-io-bench");
        int layers = int.Parse(Arg(args, "--layers") ?? "10", CultureInfo.InvariantCulture);
        bool keep = args.Contains("--keep");
        var options = new SampleOptions
        {
            Dim = 4096, HiddenDim = 11008, Heads = 32, KvHeads = 8, VocabSize = 32000, Layers = layers,
            MaxSeqLen = 4096, ShardBytes = 1L << 30,
        };
        if (!File.Exists(Path.Combine(dir, CheckpointLoader.IndexFileName)))
        {
            Console.Error.WriteLine($"generating {SampleCheckpoint.ParameterCount(options) / 1e9:0.00}B BF16 parameters into {dir} ...");
            var clock = Stopwatch.StartNew();
            SampleCheckpoint.Write(dir, options);
            Console.Error.WriteLine($"generated in {clock.Elapsed.TotalSeconds:0.0} s");
        }
        long hwmAfterGeneration = PeakRssBytes();
        ResetPeakRss();

        using var checkpoint = CheckpointLoader.Open(dir);
        long total = checkpoint.Tensors.Sum(t => t.ByteLength);
        long largest = checkpoint.Tensors.Max(t => t.ByteLength);
        int shards = Directory.GetFiles(dir, "*.safetensors").Length;

        // Pass 1: raw bytes (XxHash3 over each mapped tensor, so every page is touched).
        var clockRaw = Stopwatch.StartNew();
        ulong digest = 0;
        foreach (var tensor in checkpoint.Tensors)
        {
            using var view = checkpoint.Map(tensor);
            for (long offset = 0; offset < view.Length; offset += 1 << 26)
                digest ^= XxHash3.HashToUInt64(view.Slice(offset, (int)Math.Min(1 << 26, view.Length - offset)));
        }
        double rawSeconds = clockRaw.Elapsed.TotalSeconds;
        long rawPeak = PeakRssBytes();

        // Pass 2: decode to float32 in 1M-element chunks, both cores over tensors.
        ResetPeakRss();
        var clockFloat = Stopwatch.StartNew();
        double checksum = 0;
        object gate = new();
        Parallel.ForEach(checkpoint.Tensors, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, tensor =>
        {
            using var view = checkpoint.Map(tensor);
            var buffer = new float[1 << 20];
            double local = 0;
            for (long first = 0; first < tensor.ElementCount; first += buffer.Length)
            {
                var span = buffer.AsSpan(0, (int)Math.Min(buffer.Length, tensor.ElementCount - first));
                view.ReadFloats(first, span);
                local += span[0];
            }
            lock (gate) checksum += local;
        });
        double floatSeconds = clockFloat.Elapsed.TotalSeconds;
        long floatPeak = PeakRssBytes();

        var report = string.Create(CultureInfo.InvariantCulture, $"""
            checkpoint: {dir} ({shards} shards, {checkpoint.Tensors.Count} tensors, {total / 1e9:0.00} GB, largest tensor {largest / 1e6:0.0} MB)
            raw mapped read + XxHash3, 1 thread: {rawSeconds:0.00} s = {total / rawSeconds / 1e9:0.00} GB/s, peak RSS {rawPeak / 1e6:0} MB
            BF16 -> F32 conversion, {Environment.ProcessorCount} threads:   {floatSeconds:0.00} s = {total / floatSeconds / 1e9:0.00} GB/s, peak RSS {floatPeak / 1e6:0} MB
            (peak RSS while generating: {hwmAfterGeneration / 1e6:0} MB; digest {digest:x16}, checksum {checksum:0.###})
            """);
        Console.WriteLine(report);
        if (!keep) Directory.Delete(dir, recursive: true);
        return 0;
    }
}
