using System.Buffers.Binary;

namespace Nanoscale.Formats.Ggml;

/// <summary>llama.cpp's legacy block formats: 32 elements per block, the block's scale (and minimum) stored inside it.</summary>
internal enum GgmlKind
{
    /// <summary>f16 d, then 32 int8: x = q·d, d = amax/127.</summary>
    Q8_0,
    /// <summary>f16 d, then 16 bytes of 4-bit codes: x = (q − 8)·d, d = (signed max)/−8.</summary>
    Q4_0,
    /// <summary>f16 d, f16 m, then 16 bytes of 4-bit codes: x = q·d + m, d = (max − min)/15, m = min.</summary>
    Q4_1,
    /// <summary>f16 d, 4 bytes of fifth bits, 16 bytes of low nibbles: x = (q − 16)·d, d = (signed max)/−16.</summary>
    Q5_0,
    /// <summary>f16 d, f16 m, 4 bytes of fifth bits, 16 bytes of low nibbles: x = q·d + m, d = (max − min)/31.</summary>
    Q5_1,
}

/// <summary>
/// ggml's Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 (llama.cpp's <c>ggml-quants.c</c>, the <c>_ref</c> quantizers used when no
/// importance matrix is given), bit for bit: blocks of 32, written whole into <c>blocks</c> in ggml's own byte layout
/// (scale first, then codes; element j in the low nibble of byte j and element j + 16 in its high nibble), so a row of
/// blocks is exactly a row of a GGUF tensor. There is no separate scale array (<see cref="BlockCodec.ScaleBytesPerBlock"/>
/// = 0). The arithmetic is ggml's, in float: d = amax/127 (Q8_0) or max/−8 with max the value of largest magnitude
/// (Q4_0), 1/d computed once, codes truncated after adding 8.5 (or rounded half away from zero for Q8_0), d and m
/// stored as IEEE half rounded to nearest even. Checked byte for byte against <c>ggml_quantize_chunk</c> and value for
/// value against ggml's <c>dequantize_row_*</c> of llama.cpp's library in the tests.
/// </summary>
internal sealed class GgmlCodec : BlockCodec
{
    public const int QK = 32;

    public GgmlCodec(GgmlKind kind, string spec) : base(spec, QK, BytesOf(kind), scaleBytesPerBlock: 0, tensorDataBytes: 0) => Kind = kind;

    public GgmlKind Kind { get; }

