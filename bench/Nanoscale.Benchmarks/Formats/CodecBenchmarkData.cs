using BenchmarkDotNet.Attributes;
using Nanoscale.Formats;
using Nanoscale.Codecs;

namespace Nanoscale.Benchmarks.Formats;

/// <summary>A 1024 × 4096 tensor of weight-like values (Gaussian, σ = 0.02, a few outliers), bf16-rounded, fixed seed.
/// Throughput is reported per bf16 input byte: 2 bytes per element, 8 MiB per operation.</summary>
public abstract class CodecBenchmarkData
{
    protected const int Rows = 1024, Cols = 4096;

    [Params("mxfp4", "mxfp6", "mxfp8", "mxint8", "nvfp4")]
    public string Spec { get; set; } = "mxfp4";

    /// <summary>1 = one core; 2 = both cores of the benchmark VM.</summary>
    [Params(1, 2)]
    public int Threads { get; set; } = 1;

    protected IBlockCodec Codec = null!;
    protected float[] Source = null!;
    protected byte[] Blocks = null!, Scales = null!, TensorData = null!;
    protected float[] Decoded = null!;
    protected CodecOptions Options = CodecOptions.Default;

    [GlobalSetup]
    public void Setup()
    {
        Codec = CodecRegistry.CreateBlockCodec(Spec);
        Options = new CodecOptions { Parallelism = new(Threads) };
        var random = new Random(42);
        Source = new float[Rows * Cols];
        for (int i = 0; i < Source.Length; i++)
        {
            double g = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
            float v = (float)(g * 0.02 * (random.Next(1000) == 0 ? 20 : 1));
            Source[i] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(v) & unchecked((int)0xFFFF0000));
        }
        int nb = Codec.BlocksPerRow(Cols);
        Blocks = new byte[Rows * nb * Codec.BytesPerBlock];
        Scales = new byte[Rows * nb * Codec.ScaleBytesPerBlock];
        TensorData = new byte[Codec.TensorDataBytes];
        ITensorDataAccumulator acc = Codec.CreateTensorDataAccumulator(Options);
        acc.Add(Source, 0);
        acc.WriteTensorData(TensorData);
        Codec.Quantize(Source, Rows, Cols, TensorData, Options, 0, Blocks, Scales);
        Decoded = new float[Rows * Cols];
    }
}
