using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Lossless;

/// <summary>Why a rANS stream could not be decoded; <see cref="Rans.Decode(ReadOnlySpan{byte}, RansDecodeTable, Span{byte}, int, out int)"/> reports it with a byte offset.</summary>
internal enum RansStatus
{
    Ok,
    Truncated,
    BadInitialState,
    TrailingData,
    BadFinalState,
}

/// <summary>
/// rANS with a 32-bit state, 16-bit renormalisation and 8 or 32 interleaved states (after ryg_rans, whose
/// <c>rans_word</c> variant this follows; the decoder here checks the end of its input).
/// <para><b>Why 32/16.</b> With L = 2^16 and b = 2^16 every symbol causes at most one renormalisation step,
/// so encode and decode are a single branch-free conditional instead of ryg's byte-wise loop, and the stream is
/// read and written in 16-bit words. Probabilities have P = 12 bits: the 4096-slot decode tables (16 KiB of
/// packed freq/offset + 4 KiB of symbols) stay in L1, and the coding loss against exact probabilities is ≈0.1%
/// (measured: coded/bound 1.0012 on bf16 exponents, tables included).</para>
/// <para><b>The state update.</b> Symbol s has frequency f and cumulative start c, with Σf = M = 2^P.
/// Encoding is C(s, x) = ⌊x / f⌋·M + (x mod f) + c. It is invertible: for x' = C(s, x), the slot
/// x' mod M = (x mod f) + c lies in [c, c + f), and these ranges partition [0, M), so the slot names s;
/// then ⌊x' / M⌋ = ⌊x / f⌋ (because (x mod f) + c &lt; M) and x = f·⌊x'/M⌋ + (slot − c). That is
/// <see cref="DecGet"/>: x = f·(x' &gt;&gt; P) + (x' &amp; (M − 1)) − c, with slot − c precomputed per slot.</para>
/// <para><b>Renormalisation bounds.</b> Both sides keep x in I = [L, b·L) = [2^16, 2^32). For C(s, x) to land in I,
/// x must lie in I_s = [f·L/M, f·b·L/M) = [f·2^4, f·2^20). Before encoding s the encoder has x ∈ I. If
/// x ≥ f·2^20 (tested as (x &gt;&gt; 20) ≥ f, exact because f·2^20 is a multiple of 2^20, and never true for
/// f = M) it emits the low 16 bits: then x &gt;&gt; 16 ≥ f·2^4 and x &gt;&gt; 16 &lt; 2^16 ≤ f·2^20, so one word always
/// suffices. If x &lt; f·2^20 then x ≥ 2^16 ≥ f·2^4 already. The decoder mirrors this: after DecGet,
/// x ≥ f·⌊x'/M⌋ ≥ f·2^4 ≥ 16, and if x &lt; L one word read gives x ≥ 2^20 ≥ L. Because I_s is b-unique
/// (exactly one shift lands in it) the decoder reads exactly the words the encoder wrote, in reverse order.
/// Even on corrupt input a state that starts in I stays in I, so nothing here can overflow or loop.</para>
/// <para><b>Interleaving.</b> With S states symbol i uses state i mod S: S = 8 independent dependency chains hide the
/// latency of the scalar table load and multiply (measured 4 vs 8 in docs/lossless.md); S = 32 gives the vector
/// decoder four chains of eight lanes (<see cref="DecodeGroupsWide{TLanes}"/>; why 32 in docs/lossless.md). The encoder runs
/// from the last symbol to the first, writing words downwards; the decoder runs forwards reading upwards, so it meets
/// each word exactly when the matching state needs it. Stream: the S final encoder states (uint32 LE, state 0 first),
/// then the words (uint16 LE). A correct stream ends with every word consumed and every state back at L, which the
/// decoder checks.</para>
/// </summary>
internal static unsafe class Rans
{
    public const int ProbBits = 12;
    public const uint ProbScale = 1u << ProbBits;
    public const uint StateLowerBound = 1u << 16;

    /// <summary>Interleaved states of the streams written before 2026-12-04 (still read).</summary>
    public const int NarrowStates = 8;