    public static int BytesOf(GgmlKind kind) => kind switch
    {
        GgmlKind.Q8_0 => 34,
        GgmlKind.Q4_0 => 18,
        GgmlKind.Q4_1 => 20,
        GgmlKind.Q5_0 => 22,
        GgmlKind.Q5_1 => 24,
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    protected override void QuantizeReference(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales)
    {
        // The plain twin: one row at a time, each block copied out (zero-padded when short) and quantized by the
        // formula written out in full, with nothing shared with the kernel below but the constants.
        int nb = BlocksPerRow(cols);
        var block = new float[QK];
        for (int r = 0; r < rowCount; r++)
        for (int j = 0; j < nb; j++)
        {
            Array.Clear(block);
            int start = j * QK, count = Math.Min(QK, cols - start);
            source.Slice(r * cols + start, count).CopyTo(block);
            if (policy == NonFinitePolicy.Throw)
                for (int i = 0; i < count; i++)
                    if (!float.IsFinite(block[i])) throw new NonFiniteValueException(firstElementIndex + (long)r * cols + start + i, block[i]);
            ReferenceBlock(Kind, block, blocks.Slice((r * nb + j) * BytesPerBlock, BytesPerBlock));
        }
    }

    private static void ReferenceBlock(GgmlKind kind, float[] x, Span<byte> y)
    {
        y.Clear();
        switch (kind)
        {
            case GgmlKind.Q8_0:
            {
                float amax = 0;
                foreach (var v in x) amax = Math.Max(amax, Math.Abs(v));
                float d = amax / 127f, id = d != 0 ? 1f / d : 0f;
                BinaryPrimitives.WriteHalfLittleEndian(y, (Half)d);
                for (int i = 0; i < QK; i++) y[2 + i] = (byte)(sbyte)MathF.Round(x[i] * id, MidpointRounding.AwayFromZero);
                break;
            }
            case GgmlKind.Q4_0 or GgmlKind.Q5_0:
            {
                float amax = 0, max = 0;
                foreach (var v in x)
                    if (amax < Math.Abs(v)) { amax = Math.Abs(v); max = v; }
                bool five = kind == GgmlKind.Q5_0;
                float d = max / (five ? -16f : -8f), id = d != 0 ? 1f / d : 0f;
                BinaryPrimitives.WriteHalfLittleEndian(y, (Half)d);
                var q = new int[QK];
                for (int i = 0; i < QK; i++) q[i] = Math.Min(five ? 31 : 15, (int)(sbyte)(x[i] * id + (five ? 16.5f : 8.5f)));
                PackCodes(q, y, five ? 6 : 2, five ? 2 : -1);
                break;
            }
            default: // Q4_1, Q5_1
            {
                float min = float.MaxValue, max = -float.MaxValue;
                foreach (var v in x) { if (v < min) min = v; if (v > max) max = v; }
                bool five = kind == GgmlKind.Q5_1;
                float d = (max - min) / (five ? 31f : 15f), id = d != 0 ? 1f / d : 0f;
                BinaryPrimitives.WriteHalfLittleEndian(y, (Half)d);
                BinaryPrimitives.WriteHalfLittleEndian(y[2..], (Half)min);
                var q = new int[QK];
                for (int i = 0; i < QK; i++)
                    q[i] = five ? (byte)((x[i] - min) * id + 0.5f) : Math.Min(15, (int)(sbyte)((x[i] - min) * id + 0.5f));
                PackCodes(q, y, five ? 8 : 4, five ? 4 : -1);
                break;
            }
        }
    }

    /// <summary>Low nibbles of elements j and j + 16 into byte <paramref name="nibbleOffset"/> + j; with
    /// <paramref name="highBitsOffset"/> ≥ 0, each element's fifth bit into bit i of the little-endian word there.</summary>
    private static void PackCodes(int[] q, Span<byte> y, int nibbleOffset, int highBitsOffset)
    {
        uint qh = 0;
        for (int j = 0; j < QK / 2; j++)
        {
            y[nibbleOffset + j] = (byte)((q[j] & 0xF) | (q[j + QK / 2] & 0xF) << 4);
            qh |= (uint)((q[j] >> 4) & 1) << j;
            qh |= (uint)((q[j + QK / 2] >> 4) & 1) << (j + QK / 2);
        }
        if (highBitsOffset >= 0) BinaryPrimitives.WriteUInt32LittleEndian(y[highBitsOffset..], qh);
    }

    /// <summary>One token's product on the stored Q8_0 or Q4_0 blocks (<see cref="GgmlDot"/>); the other kinds, and
    /// machines without AVX2, decode rows instead.</summary>
    public override bool TryDotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        if (Kind is not (GgmlKind.Q8_0 or GgmlKind.Q4_0) || cols % QK != 0 || !GgmlDot.IsSupported) return false;
        CheckDotSpans(blocks, scales, rowCount, cols, x, y);
        return GgmlDot.TryDotRows(Kind == GgmlKind.Q8_0 ? GgmlDot.Layout.Q8_0 : GgmlDot.Layout.Q4_0, blocks, rowCount, cols, x, y);
    }

    /// <summary>Several tokens' products on the stored blocks, each block unpacked once (<see cref="GgmlDot"/>); windows
    /// too for Q4_0. Q8_0's several-vector kernel (<see cref="Int8Dot.RowsMany"/>) serves steps of a few sequences only:
    /// windows and steps of eight or more run faster on decoded tiles and the panel kernel (GGUF q8_0 prompt of the 506M
    /// Llama-3.2-shaped model: 164–167 against 135–146 tokens/s, alternated).</summary>
    public override bool HasDotRowsMany(int cols) => Kind is GgmlKind.Q4_0 && cols % QK == 0 && GgmlDot.IsSupported;

