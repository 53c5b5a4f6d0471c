using System.Buffers.Binary;

namespace Nanoscale.Formats.E8;

/// <summary>
/// <c>e8</c>: vector quantization on the E8 lattice (issue 16; docs/e8.md). Blocks of 32 weights = 4 vectors of 8, each
/// a 16-bit index into <see cref="E8Lattice"/>'s 2^16-point codebook; one UE4M3 scale per block (1 byte) times one
/// float32 scale per tensor (tensor data): 2.25 bits per weight (<c>bits=2</c>), as MXINT2 or an MX 2-bit format. A
/// weight decodes to s_t · s_b · p_i with p the codebook point.
/// </summary>
/// <remarks>
/// <para><b>Residual stages</b> (RVQ, <c>bits=3|4</c>): the error of the first point is quantized again at a fixed
/// fraction ρ of the block's scale, with no scale stored for it: <c>bits=4</c> by a second index into the same
/// codebook (ρ₄ = <see cref="Residual4"/>), <c>bits=3</c> by one sign per weight, ±ρ₃·s (ρ₃ = <see cref="Residual3"/>;
/// the 256 corners of a cube, the simplest second codebook of 8 bits per vector). 3.25 and 4.25 bits per weight, as
/// NxFP3/MXFP4. A vector's bytes: the 16-bit first index, then the second stage's byte or 16-bit index. ρ is chosen
/// where the mean squared error on Gaussian weights is lowest (<c>Nanoscale.Benchmarks e8-rvq</c>, docs/e8.md).</para>
/// <para><b>Encoding.</b> s_t = amax_tensor / (2.5 · 448), so the largest block maps to a scale near the top of UE4M3.
/// Per block, the scale codes from four below to three above UE4M3(amax_b / (2.5 · s_t)) are tried — a block's largest
/// weight lands near 2.5 lattice units, inside the codebook's ball (|p|² ≤ 10 holds every point) — each vector is
/// quantized by every stage (<see cref="QuantizeVector"/>), and the scale with the lowest squared error of the whole
/// reconstruction wins (the first on ties). A block of zeros stores scale code 0 and the origin's index (and zero
/// residual codes). A block with a NaN or ±Inf is refused (<see cref="NonFinitePolicy.Throw"/>) or stored as NaN
/// (scale code 0x7F).</para>
/// <para>One implementation serves the reference and the fast path (no vectorised kernel yet).</para>
/// </remarks>
internal sealed class E8Codec : BlockCodec
{
    public const int E8BlockSize = 32;
    private const int Vectors = E8BlockSize / E8Lattice.Dimension;

    /// <summary>Lattice units the largest weight of a block is aimed at.</summary>
    public const float Reach = 2.5f;

    /// <summary>ρ₄: the second E8 stage's scale as a fraction of the block's.</summary>
    public const float Residual4 = 0.275f;

    /// <summary>ρ₃: the sign stage's step as a fraction of the block's scale.</summary>
    public const float Residual3 = 0.2375f;

    public E8Codec(string spec = "e8", int bits = 2, float? residualScale = null)
        : base(spec, E8BlockSize, bytesPerBlock: VectorBytesFor(bits) * Vectors, scaleBytesPerBlock: 1, tensorDataBytes: 4)
    {
        Bits = bits;
        VectorBytes = VectorBytesFor(bits);
        ResidualScale = residualScale ?? (bits == 4 ? Residual4 : bits == 3 ? Residual3 : 0);
    }

    private static int VectorBytesFor(int bits) => bits switch
    {
        2 => 2,
        3 => 3,
        4 => 4,
        _ => throw new ArgumentOutOfRangeException(nameof(bits), bits, "e8 has 2, 3 or 4 bits per weight"),
    };

    /// <summary>Bits per weight of the codes (2: one E8 index; 3: and a sign per weight; 4: and a second index).</summary>
    public int Bits { get; }

    /// <summary>Bytes of one vector's codes.</summary>
    public int VectorBytes { get; }

    /// <summary>ρ: the residual stage's scale over the block's (0 without one).</summary>
    public float ResidualScale { get; }

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

