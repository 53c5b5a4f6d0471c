using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace Nanoscale.Lossless;

/// <summary>Why a rANS stream could not be decoded; <see cref="Rans.Decode"/> reports it with a byte offset.</summary>
internal enum RansStatus
{
    Ok,
    Truncated,
    BadInitialState,
    TrailingData,
    BadFinalState,
}

/// <summary>
/// rANS with a 32-bit state, 16-bit renormalisation and four interleaved states (after ryg_rans, whose
/// <c>rans_word</c> variant this follows; the decoder here checks the end of its input).
/// <para><b>Why 32/16.</b> With L = 2^16 and b = 2^16 every symbol causes at most one renormalisation step,
/// so encode and decode are a single branch-free conditional instead of ryg's byte-wise loop, and the stream is
/// read and written in aligned-enough 16-bit words. Probabilities have P = 12 bits: the 4096-entry slot table
/// (16 KiB of packed uint) stays in L1, and the coding loss against exact probabilities is ≈0.1%.</para>
/// <para><b>The state update.</b> Symbol s has frequency f and cumulative start c, with Σf = M = 2^P.
/// Encoding is C(s, x) = ⌊x / f⌋·M + (x mod f) + c. It is invertible: for x' = C(s, x), the slot
/// x' mod M = (x mod f) + c lies in [c, c + f), and these ranges partition [0, M), so the slot names s;
/// then ⌊x' / M⌋ = ⌊x / f⌋ (because (x mod f) + c &lt; M) and x = f·⌊x'/M⌋ + (slot − c). That is
/// <see cref="DecGet"/>: x = f·(x' &gt;&gt; P) + (x' &amp; (M − 1)) − c.</para>
/// <para><b>Renormalisation bounds.</b> Both sides keep x in I = [L, b·L) = [2^16, 2^32). For C(s, x) to land in I,
/// x must lie in I_s = [f·L/M, f·b·L/M) = [f·2^4, f·2^20). Before encoding s the encoder has x ∈ I. If
/// x ≥ f·2^20 (tested as (x &gt;&gt; 20) ≥ f, exact because f·2^20 is a multiple of 2^20, and never true for
/// f = M) it emits the low 16 bits: then x &gt;&gt; 16 ≥ f·2^4 and x &gt;&gt; 16 &lt; 2^16 ≤ f·2^20, so one word always
/// suffices. If x &lt; f·2^20 then x ≥ 2^16 ≥ f·2^4 already. The decoder mirrors this: after DecGet,
/// x ≥ f·⌊x'/M⌋ ≥ f·2^4 ≥ 16, and if x &lt; L one word read gives x ≥ 2^20 ≥ L. Because I_s is b-unique
/// (exactly one shift lands in it) the decoder reads exactly the words the encoder wrote, in reverse order.
/// Even on corrupt input a state that starts in I stays in I, so nothing here can overflow or loop.</para>
/// <para><b>Interleaving.</b> Symbol i uses state i mod 4. The encoder runs from the last symbol to the first,
/// writing words downwards; the decoder runs forwards reading upwards, so it meets each word exactly when the
/// matching state needs it. Stream: the four final encoder states (uint32 LE, state 0 first), then the words
/// (uint16 LE). A correct stream ends with every word consumed and all four states back at L, which the
/// decoder checks.</para>
/// </summary>
internal static unsafe class Rans
{
    public const int ProbBits = 12;
    public const uint ProbScale = 1u << ProbBits;
    public const uint StateLowerBound = 1u << 16;
    public const int StateCount = 4;
    public const int StateBytes = 4 * StateCount;

    /// <summary>Every symbol emits at most one 16-bit word.</summary>
    public static int MaxEncodedLength(int symbolCount) => StateBytes + 2 * symbolCount;

    /// <summary>Encodes one symbol into state <paramref name="x"/>, first emitting a word (downwards) if needed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint EncPut(uint x, ref ushort* ptr, in RansEncSymbol sym)
    {
        if ((x >> (32 - ProbBits)) >= sym.Freq)
        {
            *--ptr = (ushort)x;
            x >>= 16;
        }
        ulong q = Math.BigMul((ulong)x, sym.Rcp, out _);
        return x + sym.Bias + (uint)q * sym.CmplFreq;
    }

