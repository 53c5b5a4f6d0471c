using CsCheck;

namespace Nanoscale.Tests.Formats;

/// <summary>
/// The fast kernels against their reference twins as a property: random shapes (short last blocks included) and values
/// drawn from every float (NaN and ±∞ passed through), narrow ranges, exact zeros of both signs and powers of two —
/// bytes and decoded bits must be the reference's, for every block format and byte-changing option. A failure shrinks to
/// a small tensor and prints the seed that reproduces it.
/// </summary>
public class KernelPropertyTests
{
    public static TheoryData<string> Specs() => KernelEquivalenceTests.Specs();

    private static readonly Gen<float> Value = Gen.Frequency(
        (3, Gen.Float),
        (3, Gen.Float[-4f, 4f]),
        (2, Gen.Float[-1e-6f, 1e-6f]),
        (1, Gen.Int[-140, 127].Select(e => MathF.ScaleB(1f, e))),
        (1, Gen.Int[0, 5].Select(i => new[] { 0f, -0f, 1.5f, -6f, 448f, 65504f }[i])));

    [Theory]
    [MemberData(nameof(Specs))]
    public void FastKernelsAgreeWithTheReferenceOnAnyTensor(string spec)
    {
        Gen.Int[1, 3].SelectMany(rows => Gen.Int[1, 130].SelectMany(cols => Value.Array[rows * cols].Select(values => (rows, cols, values))))
            .Sample(t => KernelEquivalenceTests.AssertKernelsAgree(spec, t.values, t.rows, t.cols, $"[{t.rows}×{t.cols}]"), iter: 150);
    }
}
