using BenchmarkDotNet.Attributes;

namespace Nanoscale.Benchmarks.Formats;

/// <summary>Block dequantization of 4M elements to float: GB/s of bf16-equivalent = 8.39e6 bytes / mean time.</summary>
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class DequantizeBenchmarks : CodecBenchmarkData
{
    [Benchmark]
    public void Dequantize() => Codec.Dequantize(Blocks, Scales, TensorData, Rows, Cols, Options, Decoded);
}
