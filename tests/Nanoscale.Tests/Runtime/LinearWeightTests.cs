using Nanoscale.Runtime;

namespace Nanoscale.Tests.Runtime;

public class LinearWeightTests
{
    /// <summary>A stand-in codec: decodes rows from a dense copy, to exercise the block-decoding product path.</summary>
    private sealed class CopyingWeight(float[] weights, int rows, int columns) : RowDecodedLinearWeight(rows, columns)
    {
        public override void ReadRows(int firstRow, int count, Span<float> destination) =>
            weights.AsSpan(firstRow * Columns, count * Columns).CopyTo(destination);
    }

    public static TheoryData<int, int, int> Shapes => new()
    {
        { 1, 1, 1 }, { 3, 5, 1 }, { 17, 33, 7 }, { 64, 64, 65 }, { 300, 200, 3 }, { 513, 64, 130 },
    };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void DenseAndRowDecodedMatchTheScalarReference(int rows, int columns, int tokens)
    {
        var random = new Random(rows * 1000 + columns);
        float[] w = [.. Enumerable.Range(0, rows * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        float[] x = [.. Enumerable.Range(0, tokens * columns).Select(_ => (float)random.NextDouble() * 2 - 1)];
        var expected = new float[tokens * rows];
        LinearKernels.MatMulReference(w, rows, columns, x, expected);
        foreach (var options in new[] { new RuntimeOptions { Parallelism = new(1) }, new RuntimeOptions { Parallelism = new(3), MinParallelMultiplyAdds = 0 } })
        {
            foreach (ILinearWeight weight in new ILinearWeight[] { new DenseLinearWeight(w, rows, columns), new CopyingWeight(w, rows, columns) })
            {
                var actual = new float[tokens * rows];
                weight.MatMul(x, actual, options);
                for (int i = 0; i < actual.Length; i++)
                    Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-5f * columns, $"{weight.GetType().Name} [{i}]: {expected[i]} vs {actual[i]}");
            }
        }
    }

    [Fact]
    public void RejectsMismatchedBuffers()
    {
        var weight = new DenseLinearWeight(new float[6], 2, 3);
        Assert.Throws<ArgumentException>(() => weight.MatMul(new float[4], new float[2], RuntimeOptions.Default));
        Assert.Throws<ArgumentException>(() => weight.MatMul(new float[6], new float[3], RuntimeOptions.Default));
        Assert.Throws<ArgumentException>(() => new DenseLinearWeight(new float[5], 2, 3));
    }
}
