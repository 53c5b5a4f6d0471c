using System.Runtime.CompilerServices;

namespace Nanoscale.Formats;

/// <summary>
/// LSB-first packing of w-bit codes (SPEC §8): code i occupies bits [i·w, (i+1)·w) of a little-endian bit stream,
/// so for w = 4 element 2j is the low nibble of byte j, and 32 six-bit codes fill 24 bytes.
/// </summary>
internal static class BlockPacking
{
    /// <summary>
    /// The block of <paramref name="padded"/>.Length elements starting at <paramref name="start"/> in a row: a slice
    /// of the row, or, for a short final block, the row's tail copied into <paramref name="padded"/> with zeros after
    /// it (SPEC §1: quantized as if padded with zeros; the padding is not part of the decoded tensor).
    /// </summary>
    public static ReadOnlySpan<float> BlockOf(ReadOnlySpan<float> row, int start, Span<float> padded)
    {
        if (start + padded.Length <= row.Length) return row.Slice(start, padded.Length);
        padded.Clear();
        row[start..].CopyTo(padded);
        return padded;
    }

    /// <summary>Bytes needed for <paramref name="count"/> codes of <paramref name="bits"/> bits.</summary>
    public static int PackedBytes(int count, int bits) => (count * bits + 7) / 8;

    /// <summary>Packs codes (each &lt; 2^bits) into <paramref name="destination"/> (exactly PackedBytes bytes are written).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Pack(ReadOnlySpan<byte> codes, int bits, Span<byte> destination)
    {
        int byteCount = PackedBytes(codes.Length, bits);
        if (destination.Length < byteCount)
            throw new ArgumentException($"need {byteCount} bytes for {codes.Length} {bits}-bit codes, got {destination.Length}", nameof(destination));
        if (bits == 8)
        {
            codes.CopyTo(destination);
            return;
        }
        if (bits == 4)
        {
            int j = 0;
            for (; j < codes.Length / 2; j++)
                destination[j] = (byte)(codes[2 * j] | codes[2 * j + 1] << 4);
            if ((codes.Length & 1) != 0)
                destination[j] = codes[^1];
            return;
        }
        ulong acc = 0;
        int accBits = 0, o = 0;
        foreach (byte code in codes)
        {
            acc |= (ulong)code << accBits;
            accBits += bits;
            while (accBits >= 8)
            {
                destination[o++] = (byte)acc;
                acc >>= 8;
                accBits -= 8;
            }
        }
        if (accBits > 0)
            destination[o] = (byte)acc;
    }

    /// <summary>Unpacks <c>codes.Length</c> codes of <paramref name="bits"/> bits from <paramref name="packed"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Unpack(ReadOnlySpan<byte> packed, int bits, Span<byte> codes)
    {
        int byteCount = PackedBytes(codes.Length, bits);
        if (packed.Length < byteCount)
            throw new ArgumentException($"need {byteCount} bytes for {codes.Length} {bits}-bit codes, got {packed.Length}", nameof(packed));
        if (bits == 8)
        {
            packed[..codes.Length].CopyTo(codes);
            return;
        }
        uint mask = (1u << bits) - 1;
        ulong acc = 0;
        int accBits = 0, p = 0;
        for (int i = 0; i < codes.Length; i++)
        {
            if (accBits < bits)
            {
                acc |= (ulong)packed[p++] << accBits;
                accBits += 8;
            }
            codes[i] = (byte)(acc & mask);
            acc >>= bits;
            accBits -= bits;
        }
    }
}