    /// <summary>Interleaved states of the streams of large chunks written since 2026-12-04 (see
    /// <see cref="LosslessCodec.WideStreamMinElements"/>): four vectors of eight, so the vector decoder has four
    /// independent dependency chains (see <see cref="DecodeGroupsWide{TLanes}"/>).</summary>
    public const int WideStates = 32;

    /// <summary>Whether a stream may have <paramref name="states"/> interleaved states.</summary>
    public static bool IsStateCount(int states) => states is NarrowStates or WideStates;

    /// <summary>Bytes of the final states at the start of a stream.</summary>
    public static int StateBytes(int states) => 4 * states;

    /// <summary>Every symbol emits at most one 16-bit word.</summary>
    public static int MaxEncodedLength(int symbolCount, int states = WideStates) => StateBytes(states) + 2 * symbolCount;

    /// <summary>Whether this machine runs a vector decoder of wide streams (AVX2 gathers; the words expanded into the
    /// lanes that need them by AVX-512 VBMI2's <c>vpexpandw</c>, or with AVX2 alone by a permutation looked up from the
    /// lanes' mask); elsewhere the scalar loop decodes them, to the same bytes.</summary>
    public static bool VectorDecoding => Avx2.IsSupported;

    /// <summary>The loops of wide streams (tests run every one this machine has and compare them).</summary>
    internal enum WideLoop { Scalar, Avx2, Avx512 }

    /// <summary>Whether this machine runs <paramref name="loop"/>.</summary>
    internal static bool Runs(WideLoop loop) => loop switch
    {
        WideLoop.Avx512 => Avx2.IsSupported && Avx512F.VL.IsSupported && Avx512Vbmi2.VL.IsSupported,
        WideLoop.Avx2 => Avx2.IsSupported,
        _ => true,
    };

    /// <summary>The fastest loop here.</summary>
    private static WideLoop Fastest => Runs(WideLoop.Avx512) ? WideLoop.Avx512 : Runs(WideLoop.Avx2) ? WideLoop.Avx2 : WideLoop.Scalar;

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

    /// <summary>
    /// Decodes one symbol from state <paramref name="x"/> (no renormalisation); mirror of <see cref="EncPut"/>.
    /// <paramref name="table"/> is <see cref="RansDecodeTable.Table"/>: packed slots, then the symbol bytes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void DecGet(ref uint x, byte* table, byte* symbol)
    {
        // Native-width slot so both loads are single addressing modes; the symbol is stored first so the slot
        // register is free again before the multiply (eight states leave the JIT few temporaries).
        nuint slot = x & (ProbScale - 1);
        *symbol = table[RansDecodeTable.SymbolsOffsetBytes + slot];
        uint e = *(uint*)(table + 4 * slot);
        x = (e & 0xFFFF) * (x >> ProbBits) + (e >> 16);
    }

    /// <summary><see cref="DecGet"/> with the wide streams' packed entry (<see cref="RansDecodeTable.Packed"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void DecGetPacked(ref uint x, uint* packed, byte* symbol)
    {
        uint e = packed[x & (ProbScale - 1)];
        *symbol = (byte)(e >> ProbBits);
        uint q = x >> ProbBits;
        x = (e & (ProbScale - 1)) * q + q + (e >> 20);
    }

