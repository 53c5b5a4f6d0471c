using System.Buffers.Binary;

namespace Nanoscale.Formats.E8;

/// <summary>
/// <c>e8</c>: 2-bit vector quantization on the E8 lattice (issue 16; docs/e8.md). Blocks of 32 weights = 4 vectors of
/// 8, each a 16-bit index into <see cref="E8Lattice"/>'s 2^16-point codebook (8 bytes per block); one UE4M3 scale per
/// block (1 byte) times one float32 scale per tensor (tensor data): 2.25 bits per weight, as MXINT2 or an MX 2-bit
/// format. A weight decodes to s_t · s_b · p_i with p the codebook point.
/// </summary>
/// <remarks>
/// <para><b>Encoding.</b> s_t = amax_tensor / (2.5 · 448), so the largest block maps to a scale near the top of UE4M3.
/// Per block, the scale codes from four below to three above UE4M3(amax_b / (2.5 · s_t)) are tried — a block's largest
/// weight lands near 2.5 lattice units, inside the codebook's ball (|p|² ≤ 10 holds every point) — each vector is
/// quantized to the codebook (<see cref="E8Lattice.Quantize"/>), and the scale with the lowest squared error wins (the
/// first on ties). A block of zeros stores scale code 0 and the origin's index. A block with a NaN or ±Inf is refused
/// (<see cref="NonFinitePolicy.Throw"/>) or stored as NaN (scale code 0x7F).</para>
/// <para>One implementation serves the reference and the fast path (no vectorised kernel yet).</para>
/// </remarks>
internal sealed class E8Codec : BlockCodec
{
    public const int E8BlockSize = 32;
    private const int Vectors = E8BlockSize / E8Lattice.Dimension;

    /// <summary>Lattice units the largest weight of a block is aimed at.</summary>
    public const float Reach = 2.5f;

    public E8Codec(string spec = "e8") : base(spec, E8BlockSize, bytesPerBlock: 2 * Vectors, scaleBytesPerBlock: 1, tensorDataBytes: 4) { }

    private static ScaleFormat Scale => ScaleFormat.UE4M3;

    public override ITensorDataAccumulator CreateTensorDataAccumulator(CodecOptions options) =>
        new TensorAmax(options.NonFinite, Reach * 448f);

    private static float ReadTensorScale(ReadOnlySpan<byte> tensorData) => TensorAmax.ReadScale(tensorData, "e8");

    /// <summary>A block's scale as the encoder divides by it (double) and as the decoder multiplies by it (float), from
    /// its scale code and the tensor data: what LDLQ's vector rounding needs to round a vector as the encoder would
    /// and return what the stored index decodes to.</summary>
    internal static (double Encode, float Decode) BlockScale(byte code, ReadOnlySpan<byte> tensorData)
    {
        float st = ReadTensorScale(tensorData);
        return ((double)Scale.Decode(code) * st, Scale.Decode(code) * st);
    }

    protected override void CheckTensorData(ReadOnlySpan<byte> tensorData) => ReadTensorScale(tensorData);

    protected override void QuantizeReference(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales)
    {
        float st = ReadTensorScale(tensorData);
        int nb = BlocksPerRow(cols);
        var block = new float[E8BlockSize];
        for (int r = 0; r < rowCount; r++)
        for (int j = 0; j < nb; j++)
        {
            int start = j * E8BlockSize, count = Math.Min(E8BlockSize, cols - start);
            Array.Clear(block);
            source.Slice(r * cols + start, count).CopyTo(block);
            int index = r * nb + j;
            scales[index] = QuantizeBlock(block, count, st, policy, firstElementIndex + (long)r * cols + start, blocks.Slice(index * BytesPerBlock, BytesPerBlock));
        }
    }

    /// <summary>One block: its indices into <paramref name="packed"/>, its scale code returned.</summary>
    private static byte QuantizeBlock(float[] block, int count, float st, NonFinitePolicy policy, long firstIndex, Span<byte> packed)
    {
        float amax = 0;
        for (int i = 0; i < count; i++)
        {
            if (!float.IsFinite(block[i]))
            {
                if (policy == NonFinitePolicy.Throw) throw new NonFiniteValueException(firstIndex + i, block[i]);
                packed.Clear();
                return (byte)Scale.NaNCode;
            }
            amax = Math.Max(amax, Math.Abs(block[i]));
        }
        Span<ushort> best = stackalloc ushort[Vectors], trial = stackalloc ushort[Vectors];
        Span<double> x = stackalloc double[E8Lattice.Dimension];
        Span<float> point = stackalloc float[E8Lattice.Dimension];
        int bestCode = 0;
        best.Fill(OriginIndex);
        if (amax > 0 && st > 0)
        {
            double bestError = double.PositiveInfinity;
            int center = Scale.Encode(amax / (Reach * (double)st));
            for (int code = Math.Max(Scale.MinCode, center - 4); code <= Math.Min(Scale.MaxCode, center + 3); code++)
            {
                if (code == Scale.NaNCode) continue;
                double s = (double)Scale.Decode(code) * st;
                if (!(s > 0)) continue;
                double error = 0;
                for (int v = 0; v < Vectors; v++)
                {
                    for (int i = 0; i < E8Lattice.Dimension; i++) x[i] = block[v * 8 + i] / s;
                    trial[v] = E8Lattice.Quantize(x);
                    E8Lattice.Decode(trial[v], (float)s, point);
                    for (int i = 0; i < E8Lattice.Dimension; i++) error += (block[v * 8 + i] - (double)point[i]) * (block[v * 8 + i] - (double)point[i]);
                }
                if (error < bestError)
                {
                    bestError = error;
                    bestCode = code;
                    trial.CopyTo(best);
                }
            }
        }
        for (int v = 0; v < Vectors; v++) BinaryPrimitives.WriteUInt16LittleEndian(packed[(2 * v)..], best[v]);
        return (byte)bestCode;
    }

    /// <summary>The codebook index of the origin (the first point).</summary>
    private const ushort OriginIndex = 0;

    protected override void DequantizeReference(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, Span<float> destination)
    {
        float st = ReadTensorScale(tensorData);
        int nb = BlocksPerRow(cols);
        Span<float> block = stackalloc float[E8BlockSize];
        for (int r = 0; r < rowCount; r++)
        for (int j = 0; j < nb; j++)
        {
            int index = r * nb + j;
            float s = Scale.Decode(scales[index]) * st; // NaN code: the block decodes to NaN
            for (int v = 0; v < Vectors; v++)
                E8Lattice.Decode(BinaryPrimitives.ReadUInt16LittleEndian(blocks[(index * BytesPerBlock + 2 * v)..]), s, block.Slice(v * 8, 8));
            int start = j * E8BlockSize, count = Math.Min(E8BlockSize, cols - start);
            block[..count].CopyTo(destination.Slice(r * cols + start, count));
        }
    }

    protected override void QuantizeRows(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, bool fast, Span<byte> blocks, Span<byte> scales) =>
        QuantizeReference(source, rowCount, cols, tensorData, policy, firstElementIndex, blocks, scales);

    protected override void DequantizeRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, bool fast, Span<float> destination) =>
        DequantizeReference(blocks, scales, tensorData, rowCount, cols, destination);
}
