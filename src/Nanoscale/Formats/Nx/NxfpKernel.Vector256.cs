using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats.Nx;

internal static partial class NxfpKernel
{
    /// <summary>The vector paths need AVX2 (vpermps table lookups, gathers for widths ≥ 5).</summary>
    public static bool VectorIsSupported => Avx2.IsSupported;

    /// <summary>Per (format, level) configuration k: the element encoder, the decode table (recycled level included)
    /// and the format's plain grid, as vectors for widths ≤ 4 and as pinned pointers for gathers above.</summary>
    internal sealed unsafe class VectorConfig
    {
        public required ElementEncoder256 Encoder;
        public required Vector256<float> TableLow, TableHigh, GridLow, GridHigh;
        public required float* Table, Grid;
        public required Vector256<float> Level;
        /// <summary>Table and grid as 8-entry vectors (2^bits / 8 of them) for the vpermps tree of widths 5 and 6.</summary>
        public required Vector256<float>[] TableParts, GridParts;
        public required float[] Tops;
    }

    private static readonly ConditionalWeakTable<NxfpCodec, VectorConfig[]> EncoderCache = new();
    private static readonly ConditionalWeakTable<NxfpCodec, (Vector256<float> Low, Vector256<float> High)[]> Table4Cache = new();

    private static unsafe VectorConfig[] VectorEncoders(NxfpCodec codec) => EncoderCache.GetValue(codec, c =>
    {
        var configs = new VectorConfig[c.ConfigCount];
        var grids = new float[c.Formats.Length][];
        for (int f = 0; f < c.Formats.Length; f++)
        {
            grids[f] = GC.AllocateArray<float>(256, pinned: true);
            c.Formats[f].DecodeTable.CopyTo(grids[f]);
        }
        for (int k = 0; k < configs.Length; k++)
        {
            int f = k / c.LevelCount;
            float[] table = c.DecodeTableArray(k);
            var padded = new float[16];
            var gridPadded = new float[16];
            table.AsSpan(0, Math.Min(16, table.Length)).CopyTo(padded);
            grids[f].AsSpan(0, 16).CopyTo(gridPadded);
            configs[k] = new VectorConfig
            {
                Encoder = new ElementEncoder256(c.Formats[f], c.Rounding),
                TableLow = Vector256.Create(padded.AsSpan(0, 8)), TableHigh = Vector256.Create(padded.AsSpan(8, 8)),
                GridLow = Vector256.Create(gridPadded.AsSpan(0, 8)), GridHigh = Vector256.Create(gridPadded.AsSpan(8, 8)),
                Table = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(table)),
                Grid = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(grids[f])),
                Level = Vector256.Create(c.Level(f, k % c.LevelCount)),
                Tops = c.Tops(k),
                TableParts = Parts(table, c.ElementBits), GridParts = Parts(grids[f], c.ElementBits),
            };
        }
        // Keep the pinned grids alive as long as the codec.
        GridKeepAlive.AddOrUpdate(c, grids);
        return configs;
    });

    private static readonly ConditionalWeakTable<NxfpCodec, float[][]> GridKeepAlive = new();

    private static Vector256<float>[] Parts(float[] table, int bits) =>
        [.. Enumerable.Range(0, bits is 5 or 6 ? 1 << (bits - 3) : 0).Select(p => Vector256.Create(table.AsSpan(8 * p, 8)))];

    internal static (Vector256<float> Low, Vector256<float> High)[] Vector4BitTables(NxfpCodec codec) =>
        Table4Cache.GetValue(codec, c =>
        {
            var tables = new (Vector256<float>, Vector256<float>)[c.ConfigCount];
            for (int k = 0; k < tables.Length; k++)
                tables[k] = Packed4Vector.Load4BitTable(c.DecodeTableArray(k));
            return tables;
        });

    /// <summary>The candidate search of <see cref="QuantizeBlockScalar"/> with each candidate in four 8-lane vectors:
    /// x = v / s (vdivps, correctly rounded as the scalar division), codes by <see cref="ElementEncoder256"/>, the
    /// recycled level by the same float comparison, squared errors summed in the documented lane order.</summary>
    [SkipLocalsInit] // the memo slots are written before they are read
    private static unsafe int QuantizeBlockVector(NxfpCodec codec, VectorConfig[] configs, ReadOnlySpan<float> block,
        float amax, Span<byte> codes)
    {
        ref float p = ref MemoryMarshal.GetReference(block);
        Vector256<float> v0 = Vector256.LoadUnsafe(ref p), v1 = Vector256.LoadUnsafe(ref p, 8),
            v2 = Vector256.LoadUnsafe(ref p, 16), v3 = Vector256.LoadUnsafe(ref p, 24);
        ScaleFormat scale = codec.Scale;
        int bits = codec.ElementBits, levelCount = codec.LevelCount;
        bool recycling = codec.Recycling;
        Vector256<int> negativeZero = Vector256.Create(codec.NegativeZeroCode);
        float bestError = float.PositiveInfinity;
        int bestWord = -1, bestFormat = 0;
        Vector256<int> b0 = default, b1 = default, b2 = default, b3 = default;
        // x = v / s and the grid codes depend only on (format, scale code), not on the recycled level: candidates of
        // the next level of the same format (same top or the same neighbours) reuse them. A pure memo, so the
        // candidates and their order are those of the scalar path.
        int slots = levelCount > 1 ? MemoSlots : 0;
        Span<Vector256<float>> memoX = stackalloc Vector256<float>[4 * slots];
        Span<Vector256<int>> memoCode = stackalloc Vector256<int>[4 * slots];
        Span<int> memoScale = stackalloc int[slots];
        int memoCount = 0, memoFormat = -1;
        for (int k = 0; k < configs.Length; k++)
        {
            VectorConfig config = configs[k];
            if (k / levelCount != memoFormat)
                (memoFormat, memoCount) = (k / levelCount, 0);
            foreach (float top in config.Tops)
            {
                var (floor, ceil) = NxfpBlock.ScaleNeighbours(scale, amax, top);
                for (int n = 0; n < 2; n++)
                {
                    int sc = n == 0 ? floor : ceil;
                    if (n == 1 && ceil == floor) break;
                    Vector256<float> s = Vector256.Create(scale.Decode(sc));
                    Vector256<float> x0, x1, x2, x3;
                    Vector256<int> c0, c1, c2, c3;
                    int slot = memoScale[..memoCount].IndexOf(sc);
                    if (slot >= 0)
                    {
                        (x0, x1, x2, x3) = (memoX[4 * slot], memoX[4 * slot + 1], memoX[4 * slot + 2], memoX[4 * slot + 3]);
                        (c0, c1, c2, c3) = (memoCode[4 * slot], memoCode[4 * slot + 1], memoCode[4 * slot + 2], memoCode[4 * slot + 3]);
                    }
                    else
                    {
                        (x0, x1, x2, x3) = (v0 / s, v1 / s, v2 / s, v3 / s);
                        (c0, c1, c2, c3) = (config.Encoder.Encode(x0), config.Encoder.Encode(x1),
                            config.Encoder.Encode(x2), config.Encoder.Encode(x3));
                        if (memoCount < slots)
                        {
                            (memoX[4 * memoCount], memoX[4 * memoCount + 1], memoX[4 * memoCount + 2], memoX[4 * memoCount + 3]) = (x0, x1, x2, x3);
                            (memoCode[4 * memoCount], memoCode[4 * memoCount + 1], memoCode[4 * memoCount + 2], memoCode[4 * memoCount + 3]) = (c0, c1, c2, c3);
                            memoScale[memoCount++] = sc;
                        }
                    }
                    if (recycling)
                        (c0, c1, c2, c3) = (Recycle(config, x0, c0, bits, negativeZero), Recycle(config, x1, c1, bits, negativeZero),
                            Recycle(config, x2, c2, bits, negativeZero), Recycle(config, x3, c3, bits, negativeZero));
                    Vector256<float> d0 = v0 - Lookup(config.TableLow, config.TableHigh, config.TableParts, config.Table, c0, bits) * s;
                    Vector256<float> d1 = v1 - Lookup(config.TableLow, config.TableHigh, config.TableParts, config.Table, c1, bits) * s;
                    Vector256<float> d2 = v2 - Lookup(config.TableLow, config.TableHigh, config.TableParts, config.Table, c2, bits) * s;
                    Vector256<float> d3 = v3 - Lookup(config.TableLow, config.TableHigh, config.TableParts, config.Table, c3, bits) * s;
                    Vector256<float> a = ((d0 * d0 + d1 * d1) + d2 * d2) + d3 * d3;
                    Vector128<float> h = a.GetLower() + a.GetUpper();
                    h += Sse.MoveHighToLow(h, h);
                    float error = h.ToScalar() + h.GetElement(1);
                    if (error < bestError)
                    {
                        bestError = error;
                        bestWord = codec.Word(sc, k / levelCount, k % levelCount);
                        bestFormat = k / levelCount;
                        (b0, b1, b2, b3) = (c0, c1, c2, c3);
                    }
                }
            }
        }
        if (bestWord < 0)
        {
            // Not reachable for finite blocks (the floor candidate never overflows); same fallback as the scalar path.
            Span<float> squares = stackalloc float[B];
            bestWord = codec.Word(scale.MaxCode, 0, 0);
            CandidateScalar(codec, 0, 0, scale.Decode(scale.MaxCode), block, codes, squares);
        }
        else
        {
            Vector256<byte> bytes = Vector256.Narrow(
                Vector256.Narrow(b0.AsUInt32(), b1.AsUInt32()), Vector256.Narrow(b2.AsUInt32(), b3.AsUInt32()));
            bytes.StoreUnsafe(ref MemoryMarshal.GetReference(codes));
        }
        NxfpBlock.AvoidNaNPattern(codec, bestWord, block[0] / scale.Decode(bestWord & ((1 << codec.ScaleBits) - 1)), bestFormat, codes);
        return bestWord;
    }

    private const int MemoSlots = 4;

    /// <summary>The recycled level's code where it is strictly nearer to x than the grid value of <paramref name="code"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<int> Recycle(VectorConfig config, Vector256<float> x, Vector256<int> code, int bits, Vector256<int> negativeZero)
    {
        Vector256<float> grid = Lookup(config.GridLow, config.GridHigh, config.GridParts, config.Grid, code, bits);
        Vector256<float> toLevel = Vector256.Abs(x - config.Level), toGrid = Vector256.Abs(x - grid);
        return Vector256.ConditionalSelect(Vector256.LessThan(toLevel, toGrid).AsInt32(), negativeZero, code);
    }

    /// <summary>table[code] for 8 codes: one vpermps (≤ 3 bits), two vpermps and a blend on bit 3 (4 bits), a tree
    /// of vpermps and blends on bits 3, 4 (and 5) (5, 6 bits: cheaper than a gather on our Zen 4), else a gather.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static unsafe Vector256<float> Lookup(Vector256<float> low, Vector256<float> high, Vector256<float>[] parts,
        float* table, Vector256<int> code, int bits)
    {
        if (bits is 5 or 6)
            return LookupTree(parts, code, bits);
        if (bits <= 3)
            return Avx2.PermuteVar8x32(low, code);
        if (bits == 4)
            return Avx.BlendVariable(Avx2.PermuteVar8x32(low, code), Avx2.PermuteVar8x32(high, code),
                Avx2.ShiftLeftLogical(code, 28).AsSingle());
        return Avx2.GatherVector256(table, code, 4);
    }

    /// <summary>Constants of the vector unpack of one width (3, 5..8 bits; 4 bits has <see cref="Packed4Vector"/>).</summary>
    /// <remarks>Codes are packed LSB-first (SPEC §8), so the 8 codes of group g (codes 8g … 8g+7) fill exactly
    /// <c>bits</c> bytes starting at byte g·bits. Code i of a group starts at bit i·bits: its 16-bit little-endian
    /// window at byte (i·bits) &gt;&gt; 3, shifted right by (i·bits) &amp; 7, holds the whole code (7 + 8 ≤ 16 bits).
    /// The 16 bytes of a group are broadcast to both 128-bit halves, so one vpshufb builds all 8 windows.</remarks>
    internal readonly struct UnpackControls
    {
        /// <summary>Size of the zero-padded copy of a block near the end of the buffer.</summary>
        public const int TailBytes = 3 * 8 + 16;

        public Vector256<byte> Shuffle { get; init; }
        public Vector256<uint> Shifts { get; init; }
        public Vector256<uint> Mask { get; init; }

        /// <summary>Bytes the unpack reads from the start of a block: 16 from the start of the last group.</summary>
        public static int ReadBytes(int bits) => 3 * bits + 16;

        public static UnpackControls For(int bits)
        {
            var shuffle = new byte[32];
            var shifts = new uint[8];
            for (int i = 0; i < 8; i++)
            {
                int bit = i * bits, half = i < 4 ? 0 : 16, lane = half + 4 * (i % 4);
                shuffle[lane] = (byte)(bit >> 3);
                shuffle[lane + 1] = (byte)((bit >> 3) + 1);
                shuffle[lane + 2] = shuffle[lane + 3] = 0x80;
                shifts[i] = (uint)(bit & 7);
            }
            return new UnpackControls
            {
                Shuffle = Vector256.Create(shuffle), Shifts = Vector256.Create(shifts), Mask = Vector256.Create((1u << bits) - 1),
            };
        }
    }

    /// <summary>table[code]·scale for the 32 codes of one block (widths 3, 5..8): the unpack of
    /// <see cref="UnpackControls"/>, then one vpermps (3 bits: 8 entries) or a gather (7, 8 bits) from the 2^bits-entry table of
    /// the block's (format, level) (5, 6 bits: the vpermps tree of <see cref="LookupTree"/> over <paramref name="parts"/>);
    /// the product is the same float multiply as the scalar decode.</summary>
    private static unsafe void DequantizeBlockVector(in UnpackControls unpack, int bits, float[] table,
        Vector256<float>[]? parts, ReadOnlySpan<byte> window, float scale, Span<float> target)
    {
        ref byte p = ref MemoryMarshal.GetReference(window);
        ref float t = ref MemoryMarshal.GetArrayDataReference(table);
        ref float d = ref MemoryMarshal.GetReference(target);
        Vector256<float> s = Vector256.Create(scale);
        Vector256<float> low = bits == 3 ? Vector256.LoadUnsafe(ref t) : default;
        float* tablePtr = (float*)Unsafe.AsPointer(ref t); // the decode tables are pinned (NxfpCodec)
        for (int g = 0; g < 4; g++)
        {
            Vector128<byte> bytes = Vector128.LoadUnsafe(ref p, (nuint)(g * bits));
            Vector256<uint> windows = Avx2.Shuffle(Vector256.Create(bytes, bytes), unpack.Shuffle).AsUInt32();
            Vector256<int> codes = (Avx2.ShiftRightLogicalVariable(windows, unpack.Shifts) & unpack.Mask).AsInt32();
            Vector256<float> values = bits == 3 ? Avx2.PermuteVar8x32(low, codes)
                : parts is not null ? LookupTree(parts, codes, bits)
                : Avx2.GatherVector256(tablePtr, codes, 4);
            (values * s).StoreUnsafe(ref d, (nuint)(8 * g));
        }
    }

    /// <summary>max |v| of a 32-element block as float bits (the same unsigned max of the bits without the sign as
    /// the scalar loop).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint AbsMaxBits(ReadOnlySpan<float> block)
    {
        ref uint p = ref Unsafe.As<float, uint>(ref MemoryMarshal.GetReference(block));
        Vector256<uint> abs = Vector256.Create(0x7FFF_FFFFu);
        Vector256<uint> m = Vector256.Max(
            Vector256.Max(Vector256.LoadUnsafe(ref p) & abs, Vector256.LoadUnsafe(ref p, 8) & abs),
            Vector256.Max(Vector256.LoadUnsafe(ref p, 16) & abs, Vector256.LoadUnsafe(ref p, 24) & abs));
        Vector128<uint> h = Vector128.Max(m.GetLower(), m.GetUpper());
        h = Vector128.Max(h, Vector128.Shuffle(h, Vector128.Create(2u, 3, 0, 1)));
        return Math.Max(h.ToScalar(), h.GetElement(1));
    }

    /// <summary>Packs 32 codes (one per byte, each &lt; 2^bits) LSB-first as <see cref="BlockPacking.Pack"/>: the 8
    /// codes of group g are one 64-bit load, and pext with the low <c>bits</c> bits of every byte set concatenates
    /// them into exactly <c>bits</c> bytes at byte g·bits.</summary>
    private static void PackBlock(ReadOnlySpan<byte> codes, int bits, Span<byte> packed)
    {
        ulong mask = 0x0101_0101_0101_0101ul * ((1ul << bits) - 1);
        ref byte c = ref MemoryMarshal.GetReference(codes);
        for (int g = 0; g < 4; g++)
        {
            ulong word = Bmi2.X64.ParallelBitExtract(Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref c, 8 * g)), mask);
            for (int b = 0; b < bits; b++)
                packed[g * bits + b] = (byte)(word >> (8 * b));
        }
    }

    /// <summary>parts[code >> 3][code &amp; 7] for codes &lt; 2^bits (bits 5 or 6): vpermps reads the low 3 bits of each
    /// index; blendvps picks by the sign bit, so code &lt;&lt; (31 − b) selects on bit b.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> LookupTree(Vector256<float>[] parts, Vector256<int> code, int bits)
    {
        Vector256<float> bit3 = Avx2.ShiftLeftLogical(code, 28).AsSingle(), bit4 = Avx2.ShiftLeftLogical(code, 27).AsSingle();
        Vector256<float> r = Avx.BlendVariable(
            Avx.BlendVariable(Avx2.PermuteVar8x32(parts[0], code), Avx2.PermuteVar8x32(parts[1], code), bit3),
            Avx.BlendVariable(Avx2.PermuteVar8x32(parts[2], code), Avx2.PermuteVar8x32(parts[3], code), bit3), bit4);
        if (bits == 5)
            return r;
        Vector256<float> upper = Avx.BlendVariable(
            Avx.BlendVariable(Avx2.PermuteVar8x32(parts[4], code), Avx2.PermuteVar8x32(parts[5], code), bit3),
            Avx.BlendVariable(Avx2.PermuteVar8x32(parts[6], code), Avx2.PermuteVar8x32(parts[7], code), bit3), bit4);
        return Avx.BlendVariable(r, upper, Avx2.ShiftLeftLogical(code, 26).AsSingle());
    }
}
