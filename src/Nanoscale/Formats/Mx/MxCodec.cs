using System.Runtime.Intrinsics;

namespace Nanoscale.Formats.Mx;

/// <summary>
/// OCP Microscaling block codec (SPEC §4): blocks of 32 elements of <see cref="Element"/> sharing one E8M0 scale 2^X.
/// Covers MXFP8 (E4M3/E5M2), MXFP6 (E3M2/E2M3), MXFP4 (E2M1) and MXINTn.
/// </summary>
/// <remarks>
/// Per block: amax = max|v|; a zero block stores scale code 0x00 and +0 codes. X follows <see cref="ScaleRule"/>,
/// clamped to [−127, 127]; each v·2^−X is cast to the element format (nearest, ties per <see cref="Rounding"/>,
/// saturating). Decoding is <c>decode(code)·2^X</c> in float. A block holding NaN/Inf either throws
/// (<see cref="NonFinitePolicy.Throw"/>) or stores scale 0xFF (NaN) with zero codes.
/// </remarks>
internal sealed class MxCodec : BlockCodec
{
    /// <summary>Elements per MX block.</summary>
    public const int MxBlockSize = 32;

    public MxCodec(ElementFormat element, MxScaleRule scaleRule = MxScaleRule.Floor,
        RoundingMode rounding = RoundingMode.NearestEven, string? spec = null, bool signedZero = true)
        : base(spec ?? $"mx:{element.Name}", MxBlockSize, BlockPacking.PackedBytes(MxBlockSize, element.Bits), 1, 0)
    {
        Element = element;
        ScaleRule = scaleRule;
        Rounding = rounding;
        SignedZero = signedZero;
        _biased = MxDot.DoubledTable(element) is { } doubled ? MxDot.Biased(doubled) : null;
        _int8Step = element.Bits == 8 && element.Encoding == ElementEncoding.TwosComplement ? element.Decode(1) : null;
        _int6 = _biased is null && _int8Step is null ? Mx6IntDot.For(element) : null;
        _widened = _biased is null && _int8Step is null && _int6 is null ? MxFloatDot.For(element) : null;
        _dequantizer = element.Bits == 4 ? null : _widened ?? MxFloatDot.For(element);
    }

    public ElementFormat Element { get; }

    public MxScaleRule ScaleRule { get; }

    public RoundingMode Rounding { get; }

    /// <summary>A negative value that rounds to zero is stored as −0 (the OCP reference; <c>zero=signed</c>, the
    /// default) or as +0 (<c>zero=positive</c>). Integer elements have no −0.</summary>
    public bool SignedZero { get; }

    /// <summary>Always <see cref="ScaleFormat.E8M0"/>.</summary>
    public ScaleFormat ScaleFormat => ScaleFormat.E8M0;

    protected override void QuantizeReference(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, Span<byte> blocks, Span<byte> scales) =>
        MxReference.Quantize(this, source, rowCount, cols, policy, firstElementIndex, blocks, scales);

    protected override void DequantizeReference(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, Span<float> destination) =>
        MxReference.Dequantize(this, blocks, scales, rowCount, cols, destination);

    protected override void QuantizeRows(ReadOnlySpan<float> source, int rowCount, int cols, ReadOnlySpan<byte> tensorData,
        NonFinitePolicy policy, long firstElementIndex, bool fast, Span<byte> blocks, Span<byte> scales)
    {
        Span<byte> codes = stackalloc byte[MxBlockSize];
        var kernel = new MxKernel.Quantizer(this, policy, fast && Vector256.IsHardwareAccelerated, codes);
        QuantizeBlocks(ref kernel, source, rowCount, cols, firstElementIndex, blocks, scales);
    }

