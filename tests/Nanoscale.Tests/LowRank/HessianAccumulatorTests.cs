using MathNet.Numerics.LinearAlgebra;
using Nanoscale.LowRank;

namespace Nanoscale.Tests.LowRank;

public class HessianAccumulatorTests
{
    /// <summary>The in-place blocked accumulation equals its reference twin, MathNet's XᵀX in double, summed over calls.</summary>
    [Theory]
    [InlineData(37)]  // not a multiple of the 16-row block
    [InlineData(64)]
    public void AccumulatesTheGramMatrixOfEveryCall(int size)
    {
        var random = new Random(size);
        var accumulator = new HessianAccumulator(size);
        var reference = Matrix<double>.Build.Dense(size, size);
        long tokens = 0;
        foreach (int calls in new[] { 1, 7, 130 })
        {
            var input = new float[calls * size];
            for (int i = 0; i < input.Length; i++) input[i] = i % 11 == 0 ? 0 : (float)(random.NextDouble() * 2 - 1);
            accumulator.Add(input);
            var x = Matrix<double>.Build.Dense(calls, size, (t, c) => input[t * size + c]);
            reference += x.TransposeThisAndMultiply(x);
            tokens += calls;
        }
        var built = accumulator.Build()!;
        var expected = Hessian.FromSum(reference.ToRowMajorArray(), size, tokens);
        Assert.Equal(tokens, built.Tokens);
        Assert.Equal(expected.Scale, built.Scale, 1e-6 * expected.Scale);
        for (int i = 0; i < size; i++)
            for (int j = 0; j < size; j++)
                Assert.Equal(expected.Matrix[i, j], built.Matrix[i, j], 1e-5);
        Assert.Same(built, accumulator.Build());
        Assert.Throws<InvalidOperationException>(() => accumulator.Add(new float[size]));
    }

    [Fact]
    public void NothingAddedBuildsNothing() => Assert.Null(new HessianAccumulator(8).Build());
}
