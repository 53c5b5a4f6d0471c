using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats.Nx;

/// <summary>
/// Fast NxFP kernels over a range of rows: the same candidate search as <see cref="NxfpReference"/> with the bit cast
/// (<see cref="ElementFormat.Encode"/>) and the scale neighbours from the exponent bits of amax/top
/// (<see cref="NxfpBlock.ScaleNeighbours"/>); the vector path (<c>NxfpKernel.Vector256.cs</c>) evaluates each candidate
/// in four 8-lane vectors, packs codes with pext and decodes every width with vector table lookups. All match the
/// reference byte for byte.
/// </summary>
internal static partial class NxfpKernel
{
    private const int B = NxfpCodec.NxBlockSize;

    public static void QuantizeRows(NxfpCodec codec, ReadOnlySpan<float> source, int rowCount, int cols,
        NonFinitePolicy policy, long firstElementIndex, bool vector, Span<byte> blocks, Span<byte> scales)
    {
        int nb = codec.BlocksPerRow(cols), bpb = codec.BytesPerBlock;
        Span<float> padded = stackalloc float[B];
        Span<byte> codes = stackalloc byte[B];
        Span<byte> candidate = stackalloc byte[B];
        Span<float> squares = stackalloc float[B];
        var encoders = vector ? VectorEncoders(codec) : null;
        for (int r = 0; r < rowCount; r++)
        {
            ReadOnlySpan<float> row = source.Slice(r * cols, cols);
            for (int j = 0; j < nb; j++)
            {
                int start = j * B;
                ReadOnlySpan<float> block = BlockPacking.BlockOf(row, start, padded);
                Span<byte> packed = blocks.Slice((r * nb + j) * bpb, bpb);
                long index0 = firstElementIndex + (long)r * cols + start;
                uint amaxBits = 0;
                if (vector)
                    amaxBits = AbsMaxBits(block);
                else
                    foreach (float v in block)
                        amaxBits = Math.Max(amaxBits, BitConverter.SingleToUInt32Bits(v) & 0x7FFF_FFFFu);
                int word;
                if (amaxBits >= 0x7F80_0000u)
                    word = NxfpBlock.NonFiniteBlock(codec, block[..Math.Min(B, cols - start)], policy, index0, codes, packed);
                else if (amaxBits == 0)
                {
                    packed.Clear();
                    word = 0;
                }
                else
                {
                    word = vector
                        ? QuantizeBlockVector(codec, encoders!, block, BitConverter.UInt32BitsToSingle(amaxBits), codes)
                        : QuantizeBlockScalar(codec, block, BitConverter.UInt32BitsToSingle(amaxBits), codes, candidate, squares);
                    if (vector && Bmi2.X64.IsSupported)
                        PackBlock(codes, codec.ElementBits, packed);
                    else
                        BlockPacking.Pack(codes, codec.ElementBits, packed);
                }
                codec.WriteWord(scales, r * nb + j, word);
            }
        }
    }

    private static int QuantizeBlockScalar(NxfpCodec codec, ReadOnlySpan<float> v, float amax, Span<byte> codes,
        Span<byte> candidate, Span<float> squares)
    {
        ScaleFormat scale = codec.Scale;
        float bestError = float.PositiveInfinity;
        int bestWord = -1, bestFormat = 0;
        for (int f = 0; f < codec.Formats.Length; f++)
        for (int l = 0; l < codec.LevelCount; l++)
        {
            int k = f * codec.LevelCount + l;
            foreach (float top in codec.Tops(k))
            {
                var (floor, ceil) = NxfpBlock.ScaleNeighbours(scale, amax, top);
                for (int n = 0; n < 2; n++)
                {
                    int sc = n == 0 ? floor : ceil;
                    if (n == 1 && ceil == floor) break;
                    float error = CandidateScalar(codec, f, k, scale.Decode(sc), v, candidate, squares);
                    if (error < bestError)
                    {
                        bestError = error;
                        bestWord = codec.Word(sc, f, l);
                        bestFormat = f;
                        candidate.CopyTo(codes);
                    }
                }
            }
        }
        if (bestWord < 0)
        {
            bestWord = codec.Word(scale.MaxCode, 0, 0);
            CandidateScalar(codec, 0, 0, scale.Decode(scale.MaxCode), v, codes, squares);
        }
        NxfpBlock.AvoidNaNPattern(codec, bestWord, v[0] / scale.Decode(bestWord & ((1 << codec.ScaleBits) - 1)), bestFormat, codes);
        return bestWord;
    }

