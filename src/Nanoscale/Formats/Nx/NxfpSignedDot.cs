using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanoscale.Formats.Nx;

/// <summary>
/// The generation-step product of the 4-bit NxFP forms that <see cref="NxfpDot"/> cannot take (<c>nxfp4-m16</c> and the
/// other 16-bit-word forms with E3M0: their tables × m_k span −64..96, too wide for one unsigned biased int8 table), in
/// integers with signed tables and the sign trick, as Q8_0's kernel (<see cref="Int8Dot"/>): each table × its power of
/// two m_k is int8; per block, the metadata word gives the table k and scale/m_k, the 32 codes are looked up as signed
/// int8 (even elements from the low nibbles, odd from the high, against activations quantized evens then odds), and
/// Σ |w|·sign(q, w) is summed in integers (<see cref="Int8Dot.BlockProducts"/>: pairs at most 96·127·2, no saturation),
/// converted and multiplied-added with scale/m_k · d_x.
/// </summary>
/// <remarks>Exact in the weights; the activations carry int8 rounding (the bound of <c>FusedDotTests</c>). A block
/// passed through as NaN (the NaN word, every code −0) makes its row NaN, as decoding does. Each row is one chain of
/// multiply-adds over its blocks, summed as <see cref="Int8Dot"/>'s several-vector kernel sums its lanes, so
/// <see cref="DotRowsReference"/> gives the same bits.</remarks>
internal sealed unsafe class NxfpSignedDot
{
    private readonly NxfpCodec _codec;
    private readonly sbyte[] _tables;   // table k at 16k: value × m_k
    private readonly float[] _inverse;  // 1 / m_k
    private readonly int _scaleMask, _formatMask, _levelMask, _levelShift, _lastFormat, _lastLevel;
    private readonly int _wordBytes;    // the metadata word's bytes per block (1 or 2, little-endian)
    private readonly int[] _configBySelector;     // the word's bits above the scale code → k
    private readonly float[] _inverseBySelector;  // → 1 / m_k

    private NxfpSignedDot(NxfpCodec codec, sbyte[] tables, float[] inverse)
    {
        _codec = codec;
        _tables = tables;
        _inverse = inverse;
        _scaleMask = (1 << codec.ScaleBits) - 1;
        _formatMask = (1 << codec.FormatSelectorBits) - 1;
        _levelMask = (1 << codec.LevelSelectorBits) - 1;
        _levelShift = codec.ScaleBits + codec.FormatSelectorBits;
        _lastFormat = codec.Formats.Length - 1;
        _lastLevel = codec.LevelCount - 1;
        _wordBytes = codec.ScaleBytesPerBlock;
        int selectors = 1 << (codec.MetadataBits - codec.ScaleBits);
        _configBySelector = new int[selectors];
        _inverseBySelector = new float[selectors];
        for (int selector = 0; selector < selectors; selector++)
        {
            int k = Config(selector << codec.ScaleBits);
            (_configBySelector[selector], _inverseBySelector[selector]) = (k, inverse[k]);
        }
    }

    /// <summary>The table number a metadata word selects (format × recycled level; out-of-range fields clamped as the
    /// decoder clamps them).</summary>
    private int Config(int word) =>
        Math.Min((word >> _codec.ScaleBits) & _formatMask, _lastFormat) * _codec.LevelCount + Math.Min((word >> _levelShift) & _levelMask, _lastLevel);

    public static bool IsSupported => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>The kernel of <paramref name="codec"/>, or null when an element is not 4 bits or a table × its smallest
    /// power of two making it integral leaves int8.</summary>
    public static NxfpSignedDot? For(NxfpCodec codec)
    {
        if (codec.ElementBits != 4 || codec.ScaleBytesPerBlock is not (1 or 2) || codec.Scale.DecodeTable.Length < 1 << codec.ScaleBits
            || !IsSupported) return null;
        var tables = new sbyte[codec.ConfigCount * 16];
        var inverse = new float[codec.ConfigCount];
        for (int k = 0; k < codec.ConfigCount; k++)
        {
            var values = codec.DecodeTableArray(k);
            if (values.Length != 16) return null;
            int shift = Enumerable.Range(0, 8).FirstOrDefault(s => values.All(v => Integral(v * (1 << s))), -1);
            if (shift < 0) return null;
            for (int i = 0; i < 16; i++) tables[16 * k + i] = (sbyte)(int)(values[i] * (1 << shift));
            inverse[k] = 1f / (1 << shift);
        }
        return new NxfpSignedDot(codec, tables, inverse);
    }

    private static bool Integral(float v) => float.IsFinite(v) && v == MathF.Round(v) && v is >= -127 and <= 127;

    /// <summary>Block j's table number and factor scale/m_k (NaN for a block passed through as NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private (int K, float Factor) Block(int word, ReadOnlySpan<byte> codes, ReadOnlySpan<float> scaleTable)
    {
        int k = Config(word);
        float factor = scaleTable[word & _scaleMask] * _inverse[k];
        if (NxfpBlock.IsPackedNaNBlock(_codec, word, codes)) factor = float.NaN;
        return (k, factor);
    }

    /// <summary>Block <paramref name="index"/>'s metadata word.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Word(ReadOnlySpan<byte> scales, int index) =>
        _wordBytes == 1 ? scales[index] : scales[2 * index] | scales[2 * index + 1] << 8;

