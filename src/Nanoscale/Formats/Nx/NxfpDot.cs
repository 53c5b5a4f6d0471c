using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats.Nx;

/// <summary>
/// NxFP4's generation-step product in integer arithmetic (<see cref="NibbleDot"/>, as MXFP4's): every (format, recycled
/// level) table of the codec is a set of dyadic values (E2M1's halves, E1M2's quarters, the levels 5 and 3.25 …), so
/// each becomes int8 after multiplying by its own power of two m_k; a block then contributes
/// scale/m_k · d_x · Σ table_k[code]·q. The tables are shifted by one common bias so they are unsigned (the bias
/// times the activations' block sum is subtracted exactly), and each pair of blocks gets the pair of its two tables in
/// one register. Per block before the rows (16 rows at a time): the metadata word gives scale/m_k and k — in registers
/// with AVX-512, else through two 256-entry tables gathered eight at a time (done one by one they cost twice the product).
/// </summary>
/// <remarks>
/// Available when the metadata word is one byte, the element width 4, at most 16 tables, and every table value × m_k is
/// an integer of magnitude ≤ 127 with the shifted values ≤ 127 (the default <c>nxfp4</c> and its one-byte variants;
/// not <c>nxfp4-m16</c>, whose 16-bit word and E3M0 level 128 do not fit). Otherwise the codec keeps its float-lookup
/// kernel. Exact in the weights; the activations carry int8 rounding (the bound of <c>FusedDotTests</c>).
/// </remarks>
internal sealed unsafe class NxfpDot
{
    private readonly NxfpCodec _codec;
    private readonly int _configs;
    private readonly int _bias;
    private readonly bool _wide;
    private readonly byte[] _pairTables;   // [k0 · K + k1] → 32 bytes: table k0 (+ bias) then table k1 (+ bias)
    private readonly float[] _wordScale;   // word → scale / m_k
    private readonly int[] _wordConfig;    // word → k
    private readonly byte[]? _laneTables;  // two or four tables (+ bias) for NibbleLanes, else null
    private readonly int _laneLargest;     // their largest entry
    private readonly Vector256<byte> _laneSelectors; // selector (the word's bits above the scale code) → k · 16, in both 128-bit lanes
    private readonly bool _vectorSelectors;           // whether _laneSelectors serves (AVX2, a selector of four bits at most)

    // The same two tables split by the word's fields, for 16 blocks at a time in registers (AVX-512): the scale code
    // (its low ScaleBits bits) → its scale through up to 128 entries; the selector (the bits above) → 1/m_k and k.
    private readonly bool _permute;
    private readonly int _scaleBits;
    private readonly Vector512<float>[] _scaleParts = [];
    private readonly Vector512<float> _inverseBySelector;
    private readonly Vector512<int> _firstTableBySelector;   // selector → 32 · k · K (a pair's first table)
    private readonly Vector512<int> _secondTableBySelector;  // selector → 32 · k (a pair's second table)
    private readonly ExponentCodes _exponentCodes;

    // The per-selector tables in eight lanes, for AVX2 (vpermd) when the selector has at most three bits.
    private readonly bool _shift;
    private readonly Vector256<int> _bitsBySelector8;
    private readonly bool _inLane;                              // the three tables' four entries in both 128-bit lanes          // selector → the float bits added to code << shift: scale/m_k
    private readonly Vector256<int> _firstTableBySelector8, _secondTableBySelector8;

