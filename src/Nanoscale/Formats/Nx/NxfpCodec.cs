using System.Runtime.Intrinsics;
namespace Nanoscale.Formats.Nx;

/// <summary>
/// NxFP block codec (SPEC §6): blocks of 32 elements of width <see cref="ElementBits"/>, one metadata word per block
/// holding a UExMy scale (NanoMantissa), an element-format selector (Adaptive Microexponent) and a recycled-level
/// selector (Code Recycling). docs/nxfp.md has the algorithm and the exact layouts.
/// </summary>
/// <remarks>
/// <para><b>Metadata word</b> (<see cref="MetadataBits"/> bits, stored little-endian in <see cref="BlockCodec.ScaleBytesPerBlock"/>
/// = 1 or 2 bytes, unused high bits 0): bits [0, s) = scale code (exponent field &lt;&lt; nm | mantissa field),
/// s = se + nm; bits [s, s + fb) = index of the element format in <see cref="Formats"/>; the next lb bits = index of
/// the recycled level in the level list. fb = ceil(log2 #formats), lb = ceil(log2 #levels) (0 for one choice).</para>
/// <para><b>Block</b>: 32 element codes of <see cref="ElementBits"/> bits packed LSB-first (SPEC §8). With code
/// recycling on, the negative-zero code decodes to the block's recycled level (in element-grid units) instead of −0.</para>
/// <para><b>Per block</b>: amax = max|v|; a zero block stores word 0 and +0 codes. Otherwise every candidate
/// (format f in list order, level l in list order, top T in {max_f, |L| when |L| &gt; max_f}, then the scale
/// neighbours floor and ceil of amax/T) is tried and the strictly lowest block error wins (ties keep the earlier
/// candidate). See <see cref="NxfpBlock"/> for the cast and the error.</para>
/// </remarks>
internal sealed class NxfpCodec : BlockCodec
{
    /// <summary>Elements per NxFP block (as MX).</summary>
    public const int NxBlockSize = 32;

    private readonly float[][] _decodeTables;   // [f * levelCount + l] → 2^bits floats (pinned)
    private readonly float[][] _tops;           // [f * levelCount + l] → candidate tops
    private readonly float[] _levels;           // [f * levelCount + l] → recycled level (NaN when off)