    /// <summary>Sixteen for Q8_0 (<see cref="Int8Dot.RowsMany"/>), else the default.</summary>
    public override int MaxDotVectors(int cols) => Kind == GgmlKind.Q8_0 ? GgmlDot.MaxDotVectors(GgmlDot.Layout.Q8_0) : base.MaxDotVectors(cols);

    public override bool TryDotRowsMany(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride) =>
        Kind is GgmlKind.Q8_0 or GgmlKind.Q4_0
        && GgmlDot.TryDotRowsMany(Kind == GgmlKind.Q8_0 ? GgmlDot.Layout.Q8_0 : GgmlDot.Layout.Q4_0, blocks, rowCount, cols, vectors, x, y, yStride);

    protected override void DequantizeReference(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, Span<float> destination)
    {
        var kernel = new Kernel(Kind);
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination); // decoding has nothing to simplify
    }

    protected override void QuantizeRows(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, bool fast, Span<byte> blocks, Span<byte> scales)
    {
        var kernel = new Kernel(Kind) { CheckFinite = policy == NonFinitePolicy.Throw };
        QuantizeBlocks(ref kernel, source, rowCount, cols, firstElementIndex, blocks, scales);
    }

    protected override void DequantizeRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, bool fast, Span<float> destination)
    {
        // Q8_0 and Q4_0 rows of whole blocks in registers (the same floats; GgmlDot.TryDequantize).
        if (fast && cols % QK == 0 && GgmlDot.TryDequantize(Kind, blocks, rowCount * (cols / QK), destination)) return;
        var kernel = new Kernel(Kind);
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination);
    }

    /// <summary>One block at a time, on spans, without allocating: the driver's kernel.</summary>
    private struct Kernel(GgmlKind kind) : IBlockQuantizer, IBlockDequantizer
    {
        public bool CheckFinite;

        public readonly int QuantizeBlock(scoped ReadOnlySpan<float> x, long firstElementIndex, scoped Span<byte> y)
        {
            if (CheckFinite)
                for (int i = 0; i < QK; i++)
                    if (!float.IsFinite(x[i])) throw new NonFiniteValueException(firstElementIndex + i, x[i]);
            switch (kind)
            {
                case GgmlKind.Q8_0:
                {
                    float amax = 0;
                    for (int i = 0; i < QK; i++) amax = MathF.Max(amax, MathF.Abs(x[i]));
                    float d = amax / 127f, id = d != 0 ? 1f / d : 0f;
                    BinaryPrimitives.WriteHalfLittleEndian(y, (Half)d);
                    for (int i = 0; i < QK; i++) y[2 + i] = (byte)(sbyte)MathF.Round(x[i] * id, MidpointRounding.AwayFromZero);
                    break;
                }
                case GgmlKind.Q4_0:
                case GgmlKind.Q5_0:
                {
                    float amax = 0, max = 0;
                    for (int i = 0; i < QK; i++)
                    {
                        float a = MathF.Abs(x[i]);
                        if (amax < a) { amax = a; max = x[i]; }
                    }
                    bool five = kind == GgmlKind.Q5_0;
                    float d = max / (five ? -16f : -8f), id = d != 0 ? 1f / d : 0f, bias = five ? 16.5f : 8.5f;
                    int top = five ? 31 : 15, nibbles = five ? 6 : 2;
                    BinaryPrimitives.WriteHalfLittleEndian(y, (Half)d);
                    uint qh = 0;
                    for (int j = 0; j < QK / 2; j++)
                    {
                        int q0 = Math.Min(top, (int)(sbyte)(x[j] * id + bias)), q1 = Math.Min(top, (int)(sbyte)(x[j + QK / 2] * id + bias));
                        y[nibbles + j] = (byte)((q0 & 0xF) | (q1 & 0xF) << 4);
                        qh |= (uint)(q0 >> 4 & 1) << j | (uint)(q1 >> 4 & 1) << (j + QK / 2);
                    }
                    if (five) BinaryPrimitives.WriteUInt32LittleEndian(y[2..], qh);
                    break;
                }
                default:
                {
                    float min = float.MaxValue, max = -float.MaxValue;
                    for (int i = 0; i < QK; i++)
                    {
                        if (x[i] < min) min = x[i];
                        if (x[i] > max) max = x[i];
                    }
                    bool five = kind == GgmlKind.Q5_1;
                    float d = (max - min) / (five ? 31f : 15f), id = d != 0 ? 1f / d : 0f;
                    int nibbles = five ? 8 : 4;
                    BinaryPrimitives.WriteHalfLittleEndian(y, (Half)d);
                    BinaryPrimitives.WriteHalfLittleEndian(y[2..], (Half)min);
                    uint qh = 0;
                    for (int j = 0; j < QK / 2; j++)
                    {
                        float v0 = (x[j] - min) * id + 0.5f, v1 = (x[j + QK / 2] - min) * id + 0.5f;
                        int q0 = five ? (byte)v0 : Math.Min(15, (int)(sbyte)v0), q1 = five ? (byte)v1 : Math.Min(15, (int)(sbyte)v1);
                        y[nibbles + j] = (byte)((q0 & 0xF) | (q1 & 0xF) << 4);
                        qh |= (uint)(q0 >> 4 & 1) << j | (uint)(q1 >> 4 & 1) << (j + QK / 2);
                    }
                    if (five) BinaryPrimitives.WriteUInt32LittleEndian(y[4..], qh);
                    break;
                }
            }
            return 0;
        }

        public readonly void DequantizeBlock(int word, scoped ReadOnlySpan<byte> blocks, int offset, scoped Span<float> y)
        {
            var b = blocks.Slice(offset);
            float d = (float)BinaryPrimitives.ReadHalfLittleEndian(b);
            switch (kind)
            {
                case GgmlKind.Q8_0:
                    for (int i = 0; i < QK; i++) y[i] = (sbyte)b[2 + i] * d;
                    break;
                case GgmlKind.Q4_0:
                    for (int j = 0; j < QK / 2; j++)
                    {
                        y[j] = ((b[2 + j] & 0xF) - 8) * d;
                        y[j + QK / 2] = ((b[2 + j] >> 4) - 8) * d;
                    }
                    break;
                case GgmlKind.Q4_1:
                {
                    float m = (float)BinaryPrimitives.ReadHalfLittleEndian(b[2..]);
                    for (int j = 0; j < QK / 2; j++)
                    {
                        y[j] = (b[4 + j] & 0xF) * d + m;
                        y[j + QK / 2] = (b[4 + j] >> 4) * d + m;
                    }
                    break;
                }
                case GgmlKind.Q5_0:
                {
                    uint qh = BinaryPrimitives.ReadUInt32LittleEndian(b[2..]);
                    for (int j = 0; j < QK / 2; j++)
                    {
                        y[j] = (((b[6 + j] & 0xF) | (int)(qh >> j << 4 & 0x10)) - 16) * d;
                        y[j + QK / 2] = (((b[6 + j] >> 4) | (int)(qh >> (j + 12) & 0x10)) - 16) * d;
                    }
                    break;
                }
                default:
                {
                    float m = (float)BinaryPrimitives.ReadHalfLittleEndian(b[2..]);
                    uint qh = BinaryPrimitives.ReadUInt32LittleEndian(b[4..]);
                    for (int j = 0; j < QK / 2; j++)
                    {
                        y[j] = ((b[8 + j] & 0xF) | (int)(qh >> j << 4 & 0x10)) * d + m;
                        y[j + QK / 2] = ((b[8 + j] >> 4) | (int)(qh >> (j + 12) & 0x10)) * d + m;
                    }
                    break;
                }
            }
        }
    }
}
