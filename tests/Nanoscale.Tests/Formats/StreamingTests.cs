using Nanoscale.Formats;

namespace Nanoscale.Tests.Formats;

/// <summary>The pipeline streams huge tensors chunk by chunk: chunked tensor pass + chunked quantize/dequantize must
/// give exactly the bytes of the one-shot call.</summary>
public class StreamingTests
{
    [Theory]
    [InlineData("mxfp4")]
    [InlineData("mxfp6-e3m2:scale=mse")]
    [InlineData("mxint4")]
    [InlineData("nvfp4")]
    public void ChunkedRowsGiveTheSameBytesAsOneCall(string spec)
    {
        IBlockCodec codec = CodecHarness.Codec(spec);
        const int rows = 37, cols = 200;
        var random = new Random(11);
        float[] v = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)(random.NextDouble() - 0.5) * 3)];
        var whole = CodecHarness.Quantize(codec, v, rows, cols);

        int nb = codec.BlocksPerRow(cols), bpb = codec.BytesPerBlock, spb = codec.ScaleBytesPerBlock;
        var tensorData = new byte[codec.TensorDataBytes];
        ITensorDataAccumulator acc = codec.CreateTensorDataAccumulator(CodecOptions.Default);
        foreach (var (start, length) in new[] { (3000, 2000), (0, 3000), (5000, rows * cols - 5000) }) // any order and chunking
            acc.Add(v.AsSpan(start, length), start);
        acc.WriteTensorData(tensorData);
        Assert.Equal(whole.TensorData, tensorData);

        var blocks = new byte[whole.Blocks.Length];
        var scales = new byte[whole.Scales.Length];
        var decoded = new float[v.Length];
        int[] chunkStarts = [0, 10, 11, 30, rows];
        for (int c = 0; c + 1 < chunkStarts.Length; c++)
        {
            int first = chunkStarts[c], count = chunkStarts[c + 1] - first;
            codec.Quantize(v.AsSpan(first * cols, count * cols), count, cols, tensorData, CodecOptions.Default,
                (long)first * cols, blocks.AsSpan(first * nb * bpb, count * nb * bpb), scales.AsSpan(first * nb * spb, count * nb * spb));
            codec.Dequantize(blocks.AsSpan(first * nb * bpb, count * nb * bpb), scales.AsSpan(first * nb * spb, count * nb * spb),
                tensorData, count, cols, CodecOptions.Default, decoded.AsSpan(first * cols, count * cols));
        }
        Assert.Equal(whole.Blocks, blocks);
        Assert.Equal(whole.Scales, scales);
        Assert.Equal(CodecHarness.Dequantize(codec, whole, rows, cols), decoded);
    }
}
