namespace Nanoscale.Formats;

/// <summary>Argument checks shared by the block codecs: every span length against the layout of SPEC §8.</summary>
internal static class BlockCodecChecks
{
    public static void Shape(IBlockCodec codec, int rowCount, int cols)
    {
        if (rowCount < 0)
            throw new ArgumentOutOfRangeException(nameof(rowCount), rowCount, $"{codec.Spec}: rowCount must be ≥ 0.");
        if (cols <= 0)
            throw new ArgumentOutOfRangeException(nameof(cols), cols, $"{codec.Spec}: cols must be > 0.");
    }

    public static void Quantize(IBlockCodec codec, int sourceLength, int rowCount, int cols, int tensorDataLength,
        int blocksLength, int scalesLength)
    {
        Shape(codec, rowCount, cols);
        Need(codec, "source", (long)rowCount * cols, sourceLength);
        Spans(codec, rowCount, cols, tensorDataLength, blocksLength, scalesLength);
    }

    public static void Dequantize(IBlockCodec codec, int blocksLength, int scalesLength, int tensorDataLength,
        int rowCount, int cols, int destinationLength)
    {
        Shape(codec, rowCount, cols);
        Spans(codec, rowCount, cols, tensorDataLength, blocksLength, scalesLength);
        Need(codec, "destination", (long)rowCount * cols, destinationLength);
    }

    private static void Spans(IBlockCodec codec, int rowCount, int cols, int tensorDataLength, int blocksLength, int scalesLength)
    {
        long nblocks = (long)rowCount * codec.BlocksPerRow(cols);
        Need(codec, "blocks", nblocks * codec.BytesPerBlock, blocksLength);
        Need(codec, "scales", nblocks * codec.ScaleBytesPerBlock, scalesLength);
        Need(codec, "tensorData", codec.TensorDataBytes, tensorDataLength);
    }

    private static void Need(IBlockCodec codec, string name, long expected, int actual)
    {
        if (actual < expected)
            throw new ArgumentException(
                $"{codec.Spec}: {name} holds {actual} elements but the layout needs {expected}.", name);
    }
}
