using System.Numerics.Tensors;
using Nanoscale.Runtime;

namespace Nanoscale.Tests.Runtime;

/// <summary>The runtime's fast attention row (<see cref="Kernels.AttendRow"/>) against the generic loops it replaces
/// for generation steps.</summary>
public class KernelsTests
{
    /// <summary>Heads of 128 and 64 (whole 512-bit passes where AVX-512 is), 48 (one and a tail of 16), 8; 1, 5, 9 and 77
    /// positions; a cache row wider than the head with the head at an offset: equal to TensorPrimitives' dot / softmax /
    /// multiply-add loops up to summation order.</summary>
    [Theory]
    [InlineData(128, 9)]
    [InlineData(128, 77)]
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

    /// <summary>Three query heads sharing one cached head (grouped-query attention) give, through one call, exactly
    /// what each head gives alone (the same operations per head; the group only shares reading the rows), in every
    /// cache type, for 77 positions (nine blocks of eight and a tail) and 3 (the tail alone).</summary>
    [Theory]
    [InlineData(KvCacheType.F32, 77)]
    [InlineData(KvCacheType.F32, 3)]
    [InlineData(KvCacheType.BF16, 77)]
    [InlineData(KvCacheType.F16, 20)]
    [InlineData(KvCacheType.Q8, 77)]
    [InlineData(KvCacheType.Q4, 41)]
    public void AGroupOfHeadsEqualsEachHeadAlone(KvCacheType type, int positions)
    {
        const int headDim = 64, heads = 3;
        if (!Kernels.AttendRowApplies(headDim)) return;
        var random = new Random(positions + (int)type);
        int stride = 2 * headDim, offset = headDim, length = positions * stride;
        KvRows Rows()
        {
            var rows = KvRows.Create(type, stride);
            rows.Resize(length);
            rows.Write(0, [.. Enumerable.Range(0, length).Select(_ => (float)(random.NextDouble() * 4 - 2))]);
            return rows;
        }
        KvRows keys = Rows(), values = Rows();
        float[] queries = [.. Enumerable.Range(0, heads * headDim).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float scale = 1f / MathF.Sqrt(headDim);
        var scores = new float[heads * positions];
        var output = new float[heads * headDim];
        Kernels.AttendRows(queries, heads, keys, values, stride, offset, scale, scores, output);
        for (int h = 0; h < heads; h++)
        {
            var alone = new float[positions];
            var o = new float[headDim];
            Kernels.AttendRow(queries.AsSpan(h * headDim, headDim), keys, values, stride, offset, scale, alone, o);
            Assert.Equal(alone, scores.AsSpan(h * positions, positions).ToArray());
            Assert.Equal(o, output.AsSpan(h * headDim, headDim).ToArray());
        }
        Assert.Throws<ArgumentException>(() => Kernels.AttendRows(queries, heads, keys, values, stride, offset, scale, scores.AsSpan(1), output));
        Assert.Throws<ArgumentException>(() => Kernels.AttendRows(queries, heads, keys, values, stride, offset, scale, scores, output.AsSpan(1)));
    }

    /// <summary>The vectorised SwiGLU against its element loop: within 4 ulps (the exponentials differ by one at most)
    /// over ±20 and at the edges — exp overflowing to infinity (−100: a signed zero), underflowing (100: the gate
    /// itself), zero, NaN — for lengths that are not whole chunks of 256.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(255)]
    [InlineData(1536)]
    [InlineData(1000)]
    public void SwiGluEqualsItsReferenceTwin(int length)
    {
        var random = new Random(length);
        float[] gate = [.. Enumerable.Range(0, length).Select(_ => (float)(random.NextDouble() * 40 - 20))];
        float[] up = [.. Enumerable.Range(0, length).Select(_ => (float)(random.NextDouble() * 4 - 2))];
        float[] edges = [-100f, 100f, 0f, float.NaN, -87.5f, 88.5f];
        for (int i = 0; i < Math.Min(length, edges.Length); i++) gate[i * (length / edges.Length + 1) % length] = edges[i];
        var fast = (float[])gate.Clone();
        var plain = (float[])gate.Clone();
        Kernels.SwiGlu(fast, up);
        Kernels.SwiGluReference(plain, up);
        for (int i = 0; i < length; i++)
        {
            if (float.IsNaN(plain[i])) { Assert.True(float.IsNaN(fast[i]), $"[{i}]"); continue; }
            float ulp = MathF.BitIncrement(MathF.Abs(plain[i])) - MathF.Abs(plain[i]);
            Assert.True(MathF.Abs(fast[i] - plain[i]) <= 4 * ulp, $"[{i}] gate {gate[i]}: {fast[i]} vs {plain[i]}");
        }
        Assert.Throws<ArgumentException>(() => Kernels.SwiGlu(new float[4], new float[3]));
    }
}
