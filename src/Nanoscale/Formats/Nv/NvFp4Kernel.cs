using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Nanoscale.Formats.Nv;

/// <summary>Fast NVFP4 kernels over a range of rows (scalar bit encoder or 8-lane <see cref="ElementEncoder256"/>);
/// byte-identical to <see cref="NvFp4Reference"/>.</summary>
internal static class NvFp4Kernel
{
    private const int B = NvFp4Codec.NvBlockSize;

    /// <summary>One NVFP4 block at a time for <see cref="BlockCodec.QuantizeBlocks"/>.</summary>
    internal readonly ref struct Quantizer : IBlockQuantizer
    {
        private readonly NvFp4Codec _codec;
        private readonly float _st;
        private readonly NonFinitePolicy _policy;
        private readonly bool _vector;
        private readonly ElementEncoder256 _encoder;
        private readonly Span<byte> _codes; // scratch: one block of codes

        public Quantizer(NvFp4Codec codec, float st, NonFinitePolicy policy, bool vector, Span<byte> codes)
        {
            _codec = codec;
            _st = st;
            _policy = policy;
            _vector = vector;
            _encoder = vector ? new ElementEncoder256(ElementFormat.E2M1, codec.Rounding, codec.SignedZero) : default;
            _codes = codes;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int QuantizeBlock(scoped ReadOnlySpan<float> block, long firstElementIndex, scoped Span<byte> packed)
        {
            uint amaxBits = 0;
            foreach (float v in block)
                amaxBits = Math.Max(amaxBits, BitConverter.SingleToUInt32Bits(v) & 0x7FFF_FFFFu);
            if (amaxBits >= 0x7F80_0000u)
            {
                if (_policy == NonFinitePolicy.Throw)
                    for (int i = 0; i < B; i++)
                        if (!float.IsFinite(block[i]))
                            throw new NonFiniteValueException(firstElementIndex + i, block[i]);
                packed.Clear();
                return ScaleFormat.UE4M3.NaNCode;
            }
            if (amaxBits == 0)
            {
                packed.Clear();
                return NvFp4Codec.ZeroBlockScaleCode;
            }
            float amax = BitConverter.UInt32BitsToSingle(amaxBits);
            float t = NvFp4Codec.BlockTarget(amax, _st, _codec.Divisor);
            // UE4M3 is the non-negative half of E4M3, so the exact E4M3 encoder casts t (saturating at 448).
            int scaleCode = Math.Max(1, ElementFormat.E4M3.Encode(t));
            float scale = NvFp4Codec.BlockScale(ScaleFormat.UE4M3.Decode(scaleCode), _st, _codec.Divisor);
            if (!(scale > 0))
            {
                packed.Clear();
                return scaleCode;
            }
            if (_vector)
            {
                ref float p = ref MemoryMarshal.GetReference(block);
                Vector256<float> s = Vector256.Create(scale);
                Vector256<ushort> c = Vector256.Narrow(
                    _encoder.Encode(Vector256.LoadUnsafe(ref p) / s).AsUInt32(),
                    _encoder.Encode(Vector256.LoadUnsafe(ref p, 8) / s).AsUInt32());
                Vector128<ushort> u = Vector128.Narrow(c.GetLower(), c.GetUpper()).AsUInt16();
                Vector128<ushort> w = u | Vector128.ShiftRightLogical(u, 4); // low byte = lo | hi << 4
                MemoryMarshal.Write(packed, Vector128.Narrow(w, w).AsUInt64().ToScalar());
            }
            else
            {
                ElementFormat e2m1 = ElementFormat.E2M1;
                for (int i = 0; i < B; i++)
                    _codes[i] = (byte)e2m1.Encode(block[i] / scale, _codec.Rounding, _codec.SignedZero);
                BlockPacking.Pack(_codes, 4, packed);
            }
            return scaleCode;
        }
    }

    /// <summary>One NVFP4 block at a time for <see cref="BlockCodec.DequantizeBlocks"/>: <c>e2m1(code)·(s_b·s_t)</c>
    /// (or <c>·(s_b/g)</c> in the divisor form).</summary>
    internal readonly ref struct Dequantizer(float st, bool divisor, bool vector) : IBlockDequantizer
    {
        private readonly (Vector256<float> Low, Vector256<float> High) _table =
            vector ? Packed4Vector.Load4BitTable(ElementFormat.E2M1.DecodeTable) : default;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void DequantizeBlock(int word, scoped ReadOnlySpan<byte> blocks, int offset, scoped Span<float> destination)
        {
            float scale = NvFp4Codec.BlockScale(ScaleFormat.UE4M3.DecodeTable[word], st, divisor);
            ReadOnlySpan<byte> packed = blocks.Slice(offset, 8);
            if (vector)
            {
                Packed4Vector.Dequantize16(_table.Low, _table.High, packed, scale, destination);
                return;
            }
            ReadOnlySpan<float> table = ElementFormat.E2M1.DecodeTable;
            for (int i = 0; i < B / 2; i++)
            {
                destination[2 * i] = table[packed[i] & 0xF] * scale;
                destination[2 * i + 1] = table[packed[i] >> 4] * scale;
            }
        }
    }
}