    public NxfpCodec(int elementBits, IReadOnlyList<ElementFormat> formats, int nanoMantissaBits,
        int scaleExponentBits, int scaleBias, IReadOnlyList<IReadOnlyList<float>>? levels,
        RoundingMode rounding = RoundingMode.NearestEven, string? spec = null)
        : base(spec ?? $"nxfp{elementBits}", NxBlockSize, BlockPacking.PackedBytes(NxBlockSize, Math.Clamp(elementBits, 1, 8)),
            MetadataBitsOf(scaleExponentBits, nanoMantissaBits, formats.Count, LevelCountOf(levels)) <= 8 ? 1 : 2, tensorDataBytes: 0)
    {
        if (elementBits < 3 || elementBits > 8)
            throw new ArgumentOutOfRangeException(nameof(elementBits), elementBits, "NxFP element width must be 3..8.");
        if (formats.Count == 0)
            throw new ArgumentException("NxFP needs at least one element format.", nameof(formats));
        foreach (ElementFormat f in formats)
            if (f.Bits != elementBits || f.Encoding != ElementEncoding.SignMagnitude || f.Specials != SpecialCodes.None)
                throw new ArgumentException($"{f.Name}: NxFP element formats must be {elementBits}-bit ExMy with every code finite.", nameof(formats));
        ElementBits = elementBits;
        Formats = [.. formats];
        NanoMantissaBits = nanoMantissaBits;
        ScaleExponentBits = scaleExponentBits;
        Scale = ScaleFormat.UExMy(scaleExponentBits, nanoMantissaBits, scaleBias);
        Rounding = rounding;
        LevelCount = LevelCountOf(levels);
        Recycling = levels is not null && levels.Count > 0 && levels[0].Count > 0;
        if (Recycling && levels!.Count != formats.Count)
            throw new ArgumentException("one level list per element format", nameof(levels));

        ScaleBits = scaleExponentBits + nanoMantissaBits;
        FormatSelectorBits = SelectorBits(Formats.Length);
        LevelSelectorBits = SelectorBits(LevelCount);
        MetadataBits = ScaleBits + FormatSelectorBits + LevelSelectorBits;
        if (MetadataBits > 16)
            throw new ArgumentException($"NxFP metadata word needs {MetadataBits} bits; at most 16 are stored.");

        int n = Formats.Length * LevelCount;
        _decodeTables = new float[n][];
        _tops = new float[n][];
        _levels = new float[n];
        for (int f = 0; f < Formats.Length; f++)
        for (int l = 0; l < LevelCount; l++)
        {
            ElementFormat format = Formats[f];
            float level = Recycling ? levels![f][l] : float.NaN;
            if (Recycling && (!float.IsFinite(level) || level == 0))
                throw new ArgumentException($"recycled level {level} for {format.Name} must be finite and non-zero", nameof(levels));
            var table = GC.AllocateArray<float>(1 << elementBits, pinned: true);
            format.DecodeTable.CopyTo(table);
            if (Recycling)
                table[format.NegativeZeroCode] = level;
            int k = f * LevelCount + l;
            _decodeTables[k] = table;
            _levels[k] = level;
            _tops[k] = Recycling && MathF.Abs(level) > format.Max ? [format.Max, MathF.Abs(level)] : [format.Max];
        }
        _integerDot = NxfpDot.For(this);
        _signedDot = _integerDot is null ? NxfpSignedDot.For(this) : null;
    }

    /// <summary>The integer step kernel when the tables allow it (<see cref="NxfpDot.For"/>), else null.</summary>
    private readonly NxfpDot? _integerDot;

    /// <summary>The signed-table integer kernel of the forms <see cref="NxfpDot"/> does not take (nxfp4-m16), or null.</summary>
    private readonly NxfpSignedDot? _signedDot;

    /// <summary>Element width in bits (3..8): every candidate format has it.</summary>
    public int ElementBits { get; }

    /// <summary>Adaptive Microexponent candidates, in selector order (one entry = AM off).</summary>
    public ElementFormat[] Formats { get; }

    /// <summary>NanoMantissa: mantissa bits of the shared scale.</summary>
    public int NanoMantissaBits { get; }

    public int ScaleExponentBits { get; }

    /// <summary>The UExMy scale format (exponent bits, nm mantissa bits, bias).</summary>
    public ScaleFormat Scale { get; }

    public RoundingMode Rounding { get; }

    /// <summary>True when the negative-zero code is recycled as an extra level.</summary>
    public bool Recycling { get; }

    /// <summary>Levels per format (1 when recycling is off or fixed).</summary>
    public int LevelCount { get; }

    public int ScaleBits { get; }

    public int FormatSelectorBits { get; }

    public int LevelSelectorBits { get; }

    /// <summary>Scale + selector bits per block.</summary>
    public int MetadataBits { get; }

    /// <summary>Metadata word of a block passed through as NaN (with every element code the negative-zero code).</summary>
    public int NaNWord => (1 << MetadataBits) - 1;

    internal int NegativeZeroCode => 1 << (ElementBits - 1);

    /// <summary>Decode table (element-grid units) of format <paramref name="f"/> with level <paramref name="l"/>.</summary>
    public ReadOnlySpan<float> DecodeTable(int f, int l) => _decodeTables[f * LevelCount + l];

    internal float[] DecodeTableArray(int k) => _decodeTables[k];

    /// <summary>The recycled level (element-grid units) of format f, level l; NaN when recycling is off.</summary>
    public float Level(int f, int l) => _levels[f * LevelCount + l];

    internal float[] Tops(int k) => _tops[k];