    /// <summary>
    /// Encodes <paramref name="symbols"/> with <paramref name="table"/> (256 entries; every symbol that occurs must
    /// have a non-zero frequency) and <paramref name="states"/> interleaved states (<see cref="IsStateCount"/>) into
    /// <paramref name="destination"/>, which needs <see cref="MaxEncodedLength"/> bytes. Returns the encoded length;
    /// the stream starts at destination[0].
    /// </summary>
    public static int Encode(ReadOnlySpan<byte> symbols, ReadOnlySpan<RansEncSymbol> table, Span<byte> destination, int states = WideStates)
    {
        if (!IsStateCount(states)) throw new ArgumentOutOfRangeException(nameof(states), states, $"must be {NarrowStates} or {WideStates}");
        int n = symbols.Length;
        if (destination.Length < MaxEncodedLength(n, states)) throw new ArgumentException("destination too short", nameof(destination));
        if (table.Length < 256) throw new ArgumentException("need 256 entries", nameof(table));
        int written, mask = states - 1;
        fixed (byte* src = symbols)
        fixed (byte* dst = destination)
        fixed (RansEncSymbol* tbl = table)
        {
            ushort* end = (ushort*)(dst + MaxEncodedLength(n, states));
            ushort* ptr = end;
            int full = n & ~mask;

            // Tail first (the encoder runs backwards): symbols full..n−1 use states i mod states.
            uint* st = stackalloc uint[states];
            for (int k = 0; k < states; k++) st[k] = StateLowerBound;
            for (int i = n - 1; i >= full; i--) st[i & mask] = EncPut(st[i & mask], ref ptr, in tbl[src[i]]);
            // Whole groups, eight states at a time from the last, so each bank's states sit in registers for its eight symbols.
            for (int i = full - states; i >= 0; i -= states)
                for (int b = states - 8; b >= 0; b -= 8) EncodeBank(st + b, src + i + b, tbl, ref ptr);

            int wordBytes = (int)((byte*)end - (byte*)ptr);
            int stateBytes = StateBytes(states);
            written = stateBytes + wordBytes;
            // Words are at the end of the buffer; move them down behind the states.
            Buffer.MemoryCopy(ptr, dst + stateBytes, wordBytes, wordBytes);
            for (int k = 0; k < states; k++)
                BinaryPrimitives.WriteUInt32LittleEndian(new Span<byte>(dst + 4 * k, 4), st[k]);
        }
        return written;
    }

    /// <summary>Symbols <paramref name="src"/>[7…0] into states <paramref name="st"/>[7…0] (a narrow group, or one bank of a wide one).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void EncodeBank(uint* st, byte* src, RansEncSymbol* tbl, ref ushort* ptr)
    {
        st[7] = EncPutBranchless(st[7], ref ptr, in tbl[src[7]]);
        st[6] = EncPutBranchless(st[6], ref ptr, in tbl[src[6]]);
        st[5] = EncPutBranchless(st[5], ref ptr, in tbl[src[5]]);
        st[4] = EncPutBranchless(st[4], ref ptr, in tbl[src[4]]);
        st[3] = EncPutBranchless(st[3], ref ptr, in tbl[src[3]]);
        st[2] = EncPutBranchless(st[2], ref ptr, in tbl[src[2]]);
        st[1] = EncPutBranchless(st[1], ref ptr, in tbl[src[1]]);
        st[0] = EncPutBranchless(st[0], ref ptr, in tbl[src[0]]);
    }

    /// <summary>
    /// Decodes exactly <c>symbols.Length</c> symbols from <paramref name="source"/> (all of which must be the
    /// stream, with <paramref name="states"/> interleaved states) with the slot tables <paramref name="decodeTable"/>.
    /// Every word read is checked against the end of the source: the fast loops check once per group of
    /// <paramref name="states"/> symbols that as many words remain, the tail checks each read. On failure
    /// <paramref name="errorOffset"/> is the byte offset in source.
    /// </summary>
    public static RansStatus Decode(ReadOnlySpan<byte> source, RansDecodeTable decodeTable, Span<byte> symbols, int states, out int errorOffset) =>
        Decode(source, decodeTable, symbols, states, Fastest, out errorOffset);

