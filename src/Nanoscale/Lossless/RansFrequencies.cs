using System.Runtime.Intrinsics;
using System.Runtime.InteropServices;

namespace Nanoscale.Lossless;

/// <summary>
/// One precomputed encoder entry per symbol (ryg_rans <c>RansEncSymbol</c>, widened to a 64-bit reciprocal).
/// <para>
/// The encoder needs q = floor(x / f) for x &lt; 2^32 and f ≤ 2^12. With <c>Rcp = ceil(2^64 / f)</c>,
/// x·Rcp / 2^64 = x/f + x·e/2^64 where 0 ≤ e &lt; 1, so the error is below 2^32/2^64 = 2^−32, while the
/// fractional part of x/f is at most 1 − 1/f ≤ 1 − 2^−12: adding the error never crosses an integer, and
/// the high half of the 128-bit product is exactly floor(x/f). For f = 1 the reciprocal 2^64 does not fit;
/// ryg's trick uses Rcp = 2^64 − 1 (giving q = x − 1) and folds the missing +(M − 1)·1 into Bias.
/// The state update is then x' = x + Bias + q·(M − f) = q·M + (x − q·f) + start, see <see cref="Rans"/>.
/// </para>
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct RansEncSymbol
{
    public ulong Rcp;
    public uint Bias;
    public uint CmplFreq;
    public uint Freq;
    private readonly uint _pad;

    public static RansEncSymbol Create(uint start, uint freq)
    {
        const uint m = Rans.ProbScale;
        var sym = new RansEncSymbol { Freq = freq, CmplFreq = m - freq };
        if (freq == 1)
        {
            sym.Rcp = ulong.MaxValue;
            sym.Bias = start + m - 1;
        }
        else
        {
            sym.Rcp = ulong.MaxValue / freq + 1; // = ceil(2^64 / f) for f ≥ 2
            sym.Bias = start;
        }
        return sym;
    }
}

/// <summary>
/// Static frequency tables: normalisation of a byte histogram to <see cref="Rans.ProbScale"/>, the compact
/// stored form, and the encoder and decoder lookup tables built from it.
/// </summary>
internal static class RansFrequencies
{
    public const int SymbolCount = 256;
    private const int BitmapBytes = SymbolCount / 8;

    /// <summary>Largest stored table: the presence bitmap plus two bytes per symbol.</summary>
    public const int MaxTableBytes = BitmapBytes + 2 * SymbolCount;

    /// <summary>
    /// Scales <paramref name="counts"/> (sum n &gt; 0) to frequencies summing to exactly M = 2^12, every present
    /// symbol keeping at least 1. Rounding first, then moving single units where they cost the fewest bits:
    /// the code length of a symbol changes by about c·(1/(f ± ½))/ln 2 when its frequency moves by one.
    /// Deterministic (ties go to the lower symbol), so encoders on any thread agree byte for byte.
    /// </summary>
    public static void Normalize(ReadOnlySpan<uint> counts, Span<uint> freqs)
    {
        const uint m = Rans.ProbScale;
        ulong total = 0;
        for (int s = 0; s < SymbolCount; s++) total += counts[s];
        if (total == 0) throw new ArgumentException("cannot normalise an empty histogram", nameof(counts));

        long sum = 0;
        for (int s = 0; s < SymbolCount; s++)
        {
            uint c = counts[s];
            uint f = 0;
            if (c != 0)
            {
                f = (uint)((c * (ulong)m + total / 2) / total);
                if (f == 0) f = 1;
            }
            freqs[s] = f;
            sum += f;
        }

        while (sum < m)
        {
            int best = -1;
            double bestGain = -1;
            for (int s = 0; s < SymbolCount; s++)
            {
                if (freqs[s] == 0) continue;
                double gain = counts[s] / (freqs[s] + 0.5);
                if (gain > bestGain) { bestGain = gain; best = s; }
            }
            freqs[best]++;
            sum++;
        }
        while (sum > m)
        {
            int best = -1;
            double bestCost = double.MaxValue;
            for (int s = 0; s < SymbolCount; s++)
            {
                if (freqs[s] <= 1) continue;
                double cost = counts[s] / (freqs[s] - 0.5);
                if (cost < bestCost) { bestCost = cost; best = s; }
            }
            freqs[best]--;
            sum--;
        }
    }

    /// <summary>Bytes that <see cref="Write"/> will produce for <paramref name="freqs"/>.</summary>
    public static int StoredSize(ReadOnlySpan<uint> freqs)
    {
        int size = BitmapBytes;
        for (int s = 0; s < SymbolCount; s++)
            if (freqs[s] != 0) size += freqs[s] - 1 < 128 ? 1 : 2;
        return size;
    }

    /// <summary>
    /// Stored form (docs/lossless.md): a 32-byte presence bitmap (symbol s is bit s % 8 of byte s / 8), then for
    /// each present symbol in ascending order v = freq − 1 (0…4095) as one byte if v &lt; 128, else as two bytes
    /// <c>0x80 | (v &amp; 0x7F)</c>, <c>v &gt;&gt; 7</c>.
    /// </summary>
    public static int Write(ReadOnlySpan<uint> freqs, Span<byte> destination)
    {
        var bitmap = destination[..BitmapBytes];
        bitmap.Clear();
        int pos = BitmapBytes;
        for (int s = 0; s < SymbolCount; s++)
        {
            uint f = freqs[s];
            if (f == 0) continue;
            bitmap[s >> 3] |= (byte)(1 << (s & 7));
            uint v = f - 1;
            if (v < 128) destination[pos++] = (byte)v;
            else
            {
                destination[pos++] = (byte)(0x80 | (v & 0x7F));
                destination[pos++] = (byte)(v >> 7);
            }
        }
        return pos;
    }