    private NxfpDot(NxfpCodec codec, int[][] tables, float[] inverse, int bias, bool wide)
    {
        _codec = codec;
        _configs = tables.Length;
        _bias = bias;
        _wide = wide;
        _pairTables = GC.AllocateArray<byte>(_configs * _configs * 32, pinned: true);
        for (int k0 = 0; k0 < _configs; k0++)
            for (int k1 = 0; k1 < _configs; k1++)
                for (int i = 0; i < 16; i++)
                {
                    _pairTables[(k0 * _configs + k1) * 32 + i] = (byte)(tables[k0][i] + bias);
                    _pairTables[(k0 * _configs + k1) * 32 + 16 + i] = (byte)(tables[k1][i] + bias);
                }
        if (_configs <= 4)
        {
            // The lane kernel's two or four tables (NibbleLanes.Tables): table k (+ bias) at 16k; unused ones zero.
            _laneTables = new byte[_configs <= 2 ? 32 : 64];
            for (int k = 0; k < _configs; k++)
                for (int i = 0; i < 16; i++) _laneTables[k * 16 + i] = (byte)(tables[k][i] + bias);
            _laneLargest = _laneTables.Max();
        }
        _wordScale = new float[256];
        _wordConfig = new int[256];
        var scaleTable = codec.Scale.DecodeTable;
        for (int word = 0; word < 256; word++)
        {
            var (scaleCode, f, l) = codec.SplitWord(word);
            int k = Math.Min(f, codec.Formats.Length - 1) * codec.LevelCount + Math.Min(l, codec.LevelCount - 1);
            _wordConfig[word] = k;
            _wordScale[word] = scaleTable[scaleCode] * inverse[k];
        }
        _scaleBits = codec.ScaleBits;
        if (_laneTables is not null && Avx2.IsSupported && _scaleBits is >= 4 and <= 7)
        {
            // k depends on the bits above the scale code alone (the word tables ignore nothing else), checked for every word.
            var bySelector = new byte[16];
            for (int word = 0; word < 256; word++) bySelector[word >> _scaleBits] = (byte)(16 * _wordConfig[word]);
            _vectorSelectors = Enumerable.Range(0, 256).All(word => bySelector[word >> _scaleBits] == 16 * _wordConfig[word]);
            _laneSelectors = Vector256.Create(Vector128.Create(bySelector));
        }
        _permute = Avx512F.IsSupported && _scaleBits is >= 4 and <= 7;
        _exponentCodes = ExponentCodes.Of(scaleTable, 1 << _scaleBits, codec.Scale.MantissaBits);
        _shift = Avx2.IsSupported && _scaleBits is >= 5 and <= 7 && _exponentCodes.Usable;
        if (_permute || _shift)
        {
            var inverseBySelector = new float[16];
            var firstBySelector = new int[16];
            var secondBySelector = new int[16];
            // Every value the bits above the scale code can hold (unused bits included: the word tables ignore them too).
            for (int selector = 0; selector < 1 << (8 - _scaleBits); selector++)
            {
                var (_, f, l) = codec.SplitWord(selector << _scaleBits);
                int k = Math.Min(f, codec.Formats.Length - 1) * codec.LevelCount + Math.Min(l, codec.LevelCount - 1);
                (inverseBySelector[selector], firstBySelector[selector], secondBySelector[selector]) = (inverse[k], 32 * k * _configs, 32 * k);
            }
            if (_permute)
            {
                var scales = new float[128];
                for (int code = 0; code < 1 << _scaleBits; code++) scales[code] = scaleTable[code];
                _scaleParts = [.. Enumerable.Range(0, 8).Select(part => Vector512.Create(scales.AsSpan(16 * part, 16)))];
                _inverseBySelector = Vector512.Create(inverseBySelector);
                (_firstTableBySelector, _secondTableBySelector) = (Vector512.Create(firstBySelector), Vector512.Create(secondBySelector));
            }
            if (_shift)
            {
                // Dividing a normal scale by m_k (a power of two) lowers its exponent: the bits of scale/m_k are
                // (code << shift) + offset − log2(m_k) · 2^23, checked here for every normal code and selector (a
                // result below the normal floats would differ: then the gathers serve this codec).
                var bits = new int[8];
                for (int selector = 0; selector < 8; selector++)
                    bits[selector] = _exponentCodes.Offset + BitConverter.SingleToInt32Bits(inverseBySelector[selector]) - BitConverter.SingleToInt32Bits(1f);
                for (int code = _exponentCodes.Low; code <= _exponentCodes.Low + _exponentCodes.Span; code++)
                    for (int selector = 0; selector < 1 << (8 - _scaleBits); selector++)
                        if (BitConverter.Int32BitsToSingle((code << _exponentCodes.Shift) + bits[selector]) is var folded
                            && BitConverter.SingleToInt32Bits(folded) != BitConverter.SingleToInt32Bits(scaleTable[code] * inverseBySelector[selector]))
                            _shift = false;
                // Selectors below 4 (a scale code of 6 or 7 bits): each table's four entries in both 128-bit lanes, so
                // vpermilps (in-lane, two a cycle on a Zen 3) can look them up instead of vpermd (one a cycle).
                _inLane = _scaleBits >= 6;
                if (_inLane)
                    foreach (var table in new[] { bits, firstBySelector, secondBySelector }) table.AsSpan(0, 4).CopyTo(table.AsSpan(4, 4));
                _bitsBySelector8 = Vector256.Create(bits);
                (_firstTableBySelector8, _secondTableBySelector8) = (Vector256.Create(firstBySelector.AsSpan(0, 8)), Vector256.Create(secondBySelector.AsSpan(0, 8)));
            }
        }
    }

    /// <summary>The integer kernel of <paramref name="codec"/>, or null when its tables or word do not allow it.</summary>
    public static NxfpDot? For(NxfpCodec codec)
    {
        if (codec.ElementBits != 4 || codec.ScaleBytesPerBlock != 1 || codec.ConfigCount > 16 || !NibbleDot.IsSupported) return null;
        var tables = new int[codec.ConfigCount][];
        var inverse = new float[codec.ConfigCount];
        for (int k = 0; k < codec.ConfigCount; k++)
        {
            var values = codec.DecodeTableArray(k);
            int shift = Enumerable.Range(0, 8).FirstOrDefault(s => values.All(v => Integral(v * (1 << s))), -1);
            if (shift < 0) return null;
            tables[k] = [.. values.Select(v => (int)(v * (1 << shift)))];
            inverse[k] = 1f / (1 << shift);
        }
        int bias = Math.Max(0, -tables.Min(t => t.Min()));
        int top = tables.Max(t => t.Max()) + bias;
        if (top > 127) return null;
        return new NxfpDot(codec, tables, inverse, bias, wide: top > 64);
    }

    private static bool Integral(float v) => float.IsFinite(v) && v == MathF.Round(v) && Math.Abs(v) <= 127;

