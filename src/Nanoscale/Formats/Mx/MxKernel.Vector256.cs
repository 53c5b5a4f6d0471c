using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Nanoscale.Formats.Mx;

internal static partial class MxKernel
{
    private static bool Vector256Dequantize4IsSupported => Packed4Vector.IsSupported;

    /// <summary>One 32-element block in four 8-lane vectors: amax by unsigned max of |bits| (NaN/Inf bits sort above
    /// every finite value), scale as in the scalar path, codes by <see cref="ElementEncoder256"/>, narrowed
    /// int → byte in element order, then packed (4-bit: byte j = code 2j | code 2j+1 &lt;&lt; 4).</summary>
    private static byte QuantizeBlockVector(MxCodec codec, in ElementEncoder256 encoder, ReadOnlySpan<float> block,
        NonFinitePolicy policy, long index0, Span<byte> codes, Span<byte> packed)
    {
        ref float p = ref MemoryMarshal.GetReference(block);
        Vector256<float> v0 = Vector256.LoadUnsafe(ref p), v1 = Vector256.LoadUnsafe(ref p, 8),
            v2 = Vector256.LoadUnsafe(ref p, 16), v3 = Vector256.LoadUnsafe(ref p, 24);
        Vector256<uint> absMask = Vector256.Create(0x7FFF_FFFFu);
        Vector256<uint> m = Vector256.Max(
            Vector256.Max(v0.AsUInt32() & absMask, v1.AsUInt32() & absMask),
            Vector256.Max(v2.AsUInt32() & absMask, v3.AsUInt32() & absMask));
        Vector128<uint> m4 = Vector128.Max(m.GetLower(), m.GetUpper());
        uint amaxBits = Math.Max(Math.Max(m4.GetElement(0), m4.GetElement(1)), Math.Max(m4.GetElement(2), m4.GetElement(3)));
        if (amaxBits >= 0x7F80_0000u)
            return NonFiniteBlock(block, policy, index0, packed);
        if (amaxBits == 0)
        {
            packed.Clear();
            return 0;
        }
        int x = codec.ScaleRule == MxScaleRule.Mse
            ? MseExponent(codec, block, SharedExponentFloor(codec, amaxBits), codes)
            : SharedExponent(codec, amaxBits);
        Vector256<float> multiplier = Vector256.Create(MathF.ScaleB(1f, -x));
        Vector256<byte> bytes = Vector256.Narrow(
            Vector256.Narrow(encoder.Encode(v0 * multiplier).AsUInt32(), encoder.Encode(v1 * multiplier).AsUInt32()),
            Vector256.Narrow(encoder.Encode(v2 * multiplier).AsUInt32(), encoder.Encode(v3 * multiplier).AsUInt32()));
        int bits = codec.Element.Bits;
        if (bits == 8)
            bytes.StoreUnsafe(ref MemoryMarshal.GetReference(packed));
        else if (bits == 4)
        {
            Vector256<ushort> u = bytes.AsUInt16();
            Vector256<ushort> w = u | Vector256.ShiftRightLogical(u, 4); // low byte = lo | hi << 4
            Vector128.Narrow(w.GetLower(), w.GetUpper()).StoreUnsafe(ref MemoryMarshal.GetReference(packed));
        }
        else
        {
            bytes.StoreUnsafe(ref MemoryMarshal.GetReference(codes));
            BlockPacking.Pack(codes, bits, packed);
        }
        return (byte)(x + 127);
    }
}
