using Nanoscale.Tensors;

namespace Nanoscale.Formats;

/// <summary>
/// The arrays that store a block-coded [rows, cols] matrix (SPEC §8), for the container and for LDLQ grids alike:
/// <c>blocks</c> U8 [rows, nblocks, bytes_per_block]; <c>scales</c> U8 [rows, nblocks·scale_bytes], or U16 [rows, nblocks]
/// when a block's metadata word takes two bytes (NxFP with more than 8 metadata bits; little-endian either way, so the
/// bytes are the same); and <c>tensor_data</c> U8 [bytes] for formats with per-tensor data (NVFP4's FP32 tensor scale).
/// </summary>
internal static class BlockLayout
{
    public const string Blocks = "blocks";
    public const string Scales = "scales";
    public const string TensorData = "tensor_data";

    public static long[] BlocksShape(IBlockCodec codec, long rows, int cols) => [rows, codec.BlocksPerRow(cols), codec.BytesPerBlock];

    public static long BlockBytes(IBlockCodec codec, long rows, int cols) => rows * codec.BlocksPerRow(cols) * codec.BytesPerBlock;

    public static long ScaleBytes(IBlockCodec codec, long rows, int cols) => rows * codec.BlocksPerRow(cols) * codec.ScaleBytesPerBlock;

    public static (DType DType, long[] Shape) ScalesArray(IBlockCodec codec, long rows, int cols) =>
        codec.ScaleBytesPerBlock == 2
            ? (DType.U16, [rows, codec.BlocksPerRow(cols)])
            : (DType.U8, [rows, (long)codec.BlocksPerRow(cols) * codec.ScaleBytesPerBlock]);
}
