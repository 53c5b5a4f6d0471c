using System.Numerics.Tensors;
using Nanoscale.Runtime;

namespace Nanoscale.Tests.Runtime;

/// <summary>The runtime's fast attention row (<see cref="Kernels.AttendRow"/>) against the generic loops it replaces
/// for generation steps.</summary>
public class KernelsTests
{
    /// <summary>Heads of 64 (two whole groups of 32), 48 (one and a tail of 16), 8; 1, 5 and 77 positions; a cache
    /// row wider than the head with the head at an offset: equal to TensorPrimitives' dot / softmax / multiply-add loops
    /// up to summation order.</summary>
    [Theory]
    [InlineData(64, 1)]
    [InlineData(64, 77)]
    [InlineData(48, 5)]
    [InlineData(8, 33)]
    public void AttendRowEqualsTheGenericLoops(int headDim, int positions)
    {
        if (!Kernels.AttendRowApplies(headDim)) return; // no AVX2 here: the generic loops run
        var random = new Random(headDim * positions);
        int stride = 3 * headDim, offset = headDim;
        float[] keys = [.. Enumerable.Range(0, positions * stride).Select(_ => (float)(random.NextDouble() * 4 - 2))];
        float[] values = [.. Enumerable.Range(0, positions * stride).Select(_ => (float)(random.NextDouble() * 4 - 2))];
        float[] query = [.. Enumerable.Range(0, headDim).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float scale = 1f / MathF.Sqrt(headDim);

        var expectedScores = new float[positions];
        for (int p = 0; p < positions; p++) expectedScores[p] = TensorPrimitives.Dot(query, keys.AsSpan(p * stride + offset, headDim)) * scale;
        Kernels.Softmax(expectedScores);
        var expected = new float[headDim];
        for (int p = 0; p < positions; p++) TensorPrimitives.MultiplyAdd(values.AsSpan(p * stride + offset, headDim), expectedScores[p], expected, expected);

        var scores = new float[positions];
        var output = new float[headDim];
        Kernels.AttendRow(query, keys, values, stride, offset, scale, scores, output);
        for (int p = 0; p < positions; p++) Assert.Equal(expectedScores[p], scores[p], 1e-6f);
        for (int d = 0; d < headDim; d++) Assert.Equal(expected[d], output[d], 1e-5f);
        Assert.Throws<ArgumentException>(() => Kernels.AttendRow(query, keys.AsSpan(0, (positions - 1) * stride + offset + headDim - 1), values, stride, offset, scale, scores, output));
    }
}
