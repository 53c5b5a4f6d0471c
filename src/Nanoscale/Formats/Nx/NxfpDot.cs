using System.Buffers;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats.Nx;

/// <summary>
/// NxFP4's generation-step product in integer arithmetic (<see cref="NibbleDot"/>, as MXFP4's): every (format, recycled
/// level) table of the codec is a set of dyadic values (E2M1's halves, E1M2's quarters, the levels 5 and 3.25 …), so
/// each becomes int8 after multiplying by its own power of two m_k; a block then contributes
/// scale/m_k · d_x · Σ table_k[code]·q. The tables are shifted by one common bias so they are unsigned (the bias
/// times the activations' block sum is subtracted exactly), and each pair of blocks gets the pair of its two tables in
/// one register. Per block before the row: the metadata word gives scale/m_k and k through two 256-entry tables
/// (gathered eight at a time: done one by one they cost twice the product itself).
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
        float[] c = ArrayPool<float>.Shared.Rent(nb + 8);
        int[] pairIndex = ArrayPool<int>.Shared.Rent(nb + 8);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (byte* w0 = scales)
            fixed (float* c0 = c)
            fixed (int* p0 = pairIndex)
            fixed (float* xs = a.Scales)
            fixed (byte* tables = _pairTables)
            {
                for (int r = 0; r < rowCount; r++)
                {
                    byte* words = w0 + (nint)r * nb, row = b0 + (nint)r * nb * 16;
                    Prepare(words, row, nb, xs, c0, p0);
                    y[r] = _wide
                        ? NibbleDot.Row<NibbleDot.WidePairTables>(row, 16, nb, c0, a, default, tables, p0, _bias)
                        : NibbleDot.Row<NibbleDot.PairTables>(row, 16, nb, c0, a, default, tables, p0, _bias);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(c);
            ArrayPool<int>.Shared.Return(pairIndex);
        }
    }

    /// <summary><see cref="DotRows"/> for several activation vectors (<c>y[v·yStride + r]</c>), each row unpacked once.</summary>
    public void DotRowsMany(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, int vectors,
        ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        int nb = cols / NxfpCodec.NxBlockSize;
        if (x.Length < vectors * cols || y.Length < (vectors - 1) * yStride + rowCount || vectors > NibbleDot.MaxVectors)
            throw new ArgumentException("spans shorter than the rows");
        var sets = NibbleDot.QuantizeMany(x, vectors, cols, evensThenOdds: true, _bias);
        float[] c = ArrayPool<float>.Shared.Rent(nb + 8);
        int[] pairIndex = ArrayPool<int>.Shared.Rent(nb + 8);
        float* ones = NibbleDot.Ones(nb + 8);
        try
        {
            fixed (byte* b0 = blocks)
            fixed (byte* w0 = scales)
            fixed (float* c0 = c)
            fixed (int* p0 = pairIndex)
            fixed (byte* tables = _pairTables)
            fixed (float* y0 = y)
            {
                for (int r = 0; r < rowCount; r++)
                {
                    byte* words = w0 + (nint)r * nb, row = b0 + (nint)r * nb * 16;
                    Prepare(words, row, nb, ones, c0, p0);
                    if (_wide)
                        NibbleDot.RowMany<NibbleDot.WidePairTables>(row, 16, nb, c0, sets, vectors, default, tables, p0, _bias, y0 + r, yStride);
                    else
                        NibbleDot.RowMany<NibbleDot.PairTables>(row, 16, nb, c0, sets, vectors, default, tables, p0, _bias, y0 + r, yStride);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(c);
            ArrayPool<int>.Shared.Return(pairIndex);
        }
    }

    /// <summary>
    /// One row's per-block factors before its product: c[j] = scale/m_k · d_x(j) (NaN for a block passed through as
    /// NaN) and, at every even j, the index of the pair of tables of blocks j and j + 1 (k_j · K + k_{j+1}; an odd last
    /// block pairs with itself). Eight words at a time: both come from 256-entry tables by gathers.
    /// </summary>
    private void Prepare(byte* words, byte* row, int nb, float* xs, float* c, int* pairIndex)
    {
        int j = 0;
        fixed (float* wordScale = _wordScale)
        fixed (int* wordConfig = _wordConfig)
        {
            if (Avx2.IsSupported)
            {
                var nan = Vector256.Create(_codec.NaNWord);
                var configs = Vector256.Create(_configs);
                for (; j + 8 <= nb; j += 8)
                {
                    var w = Avx2.ConvertToVector256Int32(words + j);
                    var scale = Avx2.GatherVector256(wordScale, w, 4);
                    (scale * Vector256.Load(xs + j)).Store(c + j);
                    var k = Avx2.GatherVector256(wordConfig, w, 4);
                    // Even lanes: k_j · K + k_{j+1} (the odd lane moved down by a 64-bit shift); odd lanes unused.
                    var next = Avx2.ShiftRightLogical(k.AsInt64(), 32).AsInt32();
                    (Avx2.MultiplyLow(k, configs) + next).Store(pairIndex + j);
                    if (Vector256.EqualsAny(w, nan))
                        for (int i = j; i < j + 8; i++) FixNaN(words, row, i, c);
                }
            }
            for (; j < nb; j++)
            {
                c[j] = wordScale[words[j]] * xs[j];
                FixNaN(words, row, j, c);
                if ((j & 1) == 0) pairIndex[j] = wordConfig[words[j]] * _configs + wordConfig[words[Math.Min(j + 1, nb - 1)]];
            }
            if ((nb & 1) == 1) pairIndex[nb - 1] = wordConfig[words[nb - 1]] * (_configs + 1);
        }
    }

    private void FixNaN(byte* words, byte* row, int j, float* c)
    {
        if (words[j] == _codec.NaNWord && IsNaNBlock(row + j * 16, _codec.NegativeZeroCode * 0x11)) c[j] = float.NaN;
    }

    /// <summary>A block passed through as NaN: every code the negative-zero code (<see cref="NxfpBlock.IsNaNBlock"/>).</summary>
    private static bool IsNaNBlock(byte* codes, int both)
    {
        for (int i = 0; i < 16; i++)
            if (codes[i] != both) return false;
        return true;
    }
}
