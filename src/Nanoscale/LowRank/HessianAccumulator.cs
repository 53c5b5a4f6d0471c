using System.Numerics.Tensors;
using Nanoscale.Tensors;

namespace Nanoscale.LowRank;

/// <summary>
/// Accumulates <c>Σ xᵀx</c> over the input rows x of a linear layer (SPEC §11) and builds <c>H = Σ xᵀx / tokens</c>.
/// Thread-safe: products on several threads may add at once.
/// </summary>
/// <remarks>
/// The sum is updated in place, a block of 16 rows of <c>xᵀx</c> at a time over the threads (each block's products
/// summed in float for one call, then added to the double sum), so memory stays at the one n × n sum: at n = 8192 (a
/// 1B model's down projection) 512 MB, where a gram matrix per call and its copies took several times that. Built
/// once; the sum is released when the Hessian is built.
/// </remarks>
internal sealed class HessianAccumulator(int size)
{
    private const int RowBlock = 16;
    private readonly object _gate = new();
    private double[]? _sum = new double[(long)size * size];
    private long _tokens;
    private Hessian? _built;

    /// <summary>Input features per row.</summary>
    public int Size => size;

    /// <summary>Adds the rows of <paramref name="input"/> (tokens × <see cref="Size"/>, row-major).</summary>
    public void Add(ReadOnlySpan<float> input)
    {
        int n = size, tokens = input.Length / n;
        if (tokens == 0) return;
        var x = input[..(tokens * n)].ToArray();
        lock (_gate)
        {
            var sum = _sum ?? throw new InvalidOperationException("the Hessian was already built; nothing can be added");
            int blocks = (n + RowBlock - 1) / RowBlock;
            Parallelism.AllCores.ForEach(blocks, () => new float[RowBlock * n], (block, acc) =>
            {
                int first = block * RowBlock, rows = Math.Min(RowBlock, n - first);
                acc.AsSpan(0, rows * n).Clear();
                for (int t = 0; t < tokens; t++)
                {
                    var row = x.AsSpan(t * n, n);
                    for (int k = 0; k < rows; k++)
                    {
                        float xi = row[first + k];
                        if (xi != 0) TensorPrimitives.MultiplyAdd(row, xi, acc.AsSpan(k * n, n), acc.AsSpan(k * n, n));
                    }
                }
                for (int k = 0; k < rows; k++)
                {
                    var target = sum.AsSpan((first + k) * n, n);
                    var source = acc.AsSpan(k * n, n);
                    for (int j = 0; j < n; j++) target[j] += source[j];
                }
            });
            _tokens += tokens;
        }
    }

    /// <summary>Builds the Hessian, hands it over and keeps nothing (a cache writer's one-at-a-time path): the
    /// accumulator holds neither the sum nor the Hessian afterwards.</summary>
    public Hessian? TakeBuilt()
    {
        lock (_gate)
        {
            var built = Build();
            _built = null;
            return built;
        }
    }

    /// <summary>The Hessian of everything added, or null when nothing was.</summary>
    public Hessian? Build()
    {
        lock (_gate)
        {
            if (_built is not null || _tokens == 0) return _built;
            if (_sum is null) throw new InvalidOperationException("the Hessian was already handed over (TakeBuilt)");
            _built = Hessian.FromSum(_sum, size, _tokens);
            _sum = null;
            return _built;
        }
    }
}
