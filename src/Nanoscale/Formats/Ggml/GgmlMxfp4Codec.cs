using Nanoscale.Formats.Mx;

namespace Nanoscale.Formats.Ggml;

/// <summary>
/// MXFP4 in ggml's block layout (<c>block_mxfp4</c>, 17 bytes): the E8M0 scale byte, then 16 bytes of E2M1 codes
/// with element j in the low nibble of byte j and element j + 16 in its high nibble — where our MXFP4 stores the
/// scale apart and packs element 2j and 2j + 1 into byte j. The values are OCP MXFP4's: quantized by our
/// <see cref="MxCodec"/> (so they are bit-identical to <c>mxfp4</c> and to microxcaling), then re-laid. ggml decodes a
/// code as its doubled E2M1 value (an int8 table) times 2^(e − 128), which is the same float as E2M1 × 2^(e − 127);
/// the tests check the decode against ggml's <c>dequantize_row_mxfp4</c> bit for bit.
/// </summary>
/// <remarks>ggml's own MXFP4 quantizer rounds some ties the other way (<c>LlamaCppCrossCheckTests</c>); this codec
/// keeps ours, which is the OCP reference's.</remarks>
internal sealed class GgmlMxfp4Codec(string spec) : BlockCodec(spec, MxCodec.MxBlockSize, 17, scaleBytesPerBlock: 0, tensorDataBytes: 0)
{
    private static readonly MxCodec Inner = new(ElementFormat.E2M1);
    private static readonly CodecOptions SingleThread = new() { Parallelism = Tensors.Parallelism.SingleThread };

    /// <summary>ggml's <c>kvalues_mxfp4</c>: E2M1 codes as doubled integers.</summary>
    private static ReadOnlySpan<sbyte> Doubled => [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

    protected override void QuantizeReference(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales) =>
        Quantize(source, rowCount, cols, policy, firstElementIndex, CodecKernel.Reference, blocks);

    protected override void QuantizeRows(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, bool fast, Span<byte> blocks, Span<byte> scales) =>
        Quantize(source, rowCount, cols, policy, firstElementIndex, fast ? CodecKernel.Fast : CodecKernel.Scalar, blocks);

    private static void Quantize(ReadOnlySpan<float> source, int rowCount, int cols, NonFinitePolicy policy, long firstElementIndex,
        CodecKernel kernel, Span<byte> blocks)
    {
        int count = rowCount * Inner.BlocksPerRow(cols);
        var codes = new byte[count * Inner.BytesPerBlock];
        var exponents = new byte[count];
        Inner.Quantize(source, rowCount, cols, [], SingleThread with { Kernel = kernel, NonFinite = policy }, firstElementIndex, codes, exponents);
        for (int i = 0; i < count; i++)
        {
            var ours = codes.AsSpan(i * 16, 16);
            var theirs = blocks.Slice(i * 17, 17);
            theirs[0] = exponents[i];
            for (int j = 0; j < 16; j++)
            {
                int low = Code(ours, j), high = Code(ours, j + 16);
                theirs[1 + j] = (byte)(low | high << 4);
            }
        }
    }

    /// <summary>Code of element <paramref name="i"/> in our packing (element 2j low, 2j + 1 high nibble of byte j).</summary>
    private static int Code(ReadOnlySpan<byte> packed, int i) => packed[i >> 1] >> (4 * (i & 1)) & 0xF;

    /// <summary>One token's product on the stored blocks (<see cref="GgmlDot"/>); AVX2 and whole blocks only.</summary>
    public override bool TryDotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        if (cols % 32 != 0 || !GgmlDot.IsSupported) return false;
        CheckDotSpans(blocks, scales, rowCount, cols, x, y);
        return GgmlDot.TryDotRows(GgmlDot.Layout.Mxfp4, blocks, rowCount, cols, x, y);
    }

    /// <summary>Several tokens' products on the stored blocks, each block unpacked once (<see cref="GgmlDot"/>).</summary>
    public override bool HasDotRowsMany(int cols) => cols % 32 == 0 && GgmlDot.IsSupported;

    public override bool TryDotRowsMany(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride) =>
        GgmlDot.TryDotRowsMany(GgmlDot.Layout.Mxfp4, blocks, rowCount, cols, vectors, x, y, yStride);

    protected override void DequantizeReference(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, Span<float> destination)
    {
        var kernel = new Kernel();
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination);
    }

    protected override void DequantizeRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, bool fast, Span<float> destination)
    {
        var kernel = new Kernel();
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination);
    }

    private readonly struct Kernel : IBlockDequantizer
    {
        public void DequantizeBlock(int word, scoped ReadOnlySpan<byte> blocks, int offset, scoped Span<float> y)
        {
            int e = blocks[offset];
            // 2^(e − 128): ggml's GGML_E8M0_TO_FP32_HALF (subnormal for e < 2); e = 255 is not NaN there, nor here.
            float half = e < 2 ? BitConverter.UInt32BitsToSingle(0x0020_0000u << e) : BitConverter.UInt32BitsToSingle((uint)(e - 1) << 23);
            for (int j = 0; j < 16; j++)
            {
                int b = blocks[offset + 1 + j];
                y[j] = Doubled[b & 0xF] * half;
                y[j + 16] = Doubled[b >> 4] * half;
            }
        }
    }
}
