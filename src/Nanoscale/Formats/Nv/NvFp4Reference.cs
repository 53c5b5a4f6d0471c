namespace Nanoscale.Formats.Nv;

/// <summary>Plain reference NVFP4 quantizer (SPEC §5): block scale by <see cref="ScaleFormat.Encode"/>, elements by
/// <see cref="ElementFormat.EncodeReference"/>; float arithmetic exactly as documented on <see cref="NvFp4Codec"/>.</summary>
internal static class NvFp4Reference
{
    public static void Quantize(NvFp4Codec codec, ReadOnlySpan<float> source, int rowCount, int cols, float st,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales)
    {
        const int B = NvFp4Codec.NvBlockSize;
        int nb = codec.BlocksPerRow(cols);
        var v = new float[B];
        var codes = new byte[B];
        for (int r = 0; r < rowCount; r++)
        for (int j = 0; j < nb; j++)
        {
            int start = j * B, count = Math.Min(B, cols - start);
            Array.Clear(v);
            Array.Clear(codes);
            bool nonFinite = false;
            float amax = 0;
            for (int i = 0; i < count; i++)
            {
                v[i] = source[r * cols + start + i];
                if (!float.IsFinite(v[i]))
                {
                    if (policy == NonFinitePolicy.Throw)
                        throw new NonFiniteValueException(firstElementIndex + (long)r * cols + start + i, v[i]);
                    nonFinite = true;
                }
                amax = Math.Max(amax, Math.Abs(v[i]));
            }
            int scaleCode;
            if (nonFinite)
                scaleCode = ScaleFormat.UE4M3.NaNCode;
            else if (amax == 0)
                scaleCode = NvFp4Codec.ZeroBlockScaleCode;
            else
            {
                float t = NvFp4Codec.BlockTarget(amax, st, codec.Divisor);
                scaleCode = Math.Max(1, ScaleFormat.UE4M3.Encode(t));
                float scale = NvFp4Codec.BlockScale(ScaleFormat.UE4M3.Decode(scaleCode), st, codec.Divisor);
                for (int i = 0; i < count; i++)
                    codes[i] = scale > 0 ? (byte)ElementFormat.E2M1.EncodeReference(v[i] / scale, codec.Rounding, codec.SignedZero) : (byte)0;
            }
            scales[r * nb + j] = (byte)scaleCode;
            BlockPacking.Pack(codes, 4, blocks.Slice((r * nb + j) * 8, 8));
        }
    }

    public static void Dequantize(NvFp4Codec codec, ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales,
        int rowCount, int cols, float st, bool divisor, Span<float> destination)
    {
        const int B = NvFp4Codec.NvBlockSize;
        int nb = codec.BlocksPerRow(cols);
        var codes = new byte[B];
        for (int r = 0; r < rowCount; r++)
        for (int j = 0; j < nb; j++)
        {
            float scale = NvFp4Codec.BlockScale(ScaleFormat.UE4M3.Decode(scales[r * nb + j]), st, divisor);
            BlockPacking.Unpack(blocks.Slice((r * nb + j) * 8, 8), 4, codes);
            int start = j * B, count = Math.Min(B, cols - start);
            for (int i = 0; i < count; i++)
                destination[r * cols + start + i] = ElementFormat.E2M1.Decode(codes[i]) * scale;
        }
    }
}
