using System.Buffers.Binary;
using System.Runtime.Intrinsics;

namespace Nanoscale.Formats.Nv;

/// <summary>
/// NVIDIA NVFP4 (SPEC §5): blocks of 16 E2M1 elements, a UE4M3 scale per block, one FP32 scale per tensor.
/// </summary>
/// <remarks>
/// <para>All arithmetic is float32, in this order, so every kernel gives the same bytes:
/// <c>s_t = amax_tensor / 2688f</c> (2688 = 6·448); per block <c>t = amax_block / (6f·s_t)</c> (0 when s_t = 0),
/// <c>s_b = UE4M3_rne(t)</c> saturating at 448; a zero block gets s_b = 1.0 (code 0x38); a non-zero block whose t
/// rounds to 0 gets the smallest code 0x01 (2^−9). Elements: <c>E2M1(v / (s_b·s_t))</c> with the codec's rounding
/// mode, saturating; when s_b·s_t underflows to 0 (tensor amax below about 2^−138) the codes are 0.
/// Decoding: <c>e2m1(code)·(s_b·s_t)</c>.</para>
/// <para>Tensor data: s_t as 4 bytes little-endian FP32. Non-finite values are skipped by the tensor amax under
/// <see cref="NonFinitePolicy.PassThrough"/>; their blocks store scale 0x7F (NaN) and zero codes.</para>
/// </remarks>
internal sealed class NvFp4Codec : BlockCodec
{
    public const int NvBlockSize = 16;

    /// <summary>6 · 448: E2M1 max times UE4M3 max.</summary>
    public const float TensorScaleDivisor = 2688f;

    /// <summary>UE4M3 code of 1.0, the scale of an all-zero block.</summary>
    public const byte ZeroBlockScaleCode = 0x38;

    public NvFp4Codec(RoundingMode rounding = RoundingMode.NearestEven, string spec = "nvfp4", bool signedZero = true, bool divisor = false)
        : base(spec, NvBlockSize, bytesPerBlock: 8, scaleBytesPerBlock: 1, tensorDataBytes: 4)
    {
        Rounding = rounding;
        SignedZero = signedZero;
        Divisor = divisor;
    }

    /// <summary><c>global=divisor</c>: compressed-tensors' convention. The tensor data is its <c>weight_global_scale</c>
    /// g = 2688/amax (the inverse of s_t; 1 for an all-zero tensor), a block's scale code is cast from (amax_b/6)·g, and
    /// a block decodes as <c>e2m1(code)·(s_b/g)</c>, exactly as that library's dequantizer computes — the form in which
    /// Nanoscale reads NVFP4 checkpoints of that layout.</summary>
    public bool Divisor { get; }

    /// <summary>The float a block's elements are multiplied by: s_b·s_t, or s_b/g in <see cref="Divisor"/> form.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static float BlockScale(float sb, float tensorScale, bool divisor) => divisor ? sb / tensorScale : sb * tensorScale;

    /// <summary>A negative value that rounds to zero is stored as −0 (<c>zero=signed</c>, the default) or +0.</summary>
    public bool SignedZero { get; }

    /// <summary>Rounding of the element cast (the block-scale cast is always ties-to-even).</summary>
    public RoundingMode Rounding { get; }

    public static ElementFormat Element => ElementFormat.E2M1;

    public static ScaleFormat ScaleFormat => ScaleFormat.UE4M3;

    public override ITensorDataAccumulator CreateTensorDataAccumulator(CodecOptions options) =>
        new TensorAmax(options.NonFinite, TensorScaleDivisor, inverse: Divisor);

    /// <summary>The value a block's scale code is cast from: amax_b/(6·s_t), or compressed-tensors' (amax_b/6)·g.</summary>
    internal static float BlockTarget(float amax, float tensorScale, bool divisor) =>
        divisor ? amax / 6f * tensorScale : tensorScale > 0 ? amax / (6f * tensorScale) : 0f;

    /// <summary>The tensor scale s_t for a tensor whose largest finite magnitude is <paramref name="amax"/>.</summary>
    public static float TensorScale(float amax) => amax / TensorScaleDivisor;

    /// <summary>Reads s_t from tensor data, checking it is a finite non-negative float.</summary>
    internal static float ReadTensorScale(ReadOnlySpan<byte> tensorData) => TensorAmax.ReadScale(tensorData, "nvfp4");

    protected override void CheckTensorData(ReadOnlySpan<byte> tensorData) => ReadTensorScale(tensorData);