    /// <summary>
    /// Reads a stored table, checking every byte: returns the bytes consumed, or −1 with
    /// <paramref name="problem"/> set when the table is truncated, malformed, or does not sum to M.
    /// </summary>
    public static int TryRead(ReadOnlySpan<byte> source, Span<uint> freqs, out string? problem)
    {
        freqs[..SymbolCount].Clear();
        if (source.Length < BitmapBytes) { problem = "frequency table truncated in its bitmap"; return -1; }
        int pos = BitmapBytes;
        uint sum = 0;
        for (int s = 0; s < SymbolCount; s++)
        {
            if ((source[s >> 3] & (1 << (s & 7))) == 0) continue;
            if (pos >= source.Length) { problem = "frequency table truncated"; return -1; }
            uint v = source[pos++];
            if (v >= 0x80)
            {
                if (pos >= source.Length) { problem = "frequency table truncated"; return -1; }
                uint hi = source[pos++];
                if (hi > 31 || hi == 0) { problem = $"frequency of symbol {s} is not a canonical 12-bit value"; return -1; }
                v = (v & 0x7F) | (hi << 7);
            }
            freqs[s] = v + 1;
            sum += v + 1;
        }
        if (sum != Rans.ProbScale) { problem = $"frequencies sum to {sum}, expected {Rans.ProbScale}"; return -1; }
        problem = null;
        return pos;
    }

    public static void BuildEncodeTable(ReadOnlySpan<uint> freqs, Span<RansEncSymbol> table)
    {
        uint start = 0;
        for (int s = 0; s < SymbolCount; s++)
        {
            uint f = freqs[s];
            table[s] = f == 0 ? default : RansEncSymbol.Create(start, f);
            start += f;
        }
    }

    /// <summary>Fills the slot tables of <paramref name="table"/> that streams of <paramref name="states"/> interleaved
    /// states decode with (narrow: <see cref="RansDecodeTable.Slots"/> and <see cref="RansDecodeTable.Symbols"/>; wide:
    /// <see cref="RansDecodeTable.Packed"/>); <paramref name="freqs"/> must sum to M (as <see cref="TryRead"/> guarantees).</summary>
    public static unsafe void BuildDecodeTable(ReadOnlySpan<uint> freqs, RansDecodeTable table, int states)
    {
        uint start = 0;
        if (states == Rans.NarrowStates)
        {
            var slots = table.Slots;
            var symbols = table.Symbols;
            for (int s = 0; s < SymbolCount; s++)
            {
                uint f = freqs[s];
                for (uint k = 0; k < f; k++)
                {
                    slots[(int)(start + k)] = f | (k << 16);
                    symbols[(int)(start + k)] = (byte)s;
                }
                start += f;
            }
            return;
        }
        // Wide: each symbol's run of entries differs only in slot − start (bits 20–31), eight at a time.
        var lanes = Vector256.Create(0u, 1, 2, 3, 4, 5, 6, 7) << 20;
        fixed (uint* packed = table.Packed)
        {
            for (int s = 0; s < SymbolCount; s++)
            {
                uint f = freqs[s];
                if (f == 0) continue;
                uint entry = (f - 1) | ((uint)s << Rans.ProbBits);
                uint k = 0;
                for (; k + 8 <= f; k += 8) (Vector256.Create(entry | (k << 20)) + lanes).Store(packed + start + k);
                for (; k < f; k++) packed[start + k] = entry | (k << 20);
                start += f;
            }
        }
    }
}

/// <summary>
/// Slot → symbol tables for decoding, in one array so the decoder needs one base register:
/// entries 0…4095 pack freq (bits 0–15) and slot − start (bits 16–31), which is all the state update needs, so the
/// critical path is load → multiply → add; bytes 16384…20479 (uints 4096…5119) hold the symbol of each slot, a load
/// off that path. 20 KiB in all: it stays in L1.
/// </summary>
internal sealed class RansDecodeTable
{
    public const int SymbolsOffsetBytes = 4 * (int)Rans.ProbScale;

    public readonly uint[] Table = new uint[Rans.ProbScale + Rans.ProbScale / 4];

    public Span<uint> Slots => Table.AsSpan(0, (int)Rans.ProbScale);

    public Span<byte> Symbols => System.Runtime.InteropServices.MemoryMarshal.AsBytes(Table.AsSpan((int)Rans.ProbScale));

    /// <summary>The vector decoder's entries, one gather each: freq − 1 (bits 0–11), the symbol (bits 12–19) and
    /// slot − start (bits 20–31), so the latter is one shift and the symbol byte one shift and truncation. Both freq − 1
    /// and slot − start fit twelve bits because 1 ≤ freq ≤ 4096 and slot − start &lt; freq.</summary>
    public readonly uint[] Packed = new uint[Rans.ProbScale];
}