    internal int ConfigCount => _decodeTables.Length;

    /// <summary>Packs (scale code, format index, level index) into a metadata word.</summary>
    public int Word(int scaleCode, int format, int level) =>
        scaleCode | format << ScaleBits | level << (ScaleBits + FormatSelectorBits);

    /// <summary>Splits a metadata word.</summary>
    public (int ScaleCode, int Format, int Level) SplitWord(int word) =>
        (word & ((1 << ScaleBits) - 1),
         (word >> ScaleBits) & ((1 << FormatSelectorBits) - 1),
         (word >> (ScaleBits + FormatSelectorBits)) & ((1 << LevelSelectorBits) - 1));

    /// <summary>
    /// Counts blocks whose ideal scale amax/max_F (for the first format) lies outside the scale format's range, so
    /// the stored scale is clamped: (below the smallest scale, above the largest). Zero and non-finite blocks are skipped.
    /// </summary>
    public (long Below, long Above) CountClampedBlocks(ReadOnlySpan<float> source, int rowCount, int cols)
    {
        long below = 0, above = 0;
        double min = Scale.Decode(Scale.MinCode), max = Scale.Decode(Scale.MaxCode), top = Formats[0].Max;
        for (int r = 0; r < rowCount; r++)
        for (int start = 0; start < cols; start += NxBlockSize)
        {
            double amax = 0;
            foreach (float v in source.Slice(r * cols + start, Math.Min(NxBlockSize, cols - start)))
                amax = Math.Max(amax, Math.Abs(v));
            if (amax == 0 || !double.IsFinite(amax)) continue;
            if (amax < min * top) below++;
            else if (amax > max * top) above++;
        }
        return (below, above);
    }

    protected override void QuantizeReference(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales) =>
        NxfpReference.Quantize(this, source, rowCount, cols, policy, firstElementIndex, blocks, scales);

    protected override void DequantizeReference(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, Span<float> destination) =>
        NxfpReference.Dequantize(this, blocks, scales, rowCount, cols, destination);

    protected override void QuantizeRows(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, bool fast, Span<byte> blocks, Span<byte> scales)
    {
        Span<byte> codes = stackalloc byte[NxBlockSize], candidate = stackalloc byte[NxBlockSize];
        Span<float> squares = stackalloc float[NxBlockSize];
        var kernel = new NxfpKernel.Quantizer(this, policy, fast && NxfpKernel.VectorIsSupported, codes, candidate, squares);
        QuantizeBlocks(ref kernel, source, rowCount, cols, firstElementIndex, blocks, scales);
    }