    protected override void QuantizeReference(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales)
    {
        NvFp4Reference.Quantize(this, source, rowCount, cols, ReadTensorScale(tensorData), policy, firstElementIndex, blocks, scales);
    }

    protected override void DequantizeReference(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, Span<float> destination) =>
        NvFp4Reference.Dequantize(this, blocks, scales, rowCount, cols, ReadTensorScale(tensorData), Divisor, destination);

    protected override void QuantizeRows(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, bool fast, Span<byte> blocks, Span<byte> scales)
    {
        Span<byte> codes = stackalloc byte[NvBlockSize];
        var kernel = new NvFp4Kernel.Quantizer(this, ReadTensorScale(tensorData), policy, fast && Vector256.IsHardwareAccelerated, codes);
        QuantizeBlocks(ref kernel, source, rowCount, cols, firstElementIndex, blocks, scales);
    }

    /// <summary>
    /// The generation step's product on NVFP4 codes: in integers on int8 activations for rows of whole 32s
    /// (<see cref="NvFp4Dot"/>); otherwise per 16-element block the codes are looked up in registers and
    /// multiplied with the activations (<see cref="Packed4Vector.Dot16"/>), then scaled once by s_b·s_t, the same float
    /// the decoder multiplies each value by. Exact up to float summation order. AVX2 with FMA and whole blocks;
    /// otherwise false (the caller decodes rows).
    /// </summary>
    public override bool TryDotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        if (cols % NvBlockSize != 0 || !Packed4Vector.IsSupported || !System.Runtime.Intrinsics.X86.Fma.IsSupported) return false;
        CheckDotSpans(blocks, scales, rowCount, cols, x, y);
        float st = ReadTensorScale(tensorData);
        if (NvFp4Dot.Applies(cols))
        {
            NvFp4Dot.DotRows(blocks, scales, st, Divisor, rowCount, cols, x, y);
            return true;
        }
        int nb = cols / NvBlockSize;
        var (low, high) = Packed4Vector.Load4BitTable(ElementFormat.E2M1.DecodeTable);
        ReadOnlySpan<float> scaleTable = ScaleFormat.UE4M3.DecodeTable;
        ref float x0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        for (int r = 0; r < rowCount; r++)
        {
            var total = Vector256<float>.Zero;
            for (int j = 0; j < nb; j++)
            {
                int index = r * nb + j;
                var sum = Packed4Vector.Dot16(low, high, blocks.Slice(index * BytesPerBlock, BytesPerBlock),
                    ref System.Runtime.CompilerServices.Unsafe.Add(ref x0, j * NvBlockSize));
                total = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(sum, Vector256.Create(BlockScale(scaleTable[scales[index]], st, Divisor)), total);
            }
            y[r] = Vector256.Sum(total);
        }
        return true;
    }

    /// <summary>A few vectors at once (a token-factory step): rows of whole 32s unpacked once for all of them
    /// (<see cref="NvFp4Dot.DotRowsMany"/>); otherwise one vector after another.</summary>
    public override bool HasDotRowsMany(int cols) => NvFp4Dot.Applies(cols);

    public override bool TryDotRowsMany(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        if (!NvFp4Dot.Applies(cols) || vectors < 1 || vectors > MaxDotVectors(cols))
            return base.TryDotRowsMany(blocks, scales, tensorData, rowCount, cols, vectors, x, y, yStride);
        CheckDotSpans(blocks, scales, rowCount, cols, x[..cols], y[..rowCount]);
        // Rows in the lanes from NibbleLanes.MinVectors on (with fewer, unpacking a group costs more than it saves).
        if (NibbleLanes.IsSupported && vectors >= NibbleLanes.MinVectors)
            NvFp4Dot.DotRowsLanes(blocks, scales, ReadTensorScale(tensorData), Divisor, rowCount, cols, vectors, x, y, yStride);
        else
            NvFp4Dot.DotRowsMany(blocks, scales, ReadTensorScale(tensorData), Divisor, rowCount, cols, vectors, x, y, yStride);
        return true;
    }

    /// <summary>Sixteen on the lanes (<see cref="NvFp4Dot.DotRowsLanes"/>), else eight.</summary>
    public override int MaxDotVectors(int cols) => NibbleLanes.IsSupported && NvFp4Dot.Applies(cols) ? NibbleLanes.MaxVectors : NibbleDot.MaxVectors;

    protected override void DequantizeRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, bool fast, Span<float> destination)
    {
        var kernel = new NvFp4Kernel.Dequantizer(ReadTensorScale(tensorData), Divisor, fast && Packed4Vector.IsSupported);
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination);
    }
}