    private static float CandidateScalar(NxfpCodec codec, int f, int k, float s, ReadOnlySpan<float> v,
        Span<byte> codes, Span<float> squares)
    {
        ElementFormat format = codec.Formats[f];
        float[] table = codec.DecodeTableArray(k);
        ReadOnlySpan<float> grid = format.DecodeTable;
        RoundingMode mode = codec.Rounding;
        bool recycling = codec.Recycling;
        float level = codec.Level(f, k % codec.LevelCount);
        int negativeZero = codec.NegativeZeroCode;
        for (int i = 0; i < B; i++)
        {
            float x = v[i] / s;
            int code = format.Encode(x, mode);
            if (recycling && MathF.Abs(x - level) < MathF.Abs(x - grid[code]))
                code = negativeZero;
            codes[i] = (byte)code;
            float d = v[i] - table[code] * s;
            squares[i] = d * d;
        }
        return NxfpBlock.LaneSum(squares);
    }

    public static void DequantizeRows(NxfpCodec codec, ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales,
        int rowCount, int cols, bool vector, Span<float> destination)
    {
        int nb = codec.BlocksPerRow(cols), bpb = codec.BytesPerBlock, bits = codec.ElementBits;
        ReadOnlySpan<float> scaleTable = codec.Scale.DecodeTable;
        int scaleMask = (1 << codec.ScaleBits) - 1, fMask = (1 << codec.FormatSelectorBits) - 1,
            lMask = (1 << codec.LevelSelectorBits) - 1, nanWord = codec.NaNWord;
        int lastFormat = codec.Formats.Length - 1, lastLevel = codec.LevelCount - 1, levelCount = codec.LevelCount;
        Span<byte> codes = stackalloc byte[B];
        Span<float> values = stackalloc float[B];
        bool vector4 = vector && bits == 4, vectorPacked = vector && bits != 4;
        var vectorTables = vector4 ? Vector4BitTables(codec) : null;
        var unpack = vectorPacked ? UnpackControls.For(bits) : default;
        var configs = vectorPacked && bits is 5 or 6 ? VectorEncoders(codec) : null;
        Span<byte> tail = stackalloc byte[UnpackControls.TailBytes];
        for (int r = 0; r < rowCount; r++)
        {
            Span<float> row = destination.Slice(r * cols, cols);
            for (int j = 0; j < nb; j++)
            {
                int word = codec.ReadWord(scales, r * nb + j);
                float scale = scaleTable[word & scaleMask];
                int f = Math.Min((word >> codec.ScaleBits) & fMask, lastFormat);
                int l = Math.Min((word >> (codec.ScaleBits + codec.FormatSelectorBits)) & lMask, lastLevel);
                int k = f * levelCount + l;
                ReadOnlySpan<byte> packed = blocks.Slice((r * nb + j) * bpb, bpb);
                int start = j * B, count = Math.Min(B, cols - start);
                Span<float> target = count == B ? row.Slice(start, B) : values;
                if (word == nanWord)
                {
                    BlockPacking.Unpack(packed, bits, codes);
                    if (NxfpBlock.IsNaNBlock(codec, word, codes))
                        scale = float.NaN;
                }
                if (vector4)
                    Packed4Vector.Dequantize32(vectorTables![k].Low, vectorTables[k].High, packed, scale, target);
                else if (vectorPacked)
                {
                    // The vector unpack reads 16 bytes at the start of each group of 8 codes: past the end of the
                    // block, so the last blocks of the buffer go through a zero-padded copy.
                    int offset = (r * nb + j) * bpb;
                    ReadOnlySpan<byte> window = offset + UnpackControls.ReadBytes(bits) <= blocks.Length ? blocks[offset..] : tail;
                    if (window == tail)
                        packed.CopyTo(tail);
                    DequantizeBlockVector(unpack, bits, codec.DecodeTableArray(k), configs?[k].TableParts, window, scale, target);
                }
                else
                {
                    ReadOnlySpan<float> table = codec.DecodeTableArray(k);
                    if (bits == 8)
                        packed.CopyTo(codes);
                    else
                        BlockPacking.Unpack(packed, bits, codes);
                    for (int i = 0; i < B; i++)
                        target[i] = table[codes[i]] * scale;
                }
                if (count != B)
                    values[..count].CopyTo(row[start..]);
            }
        }
    }
}
