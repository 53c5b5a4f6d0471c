namespace Nanoscale.Formats.Nx;

/// <summary>
/// Plain reference NxFP quantizer (SPEC §6), written for obviousness: every candidate (format, level, scale) is
/// enumerated in the documented order, scale neighbours by a linear scan of every scale code, elements by
/// <see cref="ElementFormat.EncodeReference"/>, error as defined in <see cref="NxfpBlock"/>. The fast
/// <see cref="NxfpKernel"/> must match it byte for byte.
/// </summary>
internal static class NxfpReference
{
    private const int B = NxfpCodec.NxBlockSize;

    public static void Quantize(NxfpCodec codec, ReadOnlySpan<float> source, int rowCount, int cols,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales)
    {
        int nb = codec.BlocksPerRow(cols), bpb = codec.BytesPerBlock;
        var block = new float[B];
        var codes = new byte[B];
        for (int r = 0; r < rowCount; r++)
        for (int j = 0; j < nb; j++)
        {
            int start = j * B, count = Math.Min(B, cols - start);
            long index0 = firstElementIndex + (long)r * cols + start;
            Array.Clear(block);
            source.Slice(r * cols + start, count).CopyTo(block);
            Span<byte> packed = blocks.Slice((r * nb + j) * bpb, bpb);
            int word;
            if (block.Any(v => !float.IsFinite(v)))
                word = NxfpBlock.NonFiniteBlock(codec, block.AsSpan(0, count), policy, index0, codes, packed);
            else
            {
                word = QuantizeBlock(codec, block, codes);
                BlockPacking.Pack(codes, codec.ElementBits, packed);
            }
            codec.WriteWord(scales, r * nb + j, word);
        }
    }

    /// <summary>One finite block → metadata word, codes filled.</summary>
    private static int QuantizeBlock(NxfpCodec codec, float[] v, byte[] codes)
    {
        double amax = v.Max(x => Math.Abs((double)x));
        if (amax == 0)
        {
            Array.Clear(codes);
            return 0;
        }
        ScaleFormat scale = codec.Scale;
        double bestError = double.PositiveInfinity;
        int bestWord = -1, bestFormat = 0;
        var candidate = new byte[B];
        for (int f = 0; f < codec.Formats.Length; f++)
        for (int l = 0; l < codec.LevelCount; l++)
        foreach (float top in codec.Tops(f * codec.LevelCount + l))
        {
            // Scale neighbours of amax/top by a linear scan (values ascend with the code).
            int floor = 0, ceil = scale.MaxCode;
            for (int c = 0; c <= scale.MaxCode; c++)
                if ((double)scale.Decode(c) * top <= amax) floor = c;
            for (int c = scale.MaxCode; c >= 0; c--)
                if ((double)scale.Decode(c) * top >= amax) ceil = c;
            foreach (int sc in new[] { floor, ceil })
            {
                float error = Candidate(codec, f, l, scale.Decode(sc), v, candidate);
                if (error < bestError)
                {
                    bestError = error;
                    bestWord = codec.Word(sc, f, l);
                    bestFormat = f;
                    candidate.CopyTo(codes, 0);
                }
            }
        }
        if (bestWord < 0) // every candidate overflowed (not reachable for finite blocks; kept for safety)
        {
            bestWord = codec.Word(scale.MaxCode, 0, 0);
            Candidate(codec, 0, 0, scale.Decode(scale.MaxCode), v, codes);
        }
        NxfpBlock.AvoidNaNPattern(codec, bestWord, v[0] / scale.Decode(bestWord & ((1 << codec.ScaleBits) - 1)), bestFormat, codes);
        return bestWord;
    }

    private static float Candidate(NxfpCodec codec, int f, int l, float s, float[] v, byte[] codes)
    {
        ElementFormat format = codec.Formats[f];
        ReadOnlySpan<float> table = codec.DecodeTable(f, l);
        float level = codec.Level(f, l);
        var squares = new float[B];
        for (int i = 0; i < B; i++)
        {
            float x = v[i] / s;
            int code = format.EncodeReference(x, codec.Rounding);
            if (codec.Recycling && MathF.Abs(x - level) < MathF.Abs(x - format.Decode(code)))
                code = codec.NegativeZeroCode;
            codes[i] = (byte)code;
            float d = v[i] - table[code] * s;
            squares[i] = d * d;
        }
        return NxfpBlock.LaneSum(squares);
    }

    public static void Dequantize(NxfpCodec codec, ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales,
        int rowCount, int cols, Span<float> destination)
    {
        int nb = codec.BlocksPerRow(cols), bpb = codec.BytesPerBlock;
        var codes = new byte[B];
        for (int r = 0; r < rowCount; r++)
        for (int j = 0; j < nb; j++)
        {
            int word = codec.ReadWord(scales, r * nb + j);
            var (scaleCode, f, l) = codec.SplitWord(word);
            BlockPacking.Unpack(blocks.Slice((r * nb + j) * bpb, bpb), codec.ElementBits, codes);
            bool nan = NxfpBlock.IsNaNBlock(codec, word, codes);
            // Selector values beyond the lists (corrupt data) decode with the last entry.
            f = Math.Min(f, codec.Formats.Length - 1);
            l = Math.Min(l, codec.LevelCount - 1);
            float s = codec.Scale.Decode(scaleCode);
            ReadOnlySpan<float> table = codec.DecodeTable(f, l);
            int start = j * B, count = Math.Min(B, cols - start);
            for (int i = 0; i < count; i++)
                destination[r * cols + start + i] = nan ? float.NaN : table[codes[i]] * s;
        }
    }
}
