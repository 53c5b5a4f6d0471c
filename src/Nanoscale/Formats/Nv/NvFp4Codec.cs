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
public sealed class NvFp4Codec : IBlockCodec
{
    public const int NvBlockSize = 16;

    /// <summary>6 · 448: E2M1 max times UE4M3 max.</summary>
    public const float TensorScaleDivisor = 2688f;

    /// <summary>UE4M3 code of 1.0, the scale of an all-zero block.</summary>
    public const byte ZeroBlockScaleCode = 0x38;

    public NvFp4Codec(RoundingMode rounding = RoundingMode.NearestEven, string spec = "nvfp4")
    {
        Rounding = rounding;
        Spec = spec;
    }

    public string Spec { get; }

    /// <summary>Rounding of the element cast (the block-scale cast is always ties-to-even).</summary>
    public RoundingMode Rounding { get; }

    public static ElementFormat Element => ElementFormat.E2M1;

    public static ScaleFormat ScaleFormat => ScaleFormat.UE4M3;

    public int BlockSize => NvBlockSize;

    public int BytesPerBlock => 8;

    public int ScaleBytesPerBlock => 1;

    public int TensorDataBytes => 4;

    public int BlocksPerRow(int cols) => (cols + NvBlockSize - 1) / NvBlockSize;

    public double BitsPerWeight(long rows, long cols) =>
        ((double)rows * BlocksPerRow(checked((int)cols)) * (BytesPerBlock + ScaleBytesPerBlock) * 8 + TensorDataBytes * 8)
        / ((double)rows * cols);

    public ITensorDataAccumulator CreateTensorDataAccumulator(CodecOptions options) => new TensorAmax(options.NonFinite);

    /// <summary>The tensor scale s_t for a tensor whose largest finite magnitude is <paramref name="amax"/>.</summary>
    public static float TensorScale(float amax) => amax / TensorScaleDivisor;

    /// <summary>Reads s_t from tensor data, checking it is a finite non-negative float.</summary>
    internal static float ReadTensorScale(ReadOnlySpan<byte> tensorData)
    {
        float st = BinaryPrimitives.ReadSingleLittleEndian(tensorData);
        if (!float.IsFinite(st) || st < 0)
            throw new ArgumentException($"nvfp4: tensor scale must be a finite float ≥ 0, found {st}.", nameof(tensorData));
        return st;
    }

    public unsafe void Quantize(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        CodecOptions options, long firstElementIndex, Span<byte> blocks, Span<byte> scales)
    {
        BlockCodecChecks.Quantize(this, source.Length, rowCount, cols, tensorData.Length, blocks.Length, scales.Length);
        float st = ReadTensorScale(tensorData);
        if (options.Kernel == CodecKernel.Reference)
        {
            NvFp4Reference.Quantize(this, source, rowCount, cols, st, options.NonFinite, firstElementIndex, blocks, scales);
            return;
        }
        bool vector = options.Kernel == CodecKernel.Fast && Vector256.IsHardwareAccelerated;
        int nb = BlocksPerRow(cols);
        var policy = options.NonFinite;
        fixed (float* sourcePtr = source)
        fixed (byte* blocksPtr = blocks, scalesPtr = scales)
        {
            nint s = (nint)sourcePtr, b = (nint)blocksPtr, sc = (nint)scalesPtr;
            RowParallel.For(rowCount, cols, options.Parallelism, (start, count) =>
                NvFp4Kernel.QuantizeRows(this,
                    new ReadOnlySpan<float>((float*)s + (long)start * cols, count * cols), count, cols, st, policy,
                    firstElementIndex + (long)start * cols, vector,
                    new Span<byte>((byte*)b + (long)start * nb * 8, count * nb * 8),
                    new Span<byte>((byte*)sc + (long)start * nb, count * nb)));
        }
    }

    public unsafe void Dequantize(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, CodecOptions options, Span<float> destination)
    {
        BlockCodecChecks.Dequantize(this, blocks.Length, scales.Length, tensorData.Length, rowCount, cols, destination.Length);
        float st = ReadTensorScale(tensorData);
        if (options.Kernel == CodecKernel.Reference)
        {
            NvFp4Reference.Dequantize(this, blocks, scales, rowCount, cols, st, destination);
            return;
        }
        bool vector = options.Kernel == CodecKernel.Fast && Packed4Vector.IsSupported;
        int nb = BlocksPerRow(cols);
        fixed (float* destinationPtr = destination)
        fixed (byte* blocksPtr = blocks, scalesPtr = scales)
        {
            nint d = (nint)destinationPtr, b = (nint)blocksPtr, sc = (nint)scalesPtr;
            RowParallel.For(rowCount, cols, options.Parallelism, (start, count) =>
                NvFp4Kernel.DequantizeRows(
                    new ReadOnlySpan<byte>((byte*)b + (long)start * nb * 8, count * nb * 8),
                    new ReadOnlySpan<byte>((byte*)sc + (long)start * nb, count * nb), count, cols, st, vector,
                    new Span<float>((float*)d + (long)start * cols, count * cols)));
        }
    }

    public override string ToString() => Spec;

    /// <summary>Largest finite |v| of the tensor, streamed.</summary>
    private sealed class TensorAmax(NonFinitePolicy policy) : ITensorDataAccumulator
    {
        private uint _amaxBits;

        public void Add(ReadOnlySpan<float> values, long firstElementIndex)
        {
            uint amax = _amaxBits;
            for (int i = 0; i < values.Length; i++)
            {
                uint a = BitConverter.SingleToUInt32Bits(values[i]) & 0x7FFF_FFFFu;
                if (a >= 0x7F80_0000u)
                {
                    if (policy == NonFinitePolicy.Throw)
                        throw new NonFiniteValueException(firstElementIndex + i, values[i]);
                    continue;
                }
                amax = Math.Max(amax, a);
            }
            _amaxBits = amax;
        }

        public void WriteTensorData(Span<byte> destination) =>
            BinaryPrimitives.WriteSingleLittleEndian(destination, TensorScale(BitConverter.UInt32BitsToSingle(_amaxBits)));
    }
}
