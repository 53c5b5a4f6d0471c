namespace Nanoscale.Formats;

/// <summary>A whole matrix encoded with a block codec in memory: its tensor data measured from the values, then every
/// row quantized (benchmarks and tests of the kernels; checkpoints go through the container codecs).</summary>
internal static class BlockMatrix
{
    public static (byte[] Blocks, byte[] Scales, byte[] TensorData) Encode(IBlockCodec codec, ReadOnlySpan<float> w, int rows, int cols,
        CodecOptions? options = null)
    {
        options ??= new CodecOptions();
        int blocksPerRow = codec.BlocksPerRow(cols);
        var blocks = new byte[(long)rows * blocksPerRow * codec.BytesPerBlock];
        var scales = new byte[(long)rows * blocksPerRow * codec.ScaleBytesPerBlock];
        var tensorData = new byte[codec.TensorDataBytes];
        var accumulator = codec.CreateTensorDataAccumulator(options);
        accumulator.Add(w, 0);
        accumulator.WriteTensorData(tensorData);
        codec.Quantize(w, rows, cols, tensorData, options, 0, blocks, scales);
        return (blocks, scales, tensorData);
    }
}
