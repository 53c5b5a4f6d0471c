using System.Buffers.Binary;
using Nanoscale.Tensors;

namespace Nanoscale.Formats.Ggml;

/// <summary>llama.cpp's K-quants that GGUF files of the common mixes (Q4_K_M, Q5_K_M, Q6_K) hold.</summary>
internal enum GgmlKQuant
{
    /// <summary>144 bytes per 256: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for 8 sub-blocks of 32, 4-bit codes.</summary>
    Q4_K,
    /// <summary>176 bytes per 256: as Q4_K plus a fifth bit per element.</summary>
    Q5_K,
    /// <summary>210 bytes per 256: 4 low bits, 2 high bits, int8 scales for 16 sub-blocks of 16, f16 d.</summary>
    Q6_K,
}

/// <summary>
/// Decoding of ggml's K-quant super-blocks (256 elements), as <c>dequantize_row_q4_K</c>, <c>_q5_K</c> and
/// <c>_q6_K</c> compute them, in the same float order, so that a GGUF file of these types decodes to exactly the floats
/// llama.cpp's dequantizer gives (checked against it in the tests). Read only: Nanoscale does not write K-quants
/// (ggml's quantizers for them search scales iteratively; not reimplemented yet), so these codecs are not rows of the
/// format table — <c>CodecRegistry</c> creates them only to read a GGUF file.
/// </summary>
internal sealed class GgmlKQuantCodec(GgmlKQuant kind, string spec) : BlockCodec(spec, 256, BytesOf(kind), scaleBytesPerBlock: 0, tensorDataBytes: 0)
{
    public GgmlKQuant Kind { get; } = kind;

    public static int BytesOf(GgmlKQuant kind) => kind switch { GgmlKQuant.Q4_K => 144, GgmlKQuant.Q5_K => 176, _ => 210 };

    private InputException ReadOnly() =>
        new($"{Spec}: K-quants are read from GGUF files; Nanoscale does not quantize to them (write q4_0, q8_0, mxfp4 or any format of the table)");

    protected override void QuantizeReference(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales) => throw ReadOnly();

    protected override void QuantizeRows(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, bool fast, Span<byte> blocks, Span<byte> scales) => throw ReadOnly();

    protected override void DequantizeReference(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, Span<float> destination)
    {
        var kernel = new Kernel(Kind);
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination); // decoding has nothing to simplify
    }

    protected override void DequantizeRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, bool fast, Span<float> destination)
    {
        var kernel = new Kernel(Kind);
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination);
    }

    private readonly struct Kernel(GgmlKQuant kind) : IBlockDequantizer
    {
        public void DequantizeBlock(int word, scoped ReadOnlySpan<byte> blocks, int offset, scoped Span<float> y)
        {
            var b = blocks.Slice(offset, BytesOf(kind));
            if (kind == GgmlKQuant.Q6_K)
            {
                Q6(b, y);
                return;
            }
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(b);
            float min = (float)BinaryPrimitives.ReadHalfLittleEndian(b[2..]);
            var packedScales = b.Slice(4, 12);
            bool five = kind == GgmlKQuant.Q5_K;
            var qh = five ? b.Slice(16, 32) : default;
            var qs = b.Slice(five ? 48 : 16, 128);
            int u1 = 1, u2 = 2, output = 0;
            for (int j = 0, sub = 0; j < 256; j += 64, sub += 2)
            {
                var (sc1, m1) = ScaleMin(sub, packedScales);
                var (sc2, m2) = ScaleMin(sub + 1, packedScales);
                float d1 = d * sc1, min1 = min * m1, d2 = d * sc2, min2 = min * m2;
                var q = qs.Slice(j / 2, 32);
                for (int l = 0; l < 32; l++) y[output++] = d1 * ((q[l] & 0xF) + (five && (qh[l] & u1) != 0 ? 16 : 0)) - min1;
                for (int l = 0; l < 32; l++) y[output++] = d2 * ((q[l] >> 4) + (five && (qh[l] & u2) != 0 ? 16 : 0)) - min2;
                u1 <<= 2;
                u2 <<= 2;
            }
        }

        /// <summary>Sub-block <paramref name="j"/>'s 6-bit scale and min (ggml's <c>get_scale_min_k4</c>).</summary>
        private static (int Scale, int Min) ScaleMin(int j, ReadOnlySpan<byte> q) => j < 4
            ? (q[j] & 63, q[j + 4] & 63)
            : ((q[j + 4] & 0xF) | (q[j - 4] >> 6) << 4, (q[j + 4] >> 4) | (q[j] >> 6) << 4);

        private static void Q6(ReadOnlySpan<byte> b, Span<float> y)
        {
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(b[208..]);
            for (int n = 0; n < 2; n++)
            {
                var ql = b.Slice(n * 64, 64);
                var qh = b.Slice(128 + n * 32, 32);
                var sc = b.Slice(192 + n * 8, 8);
                var o = y.Slice(n * 128, 128);
                for (int l = 0; l < 32; l++)
                {
                    int s = l / 16;
                    int q1 = ((ql[l] & 0xF) | ((qh[l] >> 0) & 3) << 4) - 32;
                    int q2 = ((ql[l + 32] & 0xF) | ((qh[l] >> 2) & 3) << 4) - 32;
                    int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                    int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                    o[l] = d * (sbyte)sc[s] * q1;
                    o[l + 32] = d * (sbyte)sc[s + 2] * q2;
                    o[l + 64] = d * (sbyte)sc[s + 4] * q3;
                    o[l + 96] = d * (sbyte)sc[s + 6] * q4;
                }
            }
        }
    }
}