    /// <summary>y[r] = row r · x over <paramref name="rowCount"/> rows of whole blocks (spans already checked).</summary>
    public void DotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        int nb = cols / NxfpCodec.NxBlockSize;
        var a = NibbleDot.Scratch;
        a.Set(x[..cols], evensThenOdds: true, _bias);
        int chunk = ChunkRows(nb);
        float[] c = ArrayPool<float>.Shared.Rent(chunk * nb + 16);
        int[] pairIndex = ArrayPool<int>.Shared.Rent(chunk * nb + 16);
        float[] xsTile = ArrayPool<float>.Shared.Rent(chunk * nb + 16);
        try
        {
            for (int i = 0; i < chunk; i++) a.Scales.AsSpan(0, nb).CopyTo(xsTile.AsSpan(i * nb, nb));
            fixed (byte* b0 = blocks)
            fixed (byte* w0 = scales)
            fixed (float* c0 = c)
            fixed (int* p0 = pairIndex)
            fixed (float* xs = xsTile)
            fixed (byte* tables = _pairTables)
            {
                var factors = new RowFactors(this, w0, b0, nb, chunk, rowCount, xs, c0, p0);
                if (_wide) NibbleDot.Rows<NibbleDot.WidePairTables, RowFactors>(b0, (nint)nb * 16, 16, rowCount, nb, a, default, tables, _bias, ref factors, y);
                else NibbleDot.Rows<NibbleDot.PairTables, RowFactors>(b0, (nint)nb * 16, 16, rowCount, nb, a, default, tables, _bias, ref factors, y);
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(c);
            ArrayPool<int>.Shared.Return(pairIndex);
            ArrayPool<float>.Shared.Return(xsTile);
        }
    }

