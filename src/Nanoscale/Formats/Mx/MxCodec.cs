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
        RoundingMode rounding = RoundingMode.NearestEven, string? spec = null)
        : base(spec ?? $"mx:{element.Name}", MxBlockSize, BlockPacking.PackedBytes(MxBlockSize, element.Bits), 1, 0)
    {
        Element = element;
        ScaleRule = scaleRule;
        Rounding = rounding;
        _doubled = MxDot.DoubledTable(element);
    }

    public ElementFormat Element { get; }

    public MxScaleRule ScaleRule { get; }

    public RoundingMode Rounding { get; }

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
    /// The generation step's product on 4-bit codes (MXFP4) without decoding rows to floats: with AVX2 in integer
    /// arithmetic on int8 activations (<see cref="MxDot"/>, llama.cpp's approach), else with the codes looked up as
    /// floats in registers (<see cref="Packed4Vector.Dot32"/>, exact up to summation order). Whole blocks only; false
    /// when no kernel applies (the caller decodes rows).
    /// </summary>
    public override bool TryDotRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, ReadOnlySpan<float> x, Span<float> y)
    {
        if (Element.Bits != 4 || cols % MxBlockSize != 0) return false;
        int nb = cols / MxBlockSize;
        if (blocks.Length < (long)rowCount * nb * BytesPerBlock || scales.Length < (long)rowCount * nb || x.Length < cols || y.Length < rowCount)
            throw new ArgumentException($"{Spec}: spans too short for {rowCount} rows of {cols}");
        ReadOnlySpan<float> scaleTable = ScaleFormat.E8M0.DecodeTable;
        if (IntegerDot && _doubled is { } table)
        {
            var scratch = MxDot.Rent(cols);
            try
            {
                MxDot.QuantizeActivations(x[..cols], scratch.Q.AsSpan(0, cols), scratch.Scales.AsSpan(0, nb));
                MxDot.DotRows(table, scaleTable, blocks, scales, rowCount, nb, scratch.Q.AsSpan(0, cols), scratch.Scales.AsSpan(0, nb), y);
            }
            finally { MxDot.Return(scratch); }
            return true;
        }
        if (!Packed4Vector.IsSupported || !System.Runtime.Intrinsics.X86.Fma.IsSupported) return false;
        var (low, high) = Packed4Vector.Load4BitTable(Element.DecodeTable);
        ref float x0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
        for (int r = 0; r < rowCount; r++)
        {
            var rowBlocks = blocks.Slice(r * nb * BytesPerBlock, nb * BytesPerBlock);
            var rowScales = scales.Slice(r * nb, nb);
            var total = Vector256<float>.Zero;
            for (int j = 0; j < nb; j++)
            {
                var sum = Packed4Vector.Dot32(low, high, rowBlocks.Slice(j * BytesPerBlock, BytesPerBlock),
                    ref System.Runtime.CompilerServices.Unsafe.Add(ref x0, j * MxBlockSize), Vector256<float>.Zero);
                total = System.Runtime.Intrinsics.X86.Fma.MultiplyAdd(sum, Vector256.Create(scaleTable[rowScales[j]]), total);
            }
            y[r] = Vector256.Sum(total);
        }
        return true;
    }

    /// <summary>Whether <see cref="TryDotRows"/> may use the int8-activation kernel (tests compare both kernels).</summary>
    internal bool IntegerDot { get; init; } = MxDot.IsSupported;

    private readonly sbyte[]? _doubled;

    protected override void DequantizeRows(ReadOnlySpan<byte> blocks, ReadOnlySpan<byte> scales, ReadOnlySpan<byte> tensorData,
        int rowCount, int cols, bool fast, Span<float> destination)
    {
        Span<byte> codes = stackalloc byte[MxBlockSize];
        var kernel = new MxKernel.Dequantizer(this, fast && Vector256.IsHardwareAccelerated, codes);
        DequantizeBlocks(ref kernel, blocks, scales, rowCount, cols, destination);
    }
}
