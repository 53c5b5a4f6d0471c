using MathNet.Numerics.LinearAlgebra;

namespace Nanoscale.LowRank;

/// <summary>
/// Accumulates <c>Σ xᵀx</c> over the input rows x of a linear layer (SPEC §11) and builds <c>H = Σ xᵀx / tokens</c>.
/// Thread-safe: products on several threads may add at once.
/// </summary>
internal sealed class HessianAccumulator(int size)
{
    private readonly Matrix<double> _sum = Matrix<double>.Build.Dense(size, size);
    private long _tokens;
    private Hessian? _built;

    /// <summary>Input features per row.</summary>
    public int Size => size;

    /// <summary>Adds the rows of <paramref name="input"/> (tokens × <see cref="Size"/>, row-major).</summary>
    public void Add(ReadOnlySpan<float> input)
    {
        int tokens = input.Length / size;
        var x = Matrix<double>.Build.Dense(tokens, size);
        for (int t = 0; t < tokens; t++)
            for (int c = 0; c < size; c++) x[t, c] = input[t * size + c];
        var gram = x.TransposeThisAndMultiply(x);
        lock (_sum)
        {
            _sum.Add(gram, _sum);
            _tokens += tokens;
        }
    }

    /// <summary>The Hessian of everything added, or null when nothing was.</summary>
    public Hessian? Build() => _tokens == 0 ? null : _built ??= Hessian.FromSum(_sum.ToRowMajorArray(), size, _tokens);
}