    /// <summary>
    /// <see cref="EncPut"/> without a branch (whether a word is emitted is data-dependent and mispredicts often):
    /// the word is always stored below <paramref name="ptr"/> and the pointer moves only when it counts. The store
    /// stays inside the buffer: after k of the n symbols at most k words were emitted, so ptr − 1 ≥ end − n words,
    /// which is still behind the state bytes; a store that does not count is overwritten or left outside the stream.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint EncPutBranchless(uint x, ref ushort* ptr, in RansEncSymbol sym)
    {
        uint emit = (x >> (32 - ProbBits)) >= sym.Freq ? 1u : 0u;
        ptr[-1] = (ushort)x;
        ptr -= emit;
        x >>= (int)(emit << 4);
        ulong q = Math.BigMul((ulong)x, sym.Rcp, out _);
        return x + sym.Bias + (uint)q * sym.CmplFreq;
    }

    /// <summary>Decodes one symbol from state <paramref name="x"/> (no renormalisation); mirror of <see cref="EncPut"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static byte DecGet(ref uint x, uint* table)
    {
        uint e = table[x & (ProbScale - 1)];
        x = (((e >> 8) & 0xFFF) + 1) * (x >> ProbBits) + (e >> 20);
        return (byte)e;
    }

    /// <summary>
    /// Encodes <paramref name="symbols"/> with <paramref name="table"/> (256 entries; every symbol that occurs must
    /// have a non-zero frequency) into <paramref name="destination"/>, which needs
    /// <see cref="MaxEncodedLength"/> bytes. Returns the encoded length; the stream starts at destination[0].
    /// </summary>
    public static int Encode(ReadOnlySpan<byte> symbols, ReadOnlySpan<RansEncSymbol> table, Span<byte> destination)
    {
        int n = symbols.Length;
        if (destination.Length < MaxEncodedLength(n)) throw new ArgumentException("destination too short", nameof(destination));
        if (table.Length < 256) throw new ArgumentException("need 256 entries", nameof(table));
        int written;
        fixed (byte* src = symbols)
        fixed (byte* dst = destination)
        fixed (RansEncSymbol* tbl = table)
        {
            ushort* end = (ushort*)(dst + MaxEncodedLength(n));
            ushort* ptr = end;
            uint x0 = StateLowerBound, x1 = StateLowerBound, x2 = StateLowerBound, x3 = StateLowerBound;
            int full = n & ~(StateCount - 1);

            // Tail first (the encoder runs backwards): symbols full..n−1 use states i mod 4.
            for (int i = n - 1; i >= full; i--)
            {
                switch (i & 3)
                {
                    case 0: x0 = EncPut(x0, ref ptr, in tbl[src[i]]); break;
                    case 1: x1 = EncPut(x1, ref ptr, in tbl[src[i]]); break;
                    case 2: x2 = EncPut(x2, ref ptr, in tbl[src[i]]); break;
                    default: x3 = EncPut(x3, ref ptr, in tbl[src[i]]); break;
                }
            }
            for (int i = full - 4; i >= 0; i -= 4)
            {
                x3 = EncPutBranchless(x3, ref ptr, in tbl[src[i + 3]]);
                x2 = EncPutBranchless(x2, ref ptr, in tbl[src[i + 2]]);
                x1 = EncPutBranchless(x1, ref ptr, in tbl[src[i + 1]]);
                x0 = EncPutBranchless(x0, ref ptr, in tbl[src[i]]);
            }

            int wordBytes = (int)((byte*)end - (byte*)ptr);
            written = StateBytes + wordBytes;
            // Words are at the end of the buffer; move them down behind the states.
            Buffer.MemoryCopy(ptr, dst + StateBytes, wordBytes, wordBytes);
            WriteState(dst, 0, x0);
            WriteState(dst, 1, x1);
            WriteState(dst, 2, x2);
            WriteState(dst, 3, x3);
        }
        return written;
    }