    /// <summary>Each row's factors and pair offsets for <see cref="NibbleDot.Rows{TMode, TFactors}"/>: prepared
    /// <paramref name="chunk"/> rows at a time (<see cref="ChunkRows"/>, a power of two), when the first of them comes.</summary>
    private readonly struct RowFactors(NxfpDot dot, byte* words, byte* codes, int nb, int chunk, int rowCount, float* xs, float* c, int* pairs)
        : NibbleDot.IRowFactors
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public float* Prepare(int row, out int* pairIndex)
        {
            int i = row & (chunk - 1);
            if (i == 0) dot.Prepare(words + (nint)row * nb, codes + (nint)row * nb * 16, Math.Min(chunk, rowCount - row) * nb, xs, c, pairs);
            pairIndex = pairs + i * nb;
            return c + i * nb;
        }
    }

    /// <summary>Rows prepared together: their metadata words lie one after another, so with an even block count (pairs
    /// never straddle two rows) one <see cref="Prepare(byte*, byte*, int, float*, float*, int*)"/> call covers 16 rows
    /// and its fixed cost is paid once per 16 (at 576 columns, 18 blocks a row, that cost was a third of the product);
    /// an odd count goes row by row.</summary>
    private static int ChunkRows(int nb) => nb % 2 == 0 ? 16 : 1;

    /// <summary><see cref="DotRows"/> for several activation vectors (<c>y[v·yStride + r]</c>), each row unpacked once.</summary>
    public void DotRowsMany(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, int vectors,
        ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        int nb = cols / NxfpCodec.NxBlockSize;
        if (x.Length < vectors * cols || y.Length < (vectors - 1) * yStride + rowCount || vectors > NibbleDot.MaxVectors)
            throw new ArgumentException("spans shorter than the rows");
        var sets = NibbleDot.QuantizeMany(x, vectors, cols, evensThenOdds: true, _bias);
        int chunk = ChunkRows(nb);
        float[] c = ArrayPool<float>.Shared.Rent(chunk * nb + 16);
        int[] pairIndex = ArrayPool<int>.Shared.Rent(chunk * nb + 16);
        float* ones = NibbleDot.Ones(chunk * nb + 16);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (byte* w0 = scales)
            fixed (float* c0 = c)
            fixed (int* p0 = pairIndex)
            fixed (byte* tables = _pairTables)
            fixed (float* y0 = y)
            {
                for (int r0 = 0; r0 < rowCount; r0 += chunk)
                {
                    int n = Math.Min(chunk, rowCount - r0);
                    byte* rows = b0 + (nint)r0 * nb * 16;
                    Prepare(w0 + (nint)r0 * nb, rows, n * nb, ones, c0, p0);
                    for (int i = 0; i < n; i++)
                    {
                        if (_wide)
                            NibbleDot.RowMany<NibbleDot.WidePairTables>(rows + (nint)i * nb * 16, 16, nb, c0 + i * nb, sets, vectors, default, tables,
                                p0 + i * nb, _bias, y0 + r0 + i, yStride);
                        else
                            NibbleDot.RowMany<NibbleDot.PairTables>(rows + (nint)i * nb * 16, 16, nb, c0 + i * nb, sets, vectors, default, tables,
                                p0 + i * nb, _bias, y0 + r0 + i, yStride);
                    }
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(c);
            ArrayPool<int>.Shared.Return(pairIndex);
        }
    }

    /// <summary>Whether <see cref="DotRowsLanes"/> runs here: at most four tables, AVX2 (AVX-512 VBMI and AVX-VNNI
    /// where the CPU has them), and without VNNI table entries no larger than int16 sums allow
    /// (<see cref="NibbleLanes.WordsPerWidening"/>).</summary>
    public bool HasLanes => _laneTables is not null && NibbleLanes.IsSupported && NibbleLanes.Tables.SelectedSupported
        && (System.Runtime.Intrinsics.X86.AvxVnni.IsSupported || NibbleLanes.WordsPerWidening(_laneLargest) > 0);

    /// <summary>
    /// <see cref="DotRowsMany"/> with eight rows in a register's lanes (<see cref="NibbleLanes"/>): each group's factors
    /// (scale/m_k, NaN for a NaN block) from <see cref="Prepare(byte*, byte*, int, float*, float*, int*)"/> row by row, and
    /// each block's table number per row for the per-block lookup; any number of vectors.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // optimized at once: a prompt pass alone may call it too rarely to leave tier 0
    public void DotRowsLanes(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, int vectors,
        ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        const int Lanes = NibbleLanes.Lanes;
        int nb = cols / NxfpCodec.NxBlockSize;
        if (!HasLanes || x.Length < vectors * cols || y.Length < (vectors - 1) * yStride + rowCount
            || blocks.Length < (long)rowCount * nb * 16 || scales.Length < rowCount * nb)
            throw new ArgumentException("spans shorter than the rows, or no lane kernel here");
        var a = NibbleLanes.Scratch;
        a.Set(x, vectors, cols, evensThenOdds: true, _bias);
        var unpacked = NibbleLanes.Unpacked(nb);
        // A whole group's factors in one Prepare call where pairs never straddle rows (an even block count), as
        // DotRows does for 16 rows; else row by row.
        bool together = nb % 2 == 0;
        const int GroupRows = NibbleLanes.GroupRows;
        float[] row = ArrayPool<float>.Shared.Rent(GroupRows * nb + 16);
        int[] pairs = ArrayPool<int>.Shared.Rent(GroupRows * nb + 16);
        float[] factors = ArrayPool<float>.Shared.Rent(nb * GroupRows);
        int[] selectors = ArrayPool<int>.Shared.Rent(nb * GroupRows);
        float* ones = NibbleDot.Ones(GroupRows * nb + 16);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (byte* w0 = scales)
            fixed (float* c0 = row)
            fixed (int* p0 = pairs)
            fixed (float* f0 = factors)
            fixed (int* s0 = selectors)
            fixed (int* config = _wordConfig)
            fixed (float* y0 = y)
            {
                var tables = new NibbleLanes.Tables(_laneTables, s0);
                for (int r = 0; r < rowCount; r += GroupRows)
                {
                    int n = Math.Min(GroupRows, rowCount - r);
                    NibbleLanes.Prefetch(w0 + (nint)(r + GroupRows) * nb, GroupRows * nb); // the next group's scales, as Group does its codes
                    if (together) Prepare(w0 + (nint)r * nb, b0 + (nint)r * nb * 16, n * nb, ones, c0, p0);
                    // Each eight rows' factors and table selectors in the lanes' layout, the second eight's after the first's.
                    for (int half = 0; half * Lanes < n; half++)
                    {
                        int inHalf = Math.Min(Lanes, n - half * Lanes);
                        // Factors prepared for the whole group: the eight rows' moved into the lanes at once.
                        if (together) NibbleLanes.PlaceRows(c0 + half * Lanes * nb, nb, inHalf, nb, f0 + half * nb * Lanes);
                        bool vectorSelectors = _vectorSelectors && nb >= 4;
                        if (vectorSelectors) LaneSelectors(w0 + (nint)(r + half * Lanes) * nb, nb, inHalf, s0 + half * nb * Lanes);
                        if (together && vectorSelectors) continue;
                        for (int i = 0; i < Lanes; i++)
                        {
                            int source = r + half * Lanes + NibbleLanes.SourceRow(i, inHalf);
                            byte* words = w0 + (nint)source * nb;
                            if (!together)
                            {
                                Prepare(words, b0 + (nint)source * nb * 16, nb, ones, c0, p0);
                                NibbleLanes.Place(c0, nb, i, f0 + half * nb * Lanes);
                            }
                            if (!vectorSelectors) LaneSelectorsOfRow(words, nb, config, i, s0 + half * nb * Lanes);
                        }
                    }
                    NibbleLanes.Group(b0 + (nint)r * nb * 16, nb * 16, n, nb, f0, a, tables, unpacked, y0 + r, yStride);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(row);
            ArrayPool<int>.Shared.Return(pairs);
            ArrayPool<float>.Shared.Return(factors);
            ArrayPool<int>.Shared.Return(selectors);
        }
    }

    /// <summary>Each block's table selector (k · 16 in each byte: <see cref="NibbleLanes.Tables"/>) of one row into lane
    /// <paramref name="lane"/> (<c>s[8j + lane]</c>), through the word table.</summary>
    private static void LaneSelectorsOfRow(byte* words, int nb, int* config, int lane, int* s)
    {
        for (int j = 0; j < nb; j++) s[j * NibbleLanes.Lanes + lane] = config[words[j]] * 0x10101010;
    }

    /// <summary>
    /// <see cref="LaneSelectorsOfRow"/> for up to eight rows (<paramref name="rows"/>, <paramref name="nb"/> words
    /// apart; missing lanes repeat the first row, <see cref="NibbleLanes.SourceRow"/>) four blocks at a time: one gather
    /// of each row's four words, the selectors (the bits above the scale code, a byte shift and mask) through a 16-entry
    /// <c>vpshufb</c> table of k · 16, and each block's byte spread over its lanes' four bytes by one more <c>vpshufb</c>
    /// — the words' scalar lookups and strided stores were ~10% of a 16-sequence NxFP4 step (Zen 5). A row whose block
    /// count is not a multiple of four ends with a gather that overlaps the one before (the same values again). Needs
    /// <paramref name="nb"/> ≥ 4 and <see cref="_vectorSelectors"/>.
    /// </summary>
    private void LaneSelectors(byte* words, int nb, int rows, int* s)
    {
        const int Lanes = NibbleLanes.Lanes;
        var offsets = NibbleLanes.RowOffsets(rows, nb);
        var mask = Vector256.Create((byte)((1 << (8 - _scaleBits)) - 1));
        var shift = Vector128.CreateScalar((ushort)_scaleBits);
        for (int j = 0; j < nb; j += 4)
        {
            if (j + 4 > nb) j = nb - 4;
            var w = Avx2.GatherVector256((int*)(words + j), offsets, 1).AsByte();
            // A 16-bit shift carries the next byte's low bits into each byte's top: the mask keeps the selector alone.
            var k16 = Avx2.Shuffle(_laneSelectors, Avx2.ShiftRightLogical(w.AsUInt16(), shift).AsByte() & mask);
            Avx2.Shuffle(k16, SpreadByte0).AsInt32().Store(s + j * Lanes);
            Avx2.Shuffle(k16, SpreadByte1).AsInt32().Store(s + (j + 1) * Lanes);
            Avx2.Shuffle(k16, SpreadByte2).AsInt32().Store(s + (j + 2) * Lanes);
            Avx2.Shuffle(k16, SpreadByte3).AsInt32().Store(s + (j + 3) * Lanes);
        }
    }

    /// <summary><c>vpshufb</c> controls copying byte t of each 32-bit lane into all four of its bytes.</summary>
    private static readonly Vector256<byte> SpreadByte0 = Spread(0), SpreadByte1 = Spread(1), SpreadByte2 = Spread(2), SpreadByte3 = Spread(3);

    private static Vector256<byte> Spread(int t)
    {
        var control = new byte[32];
        for (int i = 0; i < 32; i++) control[i] = (byte)((i & ~3 & 15) + t);
        return Vector256.Create(control);
    }

    /// <summary>
    /// One row's per-block factors before its product: c[j] = scale/m_k · d_x(j) (NaN for a block passed through as
    /// NaN) and, at every even j, the byte offset of the pair of tables of blocks j and j + 1 (32 · (k_j · K + k_{j+1}); an
    /// odd last block pairs with itself). <paramref name="nb"/> may span several rows whose words and codes are contiguous (with
    /// <paramref name="xs"/> repeated per row), as long as no pair straddles two rows.
    /// </summary>
    private void Prepare(byte* words, byte* row, int nb, float* xs, float* c, int* pairIndex) =>
        Prepare(words, row, nb, xs, c, pairIndex, _permute ? Preparation.Permuted : _shift ? Preparation.Shifted : Preparation.Gathered);

    /// <summary>How <see cref="Prepare(byte*, byte*, int, float*, float*, int*, Preparation)"/> finds each block's
    /// scale and table: AVX-512 lookups in registers, AVX2 shifts and <c>vpermps</c>, or gathers from the word tables.</summary>
    internal enum Preparation { Gathered, Shifted, Permuted }

    /// <summary>Whether this CPU and codec allow <paramref name="path"/>.</summary>
    internal bool Allows(Preparation path) => path switch { Preparation.Permuted => _permute, Preparation.Shifted => _shift, _ => Avx2.IsSupported };

    /// <summary>
    /// Each block's factor c_j = scale/m_k · xs_j and each pair's table offset from the row's metadata words. With
    /// <see cref="Preparation.Permuted"/> (AVX-512, the word's fields small enough), 16 blocks at a time through
    /// in-register lookups (vpermt2ps / vpermps on the scale code and the selector); with <see cref="Preparation.Shifted"/>
    /// (AVX2, a selector of at most three bits), eight at a time, scale/m_k from its code by a shift and an add of
    /// the selector's constant (<c>vpermd</c>; m_k a power of two lowers the exponent) where every code of the eight
    /// is normal (<see cref="ExponentCodes"/>; else that eight's gathers), and the tables by <c>vpermd</c> on the
    /// selector; else gathering eight at a time from the two 256-entry tables (Zen 3's gathers made NxFP4's one-token
    /// product 40% slower than MXFP4's). The same floats every way (scale × 1/m_k exactly, then × xs), which
    /// <c>FusedDotTests.NxfpPreparationsEqualTheGathers</c> checks.
    /// </summary>
    internal void Prepare(byte* words, byte* row, int nb, float* xs, float* c, int* pairIndex, Preparation path)
    {
        int j = 0;
        bool nanWords = false;
        if (path == Preparation.Permuted) j = PreparePermuted(words, nb, xs, c, pairIndex, ref nanWords);
        fixed (float* wordScale = _wordScale)
        fixed (int* wordConfig = _wordConfig)
        {
            if (path == Preparation.Shifted) j = PrepareShifted(words, j, nb, xs, c, pairIndex, wordScale, wordConfig, ref nanWords);
            if (Avx2.IsSupported) j = PrepareGathered(words, j, nb, xs, c, pairIndex, wordScale, wordConfig, ref nanWords);
            for (; j < nb; j++)
            {
                c[j] = wordScale[words[j]] * xs[j];
                nanWords |= words[j] == _codec.NaNWord;
                if ((j & 1) == 0) pairIndex[j] = 32 * (wordConfig[words[j]] * _configs + wordConfig[words[Math.Min(j + 1, nb - 1)]]);
            }
            if ((nb & 1) == 1) pairIndex[nb - 1] = 32 * wordConfig[words[nb - 1]] * (_configs + 1);
        }
        // NaN blocks afterwards, only in rows that have the NaN word: a call inside the vector loops would make the JIT
        // keep their tables in memory instead of registers (it halved their speed).
        if (nanWords)
            for (int i = 0; i < nb; i++) FixNaN(words, row, i, c);
    }

    /// <summary>The shifted AVX2 part of <see cref="Prepare(byte*, byte*, int, float*, float*, int*, Preparation)"/>:
    /// whole groups of 8 blocks from block <paramref name="j"/>. Each 32 words are checked at once as bytes (every scale
    /// code normal, no NaN word: random and real weights alike); such a run of 32 then takes no check per eight, and the
    /// factor's bits are the code shifted plus a constant per selector (<c>_bitsBySelector8</c>: scale/m_k).</summary>
    private int PrepareShifted(byte* words, int j, int nb, float* xs, float* c, int* pairIndex, float* wordScale, int* wordConfig, ref bool nanWords) =>
        _inLane
            ? PrepareShifted<InLane>(words, j, nb, xs, c, pairIndex, wordScale, wordConfig, ref nanWords)
            : PrepareShifted<CrossLane>(words, j, nb, xs, c, pairIndex, wordScale, wordConfig, ref nanWords);

    private int PrepareShifted<TLookup>(byte* words, int j, int nb, float* xs, float* c, int* pairIndex, float* wordScale, int* wordConfig,
        ref bool nanWords) where TLookup : struct, ISelectorLookup
    {
        var exponent = _exponentCodes;
        var nan = Vector256.Create(_codec.NaNWord);
        var scaleMask = Vector256.Create((1 << _scaleBits) - 1);
        var low = Vector256.Create(exponent.Low);
        var span = Vector256.Create((uint)exponent.Span);
        var right = Vector128.CreateScalar(_scaleBits);
        var left = Vector128.CreateScalar(exponent.Shift);
        var byteMask = Vector256.Create((byte)((1 << _scaleBits) - 1));
        var byteLow = Vector256.Create((byte)exponent.Low);
        var byteSpan = Vector256.Create((byte)exponent.Span);
        var byteNaN = Vector256.Create((byte)_codec.NaNWord);
        Vector256<int> bitsBySelector = _bitsBySelector8, firstBySelector = _firstTableBySelector8, secondBySelector = _secondTableBySelector8;
        var anyNaN = Vector256<int>.Zero;
        for (; j + 8 <= nb; j += 8)
        {
            if (j + 32 <= nb)
            {
                var w32 = Vector256.Load(words + j);
                if (Vector256.LessThanOrEqualAll((w32 & byteMask) - byteLow, byteSpan) && !Vector256.EqualsAny(w32, byteNaN))
                {
                    for (int end = j + 32; j < end; j += 8)
                        Shifted<TLookup>(Avx2.ConvertToVector256Int32(words + j), xs + j, c + j, pairIndex + j, scaleMask, right, left, bitsBySelector, firstBySelector, secondBySelector);
                    j -= 8;
                    continue;
                }
            }
            var w = Avx2.ConvertToVector256Int32(words + j);
            anyNaN |= Vector256.Equals(w, nan);
            // A subnormal scale or the NaN word among the eight: the word tables.
            if (Vector256.LessThanOrEqualAll(((w & scaleMask) - low).AsUInt32(), span))
                Shifted<TLookup>(w, xs + j, c + j, pairIndex + j, scaleMask, right, left, bitsBySelector, firstBySelector, secondBySelector);
            else Gathered(w, xs + j, c + j, pairIndex + j, wordScale, wordConfig);
        }
        nanWords |= anyNaN != Vector256<int>.Zero;
        return j;
    }

    /// <summary>Eight blocks' factors and pair tables from their words <paramref name="w"/>, every scale code normal.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Shifted<TLookup>(Vector256<int> w, float* xs, float* c, int* pairIndex, Vector256<int> scaleMask, Vector128<int> right,
        Vector128<int> left, Vector256<int> bitsBySelector, Vector256<int> firstBySelector, Vector256<int> secondBySelector)
        where TLookup : struct, ISelectorLookup
    {
        var selector = Avx2.ShiftRightLogical(w, right);
        var scale = (Avx2.ShiftLeftLogical(w & scaleMask, left) + TLookup.Look(bitsBySelector, selector)).AsSingle();
        (scale * Vector256.Load(xs)).Store(c);
        // Even lanes: 32 · (k_j · K + k_{j+1}) (the odd lane's part moved down by a 64-bit shift); odd lanes unused.
        (TLookup.Look(firstBySelector, selector)
            + Avx2.ShiftRightLogical(TLookup.Look(secondBySelector, selector).AsInt64(), 32).AsInt32()).Store(pairIndex);
    }

    /// <summary>A per-selector table's entry in each lane: <c>vpermd</c> over eight entries, or <c>vpermilps</c> over
    /// four held in both 128-bit lanes (selectors below 4).</summary>
    private interface ISelectorLookup
    {
        static abstract Vector256<int> Look(Vector256<int> table, Vector256<int> selector);
    }

    private readonly struct CrossLane : ISelectorLookup
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Look(Vector256<int> table, Vector256<int> selector) => Avx2.PermuteVar8x32(table, selector);
    }

    private readonly struct InLane : ISelectorLookup
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<int> Look(Vector256<int> table, Vector256<int> selector) => Avx.PermuteVar(table.AsSingle(), selector).AsInt32();
    }

    /// <summary>The AVX2 part of <see cref="Prepare(byte*, byte*, int, float*, float*, int*, Preparation)"/> from block
    /// <paramref name="j"/>: whole groups of 8 blocks through two gathers from the 256-entry tables.</summary>
    private int PrepareGathered(byte* words, int j, int nb, float* xs, float* c, int* pairIndex, float* wordScale, int* wordConfig, ref bool nanWords)
    {
        var nan = Vector256.Create(_codec.NaNWord);
        var anyNaN = Vector256<int>.Zero;
        for (; j + 8 <= nb; j += 8)
        {
            var w = Avx2.ConvertToVector256Int32(words + j);
            Gathered(w, xs + j, c + j, pairIndex + j, wordScale, wordConfig);
            anyNaN |= Vector256.Equals(w, nan);
        }
        nanWords |= anyNaN != Vector256<int>.Zero;
        return j;
    }

    /// <summary>Eight blocks' factors and pair tables from their words <paramref name="w"/> through the word tables.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Gathered(Vector256<int> w, float* xs, float* c, int* pairIndex, float* wordScale, int* wordConfig)
    {
        var scale = Avx2.GatherVector256(wordScale, w, 4);
        (scale * Vector256.Load(xs)).Store(c);
        var k = Avx2.GatherVector256(wordConfig, w, 4);
        // Even lanes: 32 · (k_j · K + k_{j+1}) (the odd lane moved down by a 64-bit shift); odd lanes unused.
        var next = Avx2.ShiftRightLogical(k.AsInt64(), 32).AsInt32();
        Avx2.ShiftLeftLogical(Avx2.MultiplyLow(k, Vector256.Create(_configs)) + next, 5).Store(pairIndex);
    }

    /// <summary>The AVX-512 form of <see cref="Prepare(byte*, byte*, int, float*, float*, int*, Preparation)"/>: every block,
    /// 16 at a time (writes up to 15 entries past <paramref name="nb"/> in <paramref name="c"/> and
    /// <paramref name="pairIndex"/>; returns <paramref name="nb"/>). Its tables are held in registers for the loop.</summary>
    private int PreparePermuted(byte* words, int nb, float* xs, float* c, int* pairIndex, ref bool nanWords)
    {
        var parts = _scaleParts;
        Vector512<float> s0 = parts[0], s1 = parts[1], s2 = parts[2], s3 = parts[3], s4 = parts[4], s5 = parts[5], s6 = parts[6], s7 = parts[7];
        Vector512<float> inverseBySelector = _inverseBySelector;
        Vector512<int> firstBySelector = _firstTableBySelector, secondBySelector = _secondTableBySelector;
        var exponent = _exponentCodes;
        var nan = Vector512.Create(_codec.NaNWord);
        var scaleMask = Vector512.Create((1 << _scaleBits) - 1);
        int scaleBits = _scaleBits, j = 0;
        var anyNaN = Vector512<int>.Zero;
        for (; j + 16 <= nb; j += 16)
            anyNaN |= Group(Avx512F.ConvertToVector512Int32(Vector128.Load(words + j)), Vector512.Load(xs + j), c + j, pairIndex + j,
                scaleBits, scaleMask, nan, s0, s1, s2, s3, s4, s5, s6, s7, inverseBySelector, firstBySelector, secondBySelector, exponent);
        if (j < nb)
        {
            // The last, partial group through masked loads (no fault past the row's end, zeros in the other lanes), all
            // 16 lanes written (the callers' buffers have room): a short row (576 columns = 18 blocks) costs two groups.
            // The lanes past the row read a word whose scale code takes the shifted path (word = the lowest such code),
            // so a short row's last group does not fall back to the lookups.
            int left = nb - j;
            var byteMask = Vector128.LessThan(Vector128.Create((byte)0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), Vector128.Create((byte)left));
            var floatMask = Vector512.LessThan(Vector512.Create(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), Vector512.Create(left)).AsSingle();
            var tailWords = Avx512BW.VL.MaskLoad(words + j, byteMask, Vector128.Create((byte)exponent.Low));
            var tailScales = Avx512F.MaskLoad(xs + j, floatMask, Vector512<float>.Zero);
            anyNaN |= Group(Avx512F.ConvertToVector512Int32(tailWords), tailScales, c + j, pairIndex + j,
                scaleBits, scaleMask, nan, s0, s1, s2, s3, s4, s5, s6, s7, inverseBySelector, firstBySelector, secondBySelector, exponent);
        }
        nanWords |= anyNaN != Vector512<int>.Zero;
        return nb;
    }

    /// <summary>16 blocks of <see cref="PreparePermuted"/> from their words (as int32) and activation scales; returns
    /// the lanes holding the NaN word.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<int> Group(Vector512<int> w, Vector512<float> activationScales, float* c, int* pairIndex, int scaleBits,
        Vector512<int> scaleMask, Vector512<int> nan, Vector512<float> s0, Vector512<float> s1, Vector512<float> s2,
        Vector512<float> s3, Vector512<float> s4, Vector512<float> s5, Vector512<float> s6, Vector512<float> s7,
        Vector512<float> inverseBySelector, Vector512<int> firstBySelector, Vector512<int> secondBySelector, ExponentCodes exponent)
    {
        var code = w & scaleMask;
        var selector = Vector512.ShiftRightLogical(w, scaleBits);
        // Normal scale codes: the code shifted under a float's exponent plus a constant (two operations); a group with
        // another code (a subnormal scale, NaN) takes the lookups. The same floats either way.
        var scale = exponent.Usable && Vector512.LessThanOrEqualAll((code - Vector512.Create(exponent.Low)).AsUInt32(), Vector512.Create((uint)exponent.Span))
            ? (Vector512.ShiftLeft(code, exponent.Shift) + Vector512.Create(exponent.Offset)).AsSingle()
            : ScaleOf(code, scaleBits, s0, s1, s2, s3, s4, s5, s6, s7);
        (scale * Avx512F.PermuteVar16x32(inverseBySelector, selector) * activationScales).Store(c);
        // Even lanes: 32 · (k_j · K + k_{j+1}) (the odd lane's part moved down by a 64-bit shift); odd lanes unused.
        (Avx512F.PermuteVar16x32(firstBySelector, selector)
            + Vector512.ShiftRightLogical(Avx512F.PermuteVar16x32(secondBySelector, selector).AsInt64(), 32).AsInt32()).Store(pairIndex);
        return Vector512.Equals(w, nan);
    }

    /// <summary>
    /// Scale codes whose float is the code shifted under a float's exponent plus a constant — the normal codes of a
    /// minifloat scale such as NxFP4's UE5M2: codes <see cref="Low"/>..<see cref="Low"/> + <see cref="Span"/> have the
    /// bits (code &lt;&lt; <see cref="Shift"/>) + <see cref="Offset"/>, checked against the scale's table code by code when
    /// built; not <see cref="Usable"/> when no such run exists.
    /// </summary>
    internal readonly record struct ExponentCodes(bool Usable, int Shift, int Offset, int Low, int Span)
    {
        public static ExponentCodes Of(ReadOnlySpan<float> table, int codes, int mantissaBits)
        {
            int first = 1 << mantissaBits, shift = 23 - mantissaBits;
            if (mantissaBits is < 0 or > 7 || first >= codes || codes > table.Length || codes > 256) return default;
            int offset = BitConverter.SingleToInt32Bits(table[first]) - (first << shift);
            bool Matches(int code, ReadOnlySpan<float> t) =>
                float.IsFinite(t[code]) && t[code] > 0 && BitConverter.SingleToInt32Bits(t[code]) == (code << shift) + offset;
            if (!Matches(first, table)) return default;
            int low = first, high = first;
            while (low > 0 && Matches(low - 1, table)) low--;
            while (high + 1 < codes && Matches(high + 1, table)) high++;
            return new ExponentCodes(true, shift, offset, low, high - low);
        }
    }

    /// <summary>scaleTable[code] for 16 codes of up to 7 bits (the table in eight registers of 16): vpermt2ps looks up
    /// 32 entries; selects on bits 5 and 6 pick among up to four such lookups.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> ScaleOf(Vector512<int> code, int scaleBits, Vector512<float> s0, Vector512<float> s1, Vector512<float> s2,
        Vector512<float> s3, Vector512<float> s4, Vector512<float> s5, Vector512<float> s6, Vector512<float> s7)
    {
        var scale = Avx512F.PermuteVar16x32x2(s0, code, s1);
        if (scaleBits <= 5) return scale;
        var bit5 = Vector512.Equals(code & Vector512.Create(32), Vector512.Create(32)).AsSingle();
        scale = Vector512.ConditionalSelect(bit5, Avx512F.PermuteVar16x32x2(s2, code, s3), scale);
        if (scaleBits == 6) return scale;
        var upper = Vector512.ConditionalSelect(bit5, Avx512F.PermuteVar16x32x2(s6, code, s7), Avx512F.PermuteVar16x32x2(s4, code, s5));
        return Vector512.ConditionalSelect(Vector512.GreaterThan(code, Vector512.Create(63)).AsSingle(), upper, scale);
    }

    private void FixNaN(byte* words, byte* row, int j, float* c)
    {
        if (NxfpBlock.IsPackedNaNBlock(_codec, words[j], new ReadOnlySpan<byte>(row + j * 16, 16))) c[j] = float.NaN;
    }
}