    /// <summary>
    /// The generation step's product on 4-bit NxFP codes: in integers on int8 activations when the tables allow
    /// (<see cref="NxfpDot"/>, or <see cref="NxfpSignedDot"/> for the 16-bit-word forms whose tables are too wide for
    /// it); otherwise each block's metadata word picks its decode table (format ×
    /// recycled level) and scale, the 32 codes are looked up in registers and multiplied with the activations
    /// (<see cref="Packed4Vector.Dot32"/>), the scale applied once per block. Exact up to float summation order. AVX2
    /// with FMA and whole blocks; otherwise false (the caller decodes rows).
    /// </summary>
    public override bool TryDotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        if (ElementBits != 4 || cols % NxBlockSize != 0 || !NxfpKernel.VectorIsSupported || !Packed4Vector.IsSupported
            || !System.Runtime.Intrinsics.X86.Fma.IsSupported)
            return false;
        CheckDotSpans(blocks, scales, rowCount, cols, x, y);
        if (_integerDot is { } integer)
        {
            integer.DotRows(blocks, scales, rowCount, cols, x, y);
            return true;
        }
        if (_signedDot is { } signed)
        {
            signed.DotRows(blocks, scales, rowCount, cols, x, y);
            return true;
        }
        int nb = cols / NxBlockSize;
        var tables = NxfpKernel.Vector4BitTables(this);
        ReadOnlySpan<float> scaleTable = Scale.DecodeTable;
        int scaleMask = (1 << ScaleBits) - 1, formatMask = (1 << FormatSelectorBits) - 1, levelMask = (1 << LevelSelectorBits) - 1;
        int levelShift = ScaleBits + FormatSelectorBits, lastFormat = Formats.Length - 1, lastLevel = LevelCount - 1;
        Span<byte> codes = stackalloc byte[NxBlockSize];
        ref float x0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        for (int r = 0; r < rowCount; r++)
        {
            var total = Vector256<float>.Zero;
            for (int j = 0; j < nb; j++)
            {
                int index = r * nb + j, word = ReadWord(scales, index);
                float scale = scaleTable[word & scaleMask];
                int k = Math.Min((word >> ScaleBits) & formatMask, lastFormat) * LevelCount + Math.Min((word >> levelShift) & levelMask, lastLevel);
                var packed = blocks.Slice(index * BytesPerBlock, BytesPerBlock);
                if (word == NaNWord)
                {
                    BlockPacking.Unpack(packed, ElementBits, codes);
                    if (NxfpBlock.IsNaNBlock(this, word, codes)) scale = float.NaN;
                }
                var sum = Packed4Vector.Dot32(tables[k].Low, tables[k].High, packed,
                    ref System.Runtime.CompilerServices.Unsafe.Add(ref x0, j * NxBlockSize), Vector256<float>.Zero);
                total = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(sum, Vector256.Create(scale), total);
            }
            y[r] = Vector256.Sum(total);
        }
        return true;
    }

    /// <summary>A few vectors at once (a token-factory step): with the integer kernel each row is unpacked once for all
    /// of them (<see cref="NxfpDot.DotRowsMany"/>); otherwise one vector after another.</summary>
    public override bool HasDotRowsMany(int cols) => _integerDot is not null && cols % NxBlockSize == 0;

    public override bool TryDotRowsMany(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        if (_integerDot is not { } integer || cols % NxBlockSize != 0 || vectors < 1 || vectors > MaxDotVectors(cols))
            return base.TryDotRowsMany(blocks, scales, tensorData, rowCount, cols, vectors, x, y, yStride);
        CheckDotSpans(blocks, scales, rowCount, cols, x[..cols], y[..rowCount]);
        // Rows in the lanes from NibbleLanes.MinVectors on (with fewer, unpacking a group costs more than it saves).
        if (integer.HasLanes && vectors >= NibbleLanes.MinVectors) integer.DotRowsLanes(blocks, scales, rowCount, cols, vectors, x, y, yStride);
        else integer.DotRowsMany(blocks, scales, rowCount, cols, vectors, x, y, yStride);
        return true;
    }

    /// <summary>Sixteen on the lanes (<see cref="NxfpDot.DotRowsLanes"/>), else eight.</summary>
    public override int MaxDotVectors(int cols) => _integerDot is { HasLanes: true } ? NibbleLanes.MaxVectors : NibbleDot.MaxVectors;

    protected override void DequantizeRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, bool fast, Span<float> destination)
    {
        Span<byte> codes = stackalloc byte[NxBlockSize], tail = stackalloc byte[NxfpKernel.UnpackControls.TailBytes];
        var kernel = new NxfpKernel.Dequantizer(this, fast && NxfpKernel.VectorIsSupported, codes, tail);
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination);
    }

    private static int LevelCountOf(IReadOnlyList<IReadOnlyList<float>>? levels) =>
        levels is null ? 1 : levels.Count > 0 ? levels[0].Count : 1;

    private static int MetadataBitsOf(int scaleExponentBits, int nanoMantissaBits, int formatCount, int levelCount) =>
        scaleExponentBits + nanoMantissaBits + SelectorBits(formatCount) + SelectorBits(levelCount);

    private static int SelectorBits(int choices) => choices <= 1 ? 0 : 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)(choices - 1));
}
