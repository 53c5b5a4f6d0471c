using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Nanoscale.Formats.Nv;

/// <summary>Fast NVFP4 kernels over a range of rows (scalar bit encoder or 8-lane <see cref="ElementEncoder256"/>);
/// byte-identical to <see cref="NvFp4Reference"/>.</summary>
internal static class NvFp4Kernel
{
    private const int B = NvFp4Codec.NvBlockSize;

    public static void QuantizeRows(NvFp4Codec codec, ReadOnlySpan<float> source, int rowCount, int cols, float st,
        NonFinitePolicy policy, long firstElementIndex, bool vector, Span<byte> blocks, Span<byte> scales)
    {
        int nb = codec.BlocksPerRow(cols);
        Span<float> padded = stackalloc float[B];
        Span<byte> codes = stackalloc byte[B];
        var encoder = vector ? new ElementEncoder256(ElementFormat.E2M1, codec.Rounding) : default;
        ElementFormat e2m1 = ElementFormat.E2M1;
        for (int r = 0; r < rowCount; r++)
        {
            ReadOnlySpan<float> row = source.Slice(r * cols, cols);
            for (int j = 0; j < nb; j++)
            {
                int start = j * B;
                ReadOnlySpan<float> block = BlockPacking.BlockOf(row, start, padded);
                Span<byte> packed = blocks.Slice((r * nb + j) * 8, 8);

                uint amaxBits = 0;
                foreach (float v in block)
                    amaxBits = Math.Max(amaxBits, BitConverter.SingleToUInt32Bits(v) & 0x7FFF_FFFFu);
                if (amaxBits >= 0x7F80_0000u)
                {
                    if (policy == NonFinitePolicy.Throw)
                        for (int i = 0; i < B; i++)
                            if (!float.IsFinite(block[i]))
                                throw new NonFiniteValueException(firstElementIndex + (long)r * cols + start + i, block[i]);
                    packed.Clear();
                    scales[r * nb + j] = (byte)ScaleFormat.UE4M3.NaNCode;
                    continue;
                }
                if (amaxBits == 0)
                {
                    packed.Clear();
                    scales[r * nb + j] = NvFp4Codec.ZeroBlockScaleCode;
                    continue;
                }
                float amax = BitConverter.UInt32BitsToSingle(amaxBits);
                float t = st > 0 ? amax / (6f * st) : 0f;
                // UE4M3 is the non-negative half of E4M3, so the exact E4M3 encoder casts t (saturating at 448).
                int scaleCode = Math.Max(1, ElementFormat.E4M3.Encode(t));
                scales[r * nb + j] = (byte)scaleCode;
                float scale = ScaleFormat.UE4M3.Decode(scaleCode) * st;
                if (!(scale > 0))
                {
                    packed.Clear();
                    continue;
                }
                if (vector)
                {
                    ref float p = ref MemoryMarshal.GetReference(block);
                    Vector256<float> s = Vector256.Create(scale);
                    Vector256<ushort> c = Vector256.Narrow(
                        encoder.Encode(Vector256.LoadUnsafe(ref p) / s).AsUInt32(),
                        encoder.Encode(Vector256.LoadUnsafe(ref p, 8) / s).AsUInt32());
                    Vector128<ushort> u = Vector128.Narrow(c.GetLower(), c.GetUpper()).AsUInt16();
                    Vector128<ushort> w = u | Vector128.ShiftRightLogical(u, 4); // low byte = lo | hi << 4
                    MemoryMarshal.Write(packed, Vector128.Narrow(w, w).AsUInt64().ToScalar());
                }
                else
                {
                    for (int i = 0; i < B; i++)
                        codes[i] = (byte)e2m1.Encode(block[i] / scale, codec.Rounding);
                    BlockPacking.Pack(codes, 4, packed);
                }
            }
        }
    }

    public static void DequantizeRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols,
        float st, bool vector, Span<float> destination)
    {
        int nb = (cols + B - 1) / B;
        ReadOnlySpan<float> table = ElementFormat.E2M1.DecodeTable;
        ReadOnlySpan<float> scaleTable = ScaleFormat.UE4M3.DecodeTable;
        var (tableLow, tableHigh) = vector ? Packed4Vector.Load4BitTable(table) : default;
        Span<float> values = stackalloc float[B];
        for (int r = 0; r < rowCount; r++)
        {
            Span<float> row = destination.Slice(r * cols, cols);
            for (int j = 0; j < nb; j++)
            {
                float scale = scaleTable[scales[r * nb + j]] * st;
                ReadOnlySpan<byte> packed = blocks.Slice((r * nb + j) * 8, 8);
                int start = j * B, count = Math.Min(B, cols - start);
                Span<float> target = count == B ? row.Slice(start, B) : values;
                if (vector)
                    Packed4Vector.Dequantize16(tableLow, tableHigh, packed, scale, target);
                else
                    for (int i = 0; i < B / 2; i++)
                    {
                        target[2 * i] = table[packed[i] & 0xF] * scale;
                        target[2 * i + 1] = table[packed[i] >> 4] * scale;
                    }
                if (count != B)
                    values[..count].CopyTo(row[start..]);
            }
        }
    }
}
