using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Jobs;
using Nanoscale.Lossless;
using ZstdSharp;
using Nanoscale.Tensors;

namespace Nanoscale.Benchmarks;

/// <summary>
/// Lossless encode/decode of the 48 BF16 attention weights of gpt2-attn (56.6 MB), on one core and on two.
/// Throughput = original bytes / time (BenchmarkDotNet's column shows it per operation of 56.6 MB).
/// </summary>
[SimpleJob(RuntimeMoniker.Net10_0, warmupCount: 2, iterationCount: 8)]
[MemoryDiagnoser]
public class LosslessBenchmarks
{
    private byte[] _original = [];
    private byte[] _encoded = [];
    private byte[] _buffer = [];
    private byte[] _decoded = [];
    private LosslessOptions _options = LosslessOptions.Default;

    [Params(1, 2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _original = LosslessData.Gpt2AttnBf16;
        _options = new LosslessOptions { Parallelism = new(Threads) };
        _encoded = LosslessCodec.Encode(_original, DType.BF16, _options);
        _buffer = new byte[LosslessCodec.GetMaxEncodedLength(_original.Length, DType.BF16, _options)];
        _decoded = new byte[_original.Length];
    }

    [Benchmark]
    public int Encode() => LosslessCodec.Encode(_original, DType.BF16, _buffer, _options);

    [Benchmark]
    public void Decode() => LosslessCodec.Decode(_encoded, _decoded, "gpt2-attn", _options);
}

/// <summary>zstd on the same bytes, for ratio and speed comparison (level 19 on the first 8 tensors only: it is slow).</summary>
[SimpleJob(RuntimeMoniker.Net10_0, warmupCount: 1, iterationCount: 3)]
public class ZstdBenchmarks
{
    private byte[] _original = [];
    private byte[] _compressed = [];

    [Params(3, 19)]
    public int Level { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var all = LosslessData.Gpt2AttnBf16;
        _original = Level >= 19 ? all[..(8 * 768 * 768 * 2)] : all;
        using var compressor = new Compressor(Level);
        _compressed = compressor.Wrap(_original).ToArray();
        Console.WriteLine($"// zstd -{Level}: {_original.Length} → {_compressed.Length} bytes, ratio {(double)_original.Length / _compressed.Length:F4}:1");
    }

    [Benchmark]
    public int Compress()
    {
        using var compressor = new Compressor(Level);
        return compressor.Wrap(_original).Length;
    }

    [Benchmark]
    public int Decompress()
    {
        using var decompressor = new Decompressor();
        return decompressor.Unwrap(_compressed).Length;
    }
}
