using System.Runtime.Intrinsics;

namespace Nanoscale.Formats.Mx;

/// <summary>
/// OCP Microscaling block codec (SPEC §4): blocks of 32 elements of <see cref="Element"/> sharing one E8M0 scale 2^X.
/// Covers MXFP8 (E4M3/E5M2), MXFP6 (E3M2/E2M3), MXFP4 (E2M1) and MXINTn.
/// </summary>
/// <remarks>
/// Per block: amax = max|v|; a zero block stores scale code 0x00 and +0 codes. X follows <see cref="ScaleRule"/>,
/// clamped to [−127, 127]; each v·2^−X is cast to the element format (nearest, ties per <see cref="Rounding"/>,
/// saturating). Decoding is <c>decode(code)·2^X</c> in float. A block holding NaN/Inf either throws
/// (<see cref="NonFinitePolicy.Throw"/>) or stores scale 0xFF (NaN) with zero codes.
/// </remarks>
public sealed class MxCodec : IBlockCodec
{
    /// <summary>Elements per MX block.</summary>
    public const int MxBlockSize = 32;

    public MxCodec(ElementFormat element, MxScaleRule scaleRule = MxScaleRule.Floor,
        RoundingMode rounding = RoundingMode.NearestEven, string? spec = null)
    {
        Element = element;
        ScaleRule = scaleRule;
        Rounding = rounding;
        BytesPerBlock = BlockPacking.PackedBytes(MxBlockSize, element.Bits);
        Spec = spec ?? $"mx:{element.Name}";
    }

    public string Spec { get; }

    public ElementFormat Element { get; }

    public MxScaleRule ScaleRule { get; }

    public RoundingMode Rounding { get; }

    /// <summary>Always <see cref="ScaleFormat.E8M0"/>.</summary>
    public ScaleFormat ScaleFormat => ScaleFormat.E8M0;

    public int BlockSize => MxBlockSize;

    public int BytesPerBlock { get; }

    public int ScaleBytesPerBlock => 1;

    public int TensorDataBytes => 0;

    public int BlocksPerRow(int cols) => (cols + MxBlockSize - 1) / MxBlockSize;

    public double BitsPerWeight(long rows, long cols) =>
        (double)rows * BlocksPerRow(checked((int)cols)) * (BytesPerBlock + ScaleBytesPerBlock) * 8 / ((double)rows * cols);

    public ITensorDataAccumulator CreateTensorDataAccumulator(CodecOptions options) => NoTensorData.Instance;

    public unsafe void Quantize(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        CodecOptions options, long firstElementIndex, Span<byte> blocks, Span<byte> scales)
    {
        BlockCodecChecks.Quantize(this, source.Length, rowCount, cols, tensorData.Length, blocks.Length, scales.Length);
        if (options.Kernel == CodecKernel.Reference)
        {
            MxReference.Quantize(this, source, rowCount, cols, options.NonFinite, firstElementIndex, blocks, scales);
            return;
        }
        bool vector = options.Kernel == CodecKernel.Fast && Vector256.IsHardwareAccelerated;
        int nb = BlocksPerRow(cols), bpb = BytesPerBlock;
        var policy = options.NonFinite;
        fixed (float* sourcePtr = source)
        fixed (byte* blocksPtr = blocks, scalesPtr = scales)
        {
            nint s = (nint)sourcePtr, b = (nint)blocksPtr, sc = (nint)scalesPtr;
            RowParallel.For(rowCount, cols, options.Parallelism, (start, count) =>
                MxKernel.QuantizeRows(this,
                    new ReadOnlySpan<float>((float*)s + (long)start * cols, count * cols), count, cols, policy,
                    firstElementIndex + (long)start * cols, vector,
                    new Span<byte>((byte*)b + (long)start * nb * bpb, count * nb * bpb),
                    new Span<byte>((byte*)sc + (long)start * nb, count * nb)));
        }
    }

    public unsafe void Dequantize(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, CodecOptions options, Span<float> destination)
    {
        BlockCodecChecks.Dequantize(this, blocks.Length, scales.Length, tensorData.Length, rowCount, cols, destination.Length);
        if (options.Kernel == CodecKernel.Reference)
        {
            MxReference.Dequantize(this, blocks, scales, rowCount, cols, destination);
            return;
        }
        bool vector = options.Kernel == CodecKernel.Fast && Vector256.IsHardwareAccelerated;
        int nb = BlocksPerRow(cols), bpb = BytesPerBlock;
        fixed (float* destinationPtr = destination)
        fixed (byte* blocksPtr = blocks, scalesPtr = scales)
        {
            nint d = (nint)destinationPtr, b = (nint)blocksPtr, sc = (nint)scalesPtr;
            RowParallel.For(rowCount, cols, options.Parallelism, (start, count) =>
                MxKernel.DequantizeRows(this,
                    new ReadOnlySpan<byte>((byte*)b + (long)start * nb * bpb, count * nb * bpb),
                    new ReadOnlySpan<byte>((byte*)sc + (long)start * nb, count * nb), count, cols, vector,
                    new Span<float>((float*)d + (long)start * cols, count * cols)));
        }
    }

    public override string ToString() => Spec;
}