    /// <summary>As <see cref="Decode(ReadOnlySpan{byte}, RansDecodeTable, Span{byte}, int, out int)"/>, choosing the
    /// loop of wide streams (<see cref="Runs"/> must allow it), so tests can compare them.</summary>
    internal static RansStatus Decode(ReadOnlySpan<byte> source, RansDecodeTable decodeTable, Span<byte> symbols, int states, WideLoop loop, out int errorOffset)
    {
        if (!Runs(loop)) throw new PlatformNotSupportedException($"this machine cannot run the {loop} loop of the rANS decoder");
        if (!IsStateCount(states)) throw new ArgumentOutOfRangeException(nameof(states), states, $"must be {NarrowStates} or {WideStates}");
        errorOffset = 0;
        int stateBytes = StateBytes(states), mask = states - 1;
        if (source.Length < stateBytes || ((source.Length - stateBytes) & 1) != 0)
        {
            errorOffset = source.Length;
            return RansStatus.Truncated;
        }
        uint* st = stackalloc uint[states];
        for (int k = 0; k < states; k++)
        {
            st[k] = BinaryPrimitives.ReadUInt32LittleEndian(source[(4 * k)..]);
            if (st[k] < StateLowerBound)
            {
                errorOffset = 4 * k;
                return RansStatus.BadInitialState;
            }
        }

        int n = symbols.Length;
        fixed (byte* srcBytes = source)
        fixed (uint* tableWords = decodeTable.Table)
        fixed (uint* packed = decodeTable.Packed)
        fixed (byte* dst = symbols)
        {
            byte* tbl = (byte*)tableWords;
            ushort* p = (ushort*)(srcBytes + stateBytes);
            ushort* end = (ushort*)(srcBytes + source.Length);
            int full = n & ~mask;
            int i = states == NarrowStates ? DecodeGroups(st, tbl, dst, full, ref p, end)
                : loop == WideLoop.Avx512 ? DecodeGroupsWide<ExpandWords>(st, packed, dst, full, ref p, end)
                : loop == WideLoop.Avx2 ? DecodeGroupsWide<PermuteWords>(st, packed, dst, full, ref p, end)
                : DecodeGroupsScalar(st, states, packed, dst, full, ref p, end);

            // Checked path: the last groups and the tail, every read tested against the end.
            for (; i < n; i++)
            {
                if (states == NarrowStates) DecGet(ref st[i & mask], tbl, dst + i);
                else DecGetPacked(ref st[i & mask], packed, dst + i);
                if (!Renorm(ref st[i & mask], ref p, end))
                {
                    errorOffset = source.Length;
                    return RansStatus.Truncated;
                }
            }

            if (p != end)
            {
                errorOffset = (int)((byte*)p - srcBytes);
                return RansStatus.TrailingData;
            }
            for (int k = 0; k < states; k++)
            {
                if (st[k] != StateLowerBound)
                {
                    errorOffset = source.Length;
                    return RansStatus.BadFinalState;
                }
            }
            return RansStatus.Ok;
        }
    }

    /// <summary>
    /// Wide streams on the vector units: the 32 states are four vectors of eight (states 0–7, 8–15, …), each a
    /// dependency chain of its own, so the gather and multiply latencies of one overlap the others'. Per vector and
    /// group: the slot's packed entry (<see cref="RansDecodeTable.Packed"/>: freq − 1, slot − start, symbol) by one
    /// gather, x = freq·(x ≫ 12) + (slot − start), the eight symbol bytes stored at once, then renormalisation: the
    /// lanes below L take the next words of the stream in lane order — exactly the order the scalar decoder reads
    /// them — by one word expansion (VPEXPANDW) of the eight words at the read pointer, which then moves by the
    /// number of lanes that took one. The same bytes as <see cref="DecodeGroupsScalar"/> (tests check both); whole
    /// groups while at least 32 words remain (each lane reads at most one word a group, and each vector loads eight
    /// words at most 24 past the pointer).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int DecodeGroupsWide<TLanes>(uint* st, uint* packed, byte* dst, int fullSymbols, ref ushort* pRef, ushort* end)
        where TLanes : struct, ILanes
    {
        ushort* p = pRef;
        ushort* last = end - WideStates;
        byte* o = dst, oEnd = dst + fullSymbols;
        var x0 = Vector256.Load(st);
        var x1 = Vector256.Load(st + 8);
        var x2 = Vector256.Load(st + 16);
        var x3 = Vector256.Load(st + 24);
        while (o < oEnd && p <= last)
        {
            x0 = TLanes.Decode(x0, packed, o, ref p);
            x1 = TLanes.Decode(x1, packed, o + 8, ref p);
            x2 = TLanes.Decode(x2, packed, o + 16, ref p);
            x3 = TLanes.Decode(x3, packed, o + 24, ref p);
            o += WideStates;
        }
        x0.Store(st);
        x1.Store(st + 8);
        x2.Store(st + 16);
        x3.Store(st + 24);
        pRef = p;
        return (int)(o - dst);
    }

