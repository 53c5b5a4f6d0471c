using BenchmarkDotNet.Attributes;
using Nanoscale.Formats;
using Nanoscale.Codecs;

namespace Nanoscale.Benchmarks.Formats;

/// <summary>NxFP presets against MXFP4, one core: quantize (the candidate search) and dequantize of the same
/// 1024 × 4096 weight-like tensor as <see cref="CodecBenchmarkData"/> (GB/s = 8.39e6 bf16 bytes / mean time).</summary>
[SimpleJob(launchCount: 1, warmupCount: 3, iterationCount: 8)]
public class NxfpBenchmarks
{
    private const int Rows = 1024, Cols = 4096;

    [Params("mxfp4", "nxfp3", "nxfp4", "nxfp5", "nxfp6", "nxfp4-m16")]
    public string Spec { get; set; } = "nxfp4";

    private IBlockCodec _codec = null!;
    private float[] _source = null!, _decoded = null!;
    private byte[] _blocks = null!, _scales = null!;
    private readonly CodecOptions _options = new() { Parallelism = new(1) };

    [GlobalSetup]
    public void Setup()
    {
        _codec = CodecRegistry.CreateBlockCodec(Spec);
        var random = new Random(42);
        _source = new float[Rows * Cols];
        for (int i = 0; i < _source.Length; i++)
        {
            double g = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
            float v = (float)(g * 0.02 * (random.Next(1000) == 0 ? 20 : 1));
            _source[i] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(v) & unchecked((int)0xFFFF0000));
        }
        int nb = _codec.BlocksPerRow(Cols);
        _blocks = new byte[Rows * nb * _codec.BytesPerBlock];
        _scales = new byte[Rows * nb * _codec.ScaleBytesPerBlock];
        _decoded = new float[Rows * Cols];
        _codec.Quantize(_source, Rows, Cols, [], _options, 0, _blocks, _scales);
    }

    [Benchmark]
    public void Quantize() => _codec.Quantize(_source, Rows, Cols, [], _options, 0, _blocks, _scales);

    [Benchmark]
    public void Dequantize() => _codec.Dequantize(_blocks, _scales, [], Rows, Cols, _options, _decoded);
}