    /// <summary>
    /// Codes one vector (<paramref name="values"/>: up to 8, the rest taken as zero) under a block scale
    /// (<paramref name="encode"/> to divide by, <paramref name="decode"/> as stored; not positive: the origin and zero
    /// residual codes), writes its <see cref="VectorBytes"/> bytes to <paramref name="packed"/> and the point they
    /// decode to (<see cref="DecodeVector"/>) to <paramref name="point"/>.
    /// </summary>
    internal void QuantizeVector(ReadOnlySpan<float> values, double encode, float decode, Span<byte> packed, Span<float> point)
    {
        const int D = E8Lattice.Dimension;
        packed[..VectorBytes].Clear();
        if (!(encode > 0))
        {
            point[..D].Clear();
            return;
        }
        Span<double> x = stackalloc double[D];
        x.Clear();
        for (int i = 0; i < values.Length; i++) x[i] = values[i] / encode;
        BinaryPrimitives.WriteUInt16LittleEndian(packed, E8Lattice.Quantize(x));
        if (Bits > 2)
        {
            // The residual against the first stage's point as stored.
            Span<float> first = stackalloc float[D];
            E8Lattice.Decode(BinaryPrimitives.ReadUInt16LittleEndian(packed), decode, first);
            for (int i = 0; i < D; i++) x[i] = ((i < values.Length ? values[i] : 0) - (double)first[i]) / (encode * ResidualScale);
            if (Bits == 4) BinaryPrimitives.WriteUInt16LittleEndian(packed[2..], E8Lattice.Quantize(x));
            else
            {
                int signs = 0;
                for (int i = 0; i < D; i++) if (x[i] < 0) signs |= 1 << i;
                packed[2] = (byte)signs;
            }
        }
        DecodeVector(packed, decode, point);
    }

    /// <summary>The 8 weights of one vector's codes under the block scale <paramref name="scale"/> (the decoder's
    /// arithmetic, shared by the encoder and LDLQ so both see what is stored).</summary>
    internal void DecodeVector(ReadOnlySpan<byte> packed, float scale, Span<float> destination)
    {
        E8Lattice.Decode(BinaryPrimitives.ReadUInt16LittleEndian(packed), scale, destination);
        if (Bits == 2) return;
        float residual = scale * ResidualScale;
        if (Bits == 4)
        {
            Span<float> second = stackalloc float[E8Lattice.Dimension];
            E8Lattice.Decode(BinaryPrimitives.ReadUInt16LittleEndian(packed[2..]), residual, second);
            for (int i = 0; i < E8Lattice.Dimension; i++) destination[i] += second[i];
        }
        else
            for (int i = 0; i < E8Lattice.Dimension; i++) destination[i] += (packed[2] >> i & 1) != 0 ? -residual : residual;
    }

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

    /// <summary>One block: its codes into <paramref name="packed"/>, its scale code returned.</summary>
    private byte QuantizeBlock(float[] block, int count, float st, NonFinitePolicy policy, long firstIndex, Span<byte> packed)
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
        Span<byte> trial = stackalloc byte[BytesPerBlock];
        Span<float> point = stackalloc float[E8Lattice.Dimension];
        int bestCode = 0;
        packed.Clear(); // the origin's index (0) and zero residual codes
        if (amax > 0 && st > 0)
        {
            double bestError = double.PositiveInfinity;
            int center = Scale.Encode(amax / (Reach * (double)st));
            for (int code = Math.Max(Scale.MinCode, center - 4); code <= Math.Min(Scale.MaxCode, center + 3); code++)
            {
                if (code == Scale.NaNCode) continue;
                double s = (double)Scale.Decode(code) * st;
                if (!(s > 0)) continue;
                float decode = Scale.Decode(code) * st;
                double error = 0;
                for (int v = 0; v < Vectors; v++)
                {
                    QuantizeVector(block.AsSpan(v * 8, 8), s, decode, trial.Slice(v * VectorBytes, VectorBytes), point);
                    for (int i = 0; i < E8Lattice.Dimension; i++) error += (block[v * 8 + i] - (double)point[i]) * (block[v * 8 + i] - (double)point[i]);
                }
                if (error < bestError)
                {
                    bestError = error;
                    bestCode = code;
                    trial.CopyTo(packed);
                }
            }
        }
        return (byte)bestCode;
    }

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
                DecodeVector(blocks.Slice(index * BytesPerBlock + v * VectorBytes, VectorBytes), s, block.Slice(v * 8, 8));
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
