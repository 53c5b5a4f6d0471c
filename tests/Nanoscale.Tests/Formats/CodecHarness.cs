using Nanoscale.Formats;
using Nanoscale.Codecs;

namespace Nanoscale.Tests.Formats;

/// <summary>Runs a block codec over a whole [rows, cols] tensor (tensor pass, quantize, dequantize).</summary>
internal static class CodecHarness
{
    public sealed record Encoded(byte[] Blocks, byte[] Scales, byte[] TensorData);

    public static Encoded Quantize(IBlockCodec codec, float[] values, int rows, int cols, CodecOptions? options = null)
    {
        options ??= CodecOptions.Default;
        var tensorData = new byte[codec.TensorDataBytes];
        ITensorDataAccumulator acc = codec.CreateTensorDataAccumulator(options);
        acc.Add(values, 0);
        acc.WriteTensorData(tensorData);
        int nb = codec.BlocksPerRow(cols);
        var blocks = new byte[rows * nb * codec.BytesPerBlock];
        var scales = new byte[rows * nb * codec.ScaleBytesPerBlock];
        codec.Quantize(values, rows, cols, tensorData, options, 0, blocks, scales);
        return new Encoded(blocks, scales, tensorData);
    }

    public static float[] Dequantize(IBlockCodec codec, Encoded e, int rows, int cols, CodecOptions? options = null)
    {
        var result = new float[rows * cols];
        codec.Dequantize(e.Blocks, e.Scales, e.TensorData, rows, cols, options ?? CodecOptions.Default, result);
        return result;
    }

    public static float[] RoundTrip(IBlockCodec codec, float[] values, int rows, int cols, CodecOptions? options = null) =>
        Dequantize(codec, Quantize(codec, values, rows, cols, options), rows, cols, options);

    public static IBlockCodec Codec(string spec) => CodecRegistry.CreateBlockCodec(spec);
}
