using Nanoscale.Formats;

namespace Nanoscale.Tests.Formats.Toy;

/// <summary>
/// A toy block format that shows what adding a format takes (docs/architecture.md, "Adding a format"): MXINT4
/// elements (<see cref="ElementFormat.Int"/>, code·2^−2) in blocks of 16 with one E8M0 scale 2^X per block,
/// X = floor(log2 amax) − emax. The driver (<see cref="BlockCodec"/>) does the checks, threads, loops and bits per weight;
/// the format supplies its reference twin and a one-block kernel.
/// </summary>
internal sealed class ToyInt4Codec(string spec) : BlockCodec(spec, BlockElements, bytesPerBlock: 8, scaleBytesPerBlock: 1, tensorDataBytes: 0)
{
    public const int BlockElements = 16;

    private static ElementFormat Element => ElementFormat.Int(4);

    protected override void QuantizeReference(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales)
    {
        // Plain and obviously correct: every block through the reference element cast, in double.
        int nb = BlocksPerRow(cols);
        var codes = new byte[BlockElements];
        for (int r = 0; r < rowCount; r++)
        for (int j = 0; j < nb; j++)
        {
            int start = j * BlockElements, count = Math.Min(BlockElements, cols - start);
            double amax = 0;
            for (int i = 0; i < count; i++)
            {
                float v = source[r * cols + start + i];
                if (!float.IsFinite(v)) throw new NonFiniteValueException(firstElementIndex + (long)r * cols + start + i, v);
                amax = Math.Max(amax, Math.Abs(v));
            }
            int x = amax == 0 ? -127 : Math.Clamp(Math.ILogB(amax) - Element.Emax, -127, 127);
            Array.Clear(codes);
            for (int i = 0; i < count; i++)
                codes[i] = (byte)Element.EncodeReference(Math.ScaleB(source[r * cols + start + i], -x), RoundingMode.NearestEven);
            scales[r * nb + j] = (byte)(x + 127);
            BlockPacking.Pack(codes, 4, blocks.Slice((r * nb + j) * 8, 8));
        }
    }

    protected override void DequantizeReference(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, Span<float> destination)
    {
        var kernel = new Kernel();
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination); // decoding has nothing to simplify
    }

    protected override void QuantizeRows(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, bool fast, Span<byte> blocks, Span<byte> scales)
    {
        var kernel = new Kernel();
        QuantizeBlocks(ref kernel, source, rowCount, cols, firstElementIndex, blocks, scales);
    }

    protected override void DequantizeRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, bool fast, Span<float> destination)
    {
        var kernel = new Kernel();
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination);
    }

    /// <summary>The fast twin: the exact bit encoder on float bits instead of the double reference.</summary>
    private readonly struct Kernel : IBlockQuantizer, IBlockDequantizer
    {
        public int QuantizeBlock(scoped ReadOnlySpan<float> block, long firstElementIndex, scoped Span<byte> packed)
        {
            uint amaxBits = 0;
            for (int i = 0; i < block.Length; i++)
            {
                if (!float.IsFinite(block[i])) throw new NonFiniteValueException(firstElementIndex + i, block[i]);
                amaxBits = Math.Max(amaxBits, BitConverter.SingleToUInt32Bits(block[i]) & 0x7FFF_FFFFu);
            }
            int x = amaxBits == 0 ? -127 : Math.Clamp(ElementFormat.ExactFloorLog2Bits(amaxBits) - Element.Emax, -127, 127);
            Span<byte> codes = stackalloc byte[BlockElements];
            for (int i = 0; i < BlockElements; i++)
                codes[i] = (byte)Element.Encode(MathF.ScaleB(block[i], -x), RoundingMode.NearestEven);
            BlockPacking.Pack(codes, 4, packed);
            return x + 127;
        }

        public void DequantizeBlock(int word, scoped ReadOnlySpan<byte> blocks, int offset, scoped Span<float> destination)
        {
            float scale = ScaleFormat.E8M0.Decode(word);
            for (int i = 0; i < BlockElements; i++)
                destination[i] = Element.Decode((blocks[offset + i / 2] >> (4 * (i & 1))) & 0xF) * scale;
        }
    }
}