    /// <summary>y[r] = row r · x over <paramref name="rowCount"/> rows of whole 32-element blocks (spans checked by the
    /// caller).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void DotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        int nb = cols / NxfpCodec.NxBlockSize;
        if (blocks.Length < (long)rowCount * nb * 16 || scales.Length < (long)rowCount * nb * _wordBytes || x.Length < cols || y.Length < rowCount)
            throw new ArgumentException("spans shorter than the rows");
        var (q, qs) = Quantized(x[..cols]);
        var nibble = Vector128.Create((byte)0x0F);
        var ones = Vector256.Create((short)1);
        bool vnni = AvxVnni.IsSupported;
        // The word's bits above the metadata (bit 15 of nxfp4-m16's) are ignored, as the decoder ignores them.
        int scaleBits = _codec.ScaleBits, scaleMask = _scaleMask, nanWord = _codec.NaNWord, wordBytes = _wordBytes;
        int selectorMask = _configBySelector.Length - 1;
        fixed (byte* b0 = blocks)
        fixed (byte* w0 = scales)
        fixed (sbyte* t0 = _tables)
        fixed (sbyte* q0 = q)
        fixed (float* qs0 = qs)
        fixed (float* st = _codec.Scale.DecodeTable)
        fixed (int* configs = _configBySelector)
        fixed (float* inverse = _inverseBySelector)
        {
            for (int r = 0; r < rowCount; r++)
            {
                var total = Vector256<float>.Zero;
                bool nanWords = false;
                for (int j = 0; j < nb; j++)
                {
                    nint index = (nint)r * nb + j;
                    int word = wordBytes == 1 ? w0[index] : Unsafe.ReadUnaligned<ushort>(w0 + 2 * index);
                    int selector = (word >> scaleBits) & selectorMask;
                    float factor = st[word & scaleMask] * inverse[selector];
                    nanWords |= word == nanWord;
                    byte* packed = b0 + index * 16;
                    var codes = Vector128.Load(packed);
                    var table = Vector128.Load(t0 + 16 * configs[selector]);
                    var w = Vector256.Create(Ssse3.Shuffle(table, (codes & nibble).AsSByte()),
                        Ssse3.Shuffle(table, (Vector128.ShiftRightLogical(codes.AsUInt16(), 4).AsByte() & nibble).AsSByte()));
                    var activations = Vector256.Load(q0 + j * 32);
                    var sums = Int8Dot.BlockProducts(Avx2.Abs(w), Avx2.Sign(activations, w), vnni, ones);
                    total = Fma.MultiplyAdd(Avx.ConvertToVector256Single(sums), Vector256.Create(factor * qs0[j]), total);
                }
                y[r] = Int8Dot.SumLanes(total);
                // A block passed through as NaN makes the row NaN: checked after the loop, only in rows with the NaN
                // word (a call inside the loop would make the JIT keep the running sum in memory).
                if (nanWords && HasNaNBlock(w0, b0, (nint)r * nb, nb)) y[r] = float.NaN;
            }
        }
    }

    /// <summary>Whether one of the <paramref name="nb"/> blocks from <paramref name="first"/> is passed through as NaN.</summary>
    private bool HasNaNBlock(byte* words, byte* blocks, nint first, int nb)
    {
        for (int j = 0; j < nb; j++)
        {
            nint index = first + j;
            int word = _wordBytes == 1 ? words[index] : Unsafe.ReadUnaligned<ushort>(words + 2 * index);
            if (NxfpBlock.IsPackedNaNBlock(_codec, word, new ReadOnlySpan<byte>(blocks + index * 16, 16))) return true;
        }
        return false;
    }

    /// <summary>Scalar twin of <see cref="DotRows"/> on the same quantized activations: the same integers and the same
    /// float operations in the same order.</summary>
    public void DotRowsReference(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        int nb = cols / NxfpCodec.NxBlockSize;
        var (q, qs) = Quantized(x[..cols]);
        ReadOnlySpan<float> scaleTable = _codec.Scale.DecodeTable;
        Span<int> values = stackalloc int[32];
        Span<float> lanes = stackalloc float[8];
        for (int r = 0; r < rowCount; r++)
        {
            lanes.Clear();
            for (int j = 0; j < nb; j++)
            {
                int index = r * nb + j, word = Word(scales, index);
                var packed = blocks.Slice(index * 16, 16);
                var (k, factor) = Block(word, packed, scaleTable);
                for (int i = 0; i < 16; i++)
                {
                    values[i] = _tables[16 * k + (packed[i] & 0x0F)];      // element 2i
                    values[16 + i] = _tables[16 * k + (packed[i] >> 4)];   // element 2i + 1
                }
                float c = factor * qs[j];
                for (int l = 0; l < 8; l++)
                {
                    int sum = 0;
                    for (int i = 0; i < 4; i++) sum += values[4 * l + i] * q[j * 32 + 4 * l + i];
                    lanes[l] = MathF.FusedMultiplyAdd(sum, c, lanes[l]);
                }
            }
            y[r] = (lanes[0] + lanes[4] + (lanes[2] + lanes[6])) + (lanes[1] + lanes[5] + (lanes[3] + lanes[7]));
        }
    }

    /// <summary>This thread's activations quantized per 32, evens then odds (as the codes' low and high nibbles hold
    /// them): <see cref="Int8Dot.Vectors"/>, kept while the same x comes again (a product's tiles on one thread share it).</summary>
    private static (sbyte[] Q, float[] Scales) Quantized(ReadOnlySpan<float> x)
    {
        var a = Int8Dot.Scratch;
        a.Set(x, 1, x.Length, evensThenOdds: true);
        return (a.Q, a.Scales);
    }
}