    /// <summary>One symbol for each of eight states and their renormalisation (see <see cref="DecodeGroupsWide{TLanes}"/>).</summary>
    private interface ILanes
    {
        static abstract Vector256<uint> Decode(Vector256<uint> x, uint* packed, byte* o, ref ushort* p);
    }

    /// <summary>Eight states' step before renormalisation: each slot's packed entry by one gather (returned: its bits
    /// 12–19 are the symbol), x = freq·(x ≫ 12) + (slot − start).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<uint> Advance(ref Vector256<uint> x, uint* packed)
    {
        var low = Vector256.Create(ProbScale - 1);
        var e = Avx2.GatherVector256(packed, (x & low).AsInt32(), 4);
        var q = x >> ProbBits;
        x = (e & low) * q + (q + (e >> 20));
        return e;
    }

    /// <summary>AVX-512: the symbols narrowed by <c>vpmovdb</c>, the words expanded by <c>vpexpandw</c>'s dword form.</summary>
    private readonly struct ExpandWords : ILanes
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<uint> Decode(Vector256<uint> x, uint* packed, byte* o, ref ushort* p)
        {
            var e = Advance(ref x, packed);
            *(ulong*)o = Avx512F.VL.ConvertToVector128Byte(e >> ProbBits).AsUInt64().ToScalar();
            var need = Vector256.LessThan(x, Vector256.Create(StateLowerBound));
            var words = Avx512F.VL.Expand(Vector256<uint>.Zero, need, Avx2.ConvertToVector256Int32(p).AsUInt32());
            x = Avx512F.VL.BlendVariable(x, (x << 16) | words, need);
            p += BitOperations.PopCount(need.ExtractMostSignificantBits());
            return x;
        }
    }

    /// <summary>AVX2 alone: the symbol bytes gathered by <c>vpshufb</c> and <c>vpermd</c>; the words moved into the
    /// lanes that need them by a <c>vpermd</c> whose indexes are looked up from the lanes' 8-bit mask (lane i takes
    /// word number "lanes below i that need one"; <see cref="ExpandIndexes"/>), as ryg's SIMD rANS does.</summary>
    private readonly struct PermuteWords : ILanes
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<uint> Decode(Vector256<uint> x, uint* packed, byte* o, ref ushort* p)
        {
            var e = Advance(ref x, packed);
            // Each lane's symbol (bits 12–19 of its entry) to the low dword of its 128-bit half, then both halves together.
            var bytes = Avx2.Shuffle((e >> ProbBits).AsByte(), SymbolBytes);
            *(ulong*)o = Avx2.PermuteVar8x32(bytes.AsInt32(), Vector256.Create(0, 4, 0, 4, 0, 4, 0, 4)).AsUInt64().ToScalar();
            var need = Vector256.Equals(x >> 16, Vector256<uint>.Zero);
            int mask = (int)need.ExtractMostSignificantBits();
            var words = Avx2.PermuteVar8x32(Avx2.ConvertToVector256Int32(p), Vector256.Load(ExpandIndexes + 8 * mask)).AsUInt32();
            x = Vector256.ConditionalSelect(need, (x << 16) | words, x);
            p += BitOperations.PopCount((uint)mask);
            return x;
        }
    }

    /// <summary>Bytes 0, 4, 8 and 12 of each 128-bit half to its first four (the others zero).</summary>
    private static readonly Vector256<byte> SymbolBytes = Vector256.Create(
        Vector128.Create((byte)0, 4, 8, 12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80),
        Vector128.Create((byte)0, 4, 8, 12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80));

    /// <summary>For each 8-bit mask of lanes, eight <c>vpermd</c> indexes: lane i (in the mask) takes word number
    /// popcount(mask &amp; ((1 &lt;&lt; i) − 1)); lanes outside the mask take word 0 (and are not used). Pinned, 8 KB.</summary>
    private static readonly int* ExpandIndexes = BuildExpandIndexes();

    private static int* BuildExpandIndexes()
    {
        var indexes = (int*)NativeMemory.AlignedAlloc(256 * 8 * sizeof(int), 32);
        for (int mask = 0; mask < 256; mask++)
            for (int lane = 0; lane < 8; lane++)
                indexes[mask * 8 + lane] = (mask >> lane & 1) != 0 ? BitOperations.PopCount((uint)(mask & ((1 << lane) - 1))) : 0;
        return indexes;
    }

    /// <summary>Wide streams without the vector units: the plain loop over the states, whole groups while a group's
    /// words remain. The reference twin of <see cref="DecodeGroupsWide{TLanes}"/>.</summary>
    private static int DecodeGroupsScalar(uint* st, int states, uint* packed, byte* dst, int fullSymbols, ref ushort* pRef, ushort* end)
    {
        ushort* p = pRef;
        ushort* last = end - states;
        byte* o = dst, oEnd = dst + fullSymbols;
        while (o < oEnd && p <= last)
        {
            for (int k = 0; k < states; k++)
            {
                DecGetPacked(ref st[k], packed, o + k);
                st[k] = RenormBranchless(st[k], ref p);
            }
            o += states;
        }
        pRef = p;
        return (int)(o - dst);
    }

    /// <summary>
    /// The fast loop: whole groups of eight symbols while at least eight words remain (each state reads at most one
    /// word per symbol, so the group cannot overrun). Returns the number of symbols decoded; states in/out via
    /// <paramref name="st"/>. A separate method without stackalloc so the JIT has every register for the states.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int DecodeGroups(uint* st, byte* tbl, byte* dst, int fullSymbols, ref ushort* pRef, ushort* end)
    {
        uint x0 = st[0], x1 = st[1], x2 = st[2], x3 = st[3], x4 = st[4], x5 = st[5], x6 = st[6], x7 = st[7];
        ushort* p = pRef;
        ushort* last = end - NarrowStates; // p ≤ last ⇔ eight words remain
        byte* o = dst, oEnd = dst + fullSymbols;
        while (o < oEnd && p <= last)
        {
            DecGet(ref x0, tbl, o + 0);
            DecGet(ref x1, tbl, o + 1);
            DecGet(ref x2, tbl, o + 2);
            DecGet(ref x3, tbl, o + 3);
            DecGet(ref x4, tbl, o + 4);
            DecGet(ref x5, tbl, o + 5);
            DecGet(ref x6, tbl, o + 6);
            DecGet(ref x7, tbl, o + 7);
            x0 = RenormBranchless(x0, ref p);
            x1 = RenormBranchless(x1, ref p);
            x2 = RenormBranchless(x2, ref p);
            x3 = RenormBranchless(x3, ref p);
            x4 = RenormBranchless(x4, ref p);
            x5 = RenormBranchless(x5, ref p);
            x6 = RenormBranchless(x6, ref p);
            x7 = RenormBranchless(x7, ref p);
            o += 8;
        }
        st[0] = x0; st[1] = x1; st[2] = x2; st[3] = x3; st[4] = x4; st[5] = x5; st[6] = x6; st[7] = x7;
        pRef = p;
        return (int)(o - dst);
    }

    /// <summary>Unchecked renormalisation for the fast loop (the caller has checked that a word remains).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint RenormBranchless(uint x, ref ushort* p)
    {
        // Arithmetic select (the JIT does not turn a ternary inside a loop into cmov, and a branch mispredicts):
        // x >> 16 is 0 exactly when x < L, so ((x >> 16) − 1) >> 31 (arithmetic) is all ones then and 0 otherwise.
        uint mask = (uint)((int)((x >> 16) - 1) >> 31);
        uint shifted = (x << 16) | *p;
        p = (ushort*)((byte*)p + (mask & 2));
        return x ^ ((x ^ shifted) & mask);
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
