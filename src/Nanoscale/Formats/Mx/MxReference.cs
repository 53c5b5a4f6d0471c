namespace Nanoscale.Formats.Mx;

/// <summary>
/// Plain reference MX quantizer (SPEC §4), written for obviousness rather than speed: double precision, exponent by
/// <see cref="Math.ILogB(double)"/>, elements by <see cref="ElementFormat.EncodeReference"/>. The fast
/// <see cref="MxKernel"/> must match it byte for byte.
/// </summary>
internal static class MxReference
{
    public static void Quantize(MxCodec codec, ReadOnlySpan<float> source, int rowCount, int cols,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales)
    {
        const int B = MxCodec.MxBlockSize;
        int nb = codec.BlocksPerRow(cols), bpb = codec.BytesPerBlock;
        var padded = new double[B];
        var codes = new byte[B];
        for (int r = 0; r < rowCount; r++)
        for (int j = 0; j < nb; j++)
        {
            int start = j * B, count = Math.Min(B, cols - start);
            long index0 = firstElementIndex + (long)r * cols + start;
            Array.Clear(padded);
            byte scale = 0;
            bool nonFinite = false;
            for (int i = 0; i < count; i++)
            {
                float v = source[r * cols + start + i];
                if (!float.IsFinite(v))
                {
                    if (policy == NonFinitePolicy.Throw)
                        throw new NonFiniteValueException(index0 + i, v);
                    nonFinite = true;
                }
                padded[i] = v;
            }
            if (nonFinite)
            {
                Array.Clear(codes);
                scale = (byte)ScaleFormat.E8M0.NaNCode;
            }
            else
                scale = QuantizeBlock(codec, padded, codes);
            scales[r * nb + j] = scale;
            BlockPacking.Pack(codes, codec.Element.Bits, blocks.Slice((r * nb + j) * bpb, bpb));
        }
    }

    /// <summary>One finite block → E8M0 code, codes filled.</summary>
    private static byte QuantizeBlock(MxCodec codec, double[] v, byte[] codes)
    {
        ElementFormat f = codec.Element;
        double amax = 0;
        foreach (double x in v)
            amax = Math.Max(amax, Math.Abs(x));
        if (amax == 0)
        {
            Array.Clear(codes);
            return 0;
        }
        int x0 = Math.ILogB(amax) - f.Emax;
        if (codec.ScaleRule == MxScaleRule.Ceil && Math.ScaleB(amax, -x0) > f.Max)
            x0++;
        x0 = Math.Clamp(x0, -127, 127);
        int best = x0;
        if (codec.ScaleRule == MxScaleRule.Mse)
        {
            double bestError = BlockError(f, codec.Rounding, v, x0);
            foreach (int candidate in new[] { x0 - 1, x0 + 1 })
            {
                if (candidate < -127 || candidate > 127) continue;
                double error = BlockError(f, codec.Rounding, v, candidate);
                if (error < bestError) { bestError = error; best = candidate; }
            }
        }
        // The scaled value as float32, as microxcaling holds it: one that underflows to ±0 there is zero (and +0) here.
        for (int i = 0; i < v.Length; i++)
            codes[i] = (byte)f.EncodeReference((float)Math.ScaleB(v[i], -best), codec.Rounding, codec.SignedZero);
        return (byte)(best + 127);
    }

    private static double BlockError(ElementFormat f, RoundingMode mode, double[] v, int x)
    {
        double error = 0;
        for (int i = 0; i < v.Length; i++)
        {
            int code = f.EncodeReference(Math.ScaleB(v[i], -x), mode);
            double d = f.Decode(code) * Math.ScaleB(1.0, x) - v[i];
            error += d * d;
        }
        return error;
    }

    public static void Dequantize(MxCodec codec, ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales,
        int rowCount, int cols, Span<float> destination)
    {
        const int B = MxCodec.MxBlockSize;
        int nb = codec.BlocksPerRow(cols), bpb = codec.BytesPerBlock;
        var codes = new byte[B];
        for (int r = 0; r < rowCount; r++)
        for (int j = 0; j < nb; j++)
        {
            double scale = ScaleFormat.E8M0.Decode(scales[r * nb + j]);
            BlockPacking.Unpack(blocks.Slice((r * nb + j) * bpb, bpb), codec.Element.Bits, codes);
            int start = j * B, count = Math.Min(B, cols - start);
            for (int i = 0; i < count; i++)
                destination[r * cols + start + i] = (float)(codec.Element.Decode(codes[i]) * scale);
        }
    }
}
