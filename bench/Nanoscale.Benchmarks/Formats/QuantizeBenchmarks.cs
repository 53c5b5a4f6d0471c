using BenchmarkDotNet.Attributes;

namespace Nanoscale.Benchmarks.Formats;

/// <summary>Block quantization of 4M elements (8 MiB of bf16): GB/s = 8.39e6 bytes / mean time.</summary>
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class QuantizeBenchmarks : CodecBenchmarkData
{
    [Benchmark]
    public void Quantize() => Codec.Quantize(Source, Rows, Cols, TensorData, Options, 0, Blocks, Scales);
}