    private static void WriteState(byte* dst, int index, uint x) =>
        BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(dst + 4 * index, 4), x);

    /// <summary>
    /// Decodes exactly <c>symbols.Length</c> symbols from <paramref name="source"/> (all of which must be the
    /// stream) with the slot table <paramref name="decodeTable"/> (4096 entries). Every word read is checked
    /// against the end of the source: the fast loop checks once per group of four symbols that four words remain,
    /// the tail checks each read. On failure <paramref name="errorOffset"/> is the byte offset in source.
    /// </summary>
    public static RansStatus Decode(ReadOnlySpan<byte> source, ReadOnlySpan<uint> decodeTable, Span<byte> symbols, out int errorOffset)
    {
        if (decodeTable.Length < ProbScale) throw new ArgumentException("need 4096 entries", nameof(decodeTable));
        errorOffset = 0;
        if (source.Length < StateBytes || ((source.Length - StateBytes) & 1) != 0)
        {
            errorOffset = source.Length;
            return RansStatus.Truncated;
        }
        uint x0 = BinaryPrimitives.ReadUInt32LittleEndian(source);
        uint x1 = BinaryPrimitives.ReadUInt32LittleEndian(source[4..]);
        uint x2 = BinaryPrimitives.ReadUInt32LittleEndian(source[8..]);
        uint x3 = BinaryPrimitives.ReadUInt32LittleEndian(source[12..]);
        if (x0 < StateLowerBound || x1 < StateLowerBound || x2 < StateLowerBound || x3 < StateLowerBound)
            return RansStatus.BadInitialState;

        int n = symbols.Length;
        fixed (byte* srcBytes = source)
        fixed (uint* tbl = decodeTable)
        fixed (byte* dst = symbols)
        {
            ushort* p = (ushort*)(srcBytes + StateBytes);
            ushort* end = (ushort*)(srcBytes + source.Length);
            int full = n & ~(StateCount - 1);
            int i = 0;

            // Fast path: each state reads at most one word per symbol, so four words cover a group.
            // Branch-free renormalisation: need = 1 when x < L; x = (x << 16·need) | (word & −need).
            for (; i < full && end - p >= StateCount; i += 4)
            {
                dst[i] = DecGet(ref x0, tbl);
                dst[i + 1] = DecGet(ref x1, tbl);
                dst[i + 2] = DecGet(ref x2, tbl);
                dst[i + 3] = DecGet(ref x3, tbl);

                uint need = x0 < StateLowerBound ? 1u : 0u;
                x0 = (x0 << (int)(need << 4)) | (*p & (0u - need));
                p += need;
                need = x1 < StateLowerBound ? 1u : 0u;
                x1 = (x1 << (int)(need << 4)) | (*p & (0u - need));
                p += need;
                need = x2 < StateLowerBound ? 1u : 0u;
                x2 = (x2 << (int)(need << 4)) | (*p & (0u - need));
                p += need;
                need = x3 < StateLowerBound ? 1u : 0u;
                x3 = (x3 << (int)(need << 4)) | (*p & (0u - need));
                p += need;
            }

            // Checked path: the last groups and the tail, every read tested against the end.
            for (; i < n; i++)
            {
                switch (i & 3)
                {
                    case 0: dst[i] = DecGet(ref x0, tbl); if (!Renorm(ref x0, ref p, end)) goto truncated; break;
                    case 1: dst[i] = DecGet(ref x1, tbl); if (!Renorm(ref x1, ref p, end)) goto truncated; break;
                    case 2: dst[i] = DecGet(ref x2, tbl); if (!Renorm(ref x2, ref p, end)) goto truncated; break;
                    default: dst[i] = DecGet(ref x3, tbl); if (!Renorm(ref x3, ref p, end)) goto truncated; break;
                }
            }

            if (p != end)
            {
                errorOffset = (int)((byte*)p - srcBytes);
                return RansStatus.TrailingData;
            }
            if (x0 != StateLowerBound || x1 != StateLowerBound || x2 != StateLowerBound || x3 != StateLowerBound)
            {
                errorOffset = source.Length;
                return RansStatus.BadFinalState;
            }
            return RansStatus.Ok;

        truncated:
            errorOffset = source.Length;
            return RansStatus.Truncated;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Renorm(ref uint x, ref ushort* p, ushort* end)
    {
        if (x >= StateLowerBound) return true;
        if (p >= end) return false;
        x = (x << 16) | *p++;
        return true;
    }
}