    /// <summary>
    /// The generation step's product on the codes without decoding rows to floats: MXFP4 and MXINT8 in integer
    /// arithmetic on int8 activations (<see cref="MxDot"/>, <see cref="Int8Dot"/>: llama.cpp's approach, MXINT8 as its
    /// Q8_0; MXFP6-E2M3 too, its values ×8 being int8: <see cref="Mx6IntDot"/>), every other element format widened to floats in registers (<see cref="MxFloatDot"/>). AVX2 and whole blocks only; otherwise false (the caller decodes rows, which
    /// is also the exact path <c>RuntimeOptions.FusedKernels = false</c> selects).
    /// </summary>
    public override bool TryDotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        if (cols % MxBlockSize != 0 || !MxDot.IsSupported) return false;
        if (_int8Step is float step)
        {
            CheckDotSpans(blocks, scales, rowCount, cols, x, y);
            Int8Dot.Rows(blocks, scales, ScaleFormat.E8M0.DecodeTable, step, rowCount, cols / MxBlockSize, x, y);
            return true;
        }
        if (_int6 is { } int6)
        {
            CheckDotSpans(blocks, scales, rowCount, cols, x, y);
            int6.DotRows(blocks, scales, rowCount, cols, x, y);
            return true;
        }
        if (_widened is { } widened)
        {
            CheckDotSpans(blocks, scales, rowCount, cols, x, y);
            widened.DotRows(blocks, scales, rowCount, cols, x, y);
            return true;
        }
        if (_biased is not { } biased) return false;
        CheckDotSpans(blocks, scales, rowCount, cols, x, y);
        MxDot.DotRows(biased, ScaleFormat.E8M0.DecodeTable, blocks, scales, rowCount, cols / MxBlockSize, x[..cols], y);
        return true;
    }

    /// <summary>MXFP4 for a few vectors at once (a token-factory step, a prompt window): each row's codes unpacked once
    /// for all of them (<see cref="MxDot.DotRowsMany"/>; from <see cref="NibbleLanes.MinVectorsOneTable"/> vectors on eight rows
    /// at once, <see cref="MxDot.DotRowsLanes"/>); MXFP6-E2M3 on the same lanes (<see cref="Mx6IntDot.DotRowsLanes"/>);
    /// other element formats one vector after another.</summary>
    /// <remarks>Not MXINT8: its several-vector kernel (<see cref="Int8Dot.RowsMany"/>) serves steps of a few sequences,
    /// while windows and steps of eight or more run faster decoded to floats through the panel kernel (on AVX2 the sign
    /// trick's chain per 32 products costs about what float FMAs do: <c>Nanoscale.Benchmarks vnni-peak</c>).</remarks>
    public override bool HasDotRowsMany(int cols) =>
        (_biased is not null || (_int6 is not null && NibbleLanes.IsSupported)) && cols % MxBlockSize == 0 && MxDot.IsSupported;

    /// <summary>Sixteen on the lanes (<see cref="MxDot.DotRowsLanes"/>: every row group unpacked once for all of them)
    /// and for MXINT8 (<see cref="Int8Dot.RowsMany"/>), else eight.</summary>
    public override int MaxDotVectors(int cols) =>
        _int8Step is not null ? Int8Dot.MaxVectors : NibbleLanes.IsSupported ? NibbleLanes.MaxVectors : NibbleDot.MaxVectors;

    public override bool TryDotRowsMany(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        // MXINT8: two rows × four vectors a pass on the int8 codes (Int8Dot.RowsMany), as GGUF's Q8_0.
        if (_int8Step is float step && cols % MxBlockSize == 0 && MxDot.IsSupported && vectors >= 1 && vectors <= Int8Dot.MaxVectors)
        {
            CheckDotSpans(blocks, scales, rowCount, cols, x[..cols], y[..rowCount]);
            Int8RowsMany(blocks, scales, step, rowCount, cols, vectors, x, y, yStride);
            return true;
        }
        // MXFP6-E2M3 on the lanes from NibbleLanes.MinVectors on (Mx6IntDot.DotRowsLanes); fewer, its one-token kernel per vector.
        if (_int6 is { } int6 && cols % MxBlockSize == 0 && MxDot.IsSupported && NibbleLanes.IsSupported
            && vectors >= NibbleLanes.MinVectors && vectors <= NibbleLanes.MaxVectors)
        {
            CheckDotSpans(blocks, scales, rowCount, cols, x[..cols], y[..rowCount]);
            int6.DotRowsLanes(blocks, scales, rowCount, cols, vectors, x, y, yStride);
            return true;
        }
        if (_biased is not { } biased || cols % MxBlockSize != 0 || !MxDot.IsSupported || vectors < 1 || vectors > MaxDotVectors(cols))
            return base.TryDotRowsMany(blocks, scales, tensorData, rowCount, cols, vectors, x, y, yStride);
        CheckDotSpans(blocks, scales, rowCount, cols, x[..cols], y[..rowCount]);
        // Rows in the lanes from NibbleLanes.MinVectorsOneTable on (with fewer, unpacking a group costs more than it saves).
        if (NibbleLanes.IsSupported && vectors >= NibbleLanes.MinVectorsOneTable)
            MxDot.DotRowsLanes(biased, ScaleFormat.E8M0.DecodeTable, blocks, scales, rowCount, cols / MxBlockSize, vectors, x, y, yStride);
        else
            MxDot.DotRowsMany(biased, ScaleFormat.E8M0.DecodeTable, blocks, scales, rowCount, cols / MxBlockSize, vectors, x, y, yStride);
        return true;
    }

    /// <summary>MXINT8 rows for several vectors: each block's factor 2^X · step (NaN for a NaN scale) first, then
    /// <see cref="Int8Dot.RowsMany"/> on the codes.</summary>
    private static unsafe void Int8RowsMany(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, float step, int rowCount, int cols,
        int vectors, ReadOnlySpan<float> x, Span<float> y, int yStride)
    {
        int nb = cols / MxBlockSize;
        if (x.Length < vectors * cols || y.Length < (vectors - 1) * yStride + rowCount) throw new ArgumentException("spans shorter than the rows");
        var a = Int8Dot.Scratch;
        a.Set(x, vectors, cols);
        float[] factors = System.Buffers.ArrayPool<float>.Shared.Rent(rowCount * nb);
        try
        {
            var table = ScaleFormat.E8M0.DecodeTable;
            for (int i = 0; i < rowCount * nb; i++) factors[i] = table[scales[i]] * step;
            fixed (byte* b0 = blocks)
            fixed (float* f0 = factors)
            fixed (float* y0 = y)
                Int8Dot.RowsMany(b0, (nint)cols, MxBlockSize, f0, rowCount, nb, a, y0, yStride);
        }
        finally { System.Buffers.ArrayPool<float>.Shared.Return(factors); }
    }

    /// <summary>The element format's values × 2 as unsigned int8 (plus the bias, −min) when they all are integers
    /// there (E2M1), else null: the integer kernel's table (<see cref="MxDot"/>).</summary>
    private readonly (sbyte[] Table, int Bias)? _biased;

    /// <summary>MXINT8's step (2^−6) when the elements are 8-bit two's complement: the int8 kernel (<see cref="Int8Dot"/>).</summary>
    private readonly float? _int8Step;

    /// <summary>The float kernel of every other element format (null for E2M1 and INT8, which have integer ones).</summary>
    private readonly MxFloatDot? _widened;
    private readonly Mx6IntDot? _int6;

    /// <summary>The widening that decodes rows of the 2- to 8-bit elements other than FP4 (null where none applies).</summary>
    private readonly MxFloatDot? _dequantizer;

    protected override void DequantizeRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, bool fast, Span<float> destination)
    {
        // Every element but FP4 (which has its own lookup) widened in registers (MxFloatDot.Dequantize: the reference's bits).
        if (fast && MxFloatDot.CanDequantize && _dequantizer is { } widening && cols % MxBlockSize == 0)
        {
            widening.Dequantize(blocks, scales, rowCount * (cols / MxBlockSize), destination);
            return;
        }
        Span<byte> codes = stackalloc byte[MxBlockSize];
        var kernel = new MxKernel.Dequantizer(this, fast && Vector256.IsHardwareAccelerated, codes);
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination);
    }
}
