using System.Numerics.Tensors;
using Nanoscale.Tensors;

namespace Nanoscale.LowRank;

/// <summary>A matrix rounded onto a grid: the quantizer (which holds the codes, for storing) and the values it chose.</summary>
/// <param name="Quantizer">The rounding state; <see cref="GridQuantizer.Arrays"/> gives the stored arrays.</param>
/// <param name="Values">The rounded matrix, rows × cols, row-major: exactly what the stored parts decode to.</param>
internal sealed record QuantizedMatrix(GridQuantizer Quantizer, float[] Values);

/// <summary>
/// LDLQ (SPEC §11; QuIP's name for GPTQ/OPTQ's rounding): quantize a matrix column by column, in natural order, and
/// feed each column's rounding error forward to the columns not yet quantized, weighted by H's factor, so the rounding
/// minimises the activation-aware error <c>‖(Q − A) H^{1/2}‖</c> rather than the plain one.
/// </summary>
/// <remarks>
/// With <c>H⁻¹ = UᵀU</c> (U upper triangular, <see cref="Hessian.LdlqFactor"/>): after rounding column j to
/// <c>q_j</c>, every later column t gets <c>w_t −= (w_j − q_j) · U[j,t] / U[j,j]</c>. This is GPTQ's update, which QuIP
/// shows equals LDLQ's <c>Ŵ_j = Q(W_j + (W − Ŵ)_{&lt;j} a_j)</c> with H's LDL factor. Rows are independent (the
/// feedback runs along a row), so rows are processed in parallel; the grid's scales are chosen per group as the
/// columns are reached (<see cref="GridQuantizer.BeginGroup"/>).
/// </remarks>
internal static class Ldlq
{
    /// <summary>Rounds <paramref name="a"/> (rows × cols, row-major) onto <paramref name="grid"/>; with
    /// <paramref name="hessian"/> null (or the identity) this is round-to-nearest.</summary>
    public static QuantizedMatrix Quantize(ReadOnlySpan<double> a, int rows, int cols, Hessian? hessian, QuantGrid grid,
        Parallelism parallelism = default, CancellationToken cancellationToken = default)
    {
        if (a.Length != (long)rows * cols) throw new ArgumentException($"expected {rows}×{cols} values, found {a.Length}", nameof(a));
        if (hessian is not null && hessian.Size != cols)
            throw new ArgumentException($"the Hessian is {hessian.Size}×{hessian.Size}, the matrix has {cols} columns", nameof(hessian));
        var initial = new float[a.Length];
        for (int i = 0; i < a.Length; i++) initial[i] = (float)a[i];
        var quantizer = grid.Begin(rows, cols, initial);
        var values = new float[a.Length];
        double[][]? u = hessian is null || hessian.IsIdentity ? null : hessian.LdlqFactor;
        var source = a.ToArray();
        int group = Math.Max(1, quantizer.GroupSize);
        parallelism.ForEach(rows, () => (W: new double[cols], Group: new float[group]), (row, buffers) =>
        {
            cancellationToken.ThrowIfCancellationRequested();
            var w = buffers.W;
            source.AsSpan(row * cols, cols).CopyTo(w);
            QuantizeRow(w, row, cols, u, quantizer, group, buffers.Group, values.AsSpan(row * cols, cols));
        });
        return new QuantizedMatrix(quantizer, values);
    }

    private static void QuantizeRow(double[] w, int row, int cols, double[][]? u, GridQuantizer quantizer, int group,
        float[] groupValues, Span<float> output)
    {
        for (int j = 0; j < cols; j++)
        {
            if (j % group == 0)
            {
                int length = Math.Min(group, cols - j);
                for (int t = 0; t < length; t++) groupValues[t] = (float)w[j + t];
                quantizer.BeginGroup(row, j, groupValues.AsSpan(0, length));
            }
            float q = quantizer.Round(row, j, w[j]);
            output[j] = q;
            if (u is null || j + 1 == cols) continue;
            double[] uj = u[j];
            double e = (w[j] - q) / uj[j];
            if (e == 0) continue;
            var rest = w.AsSpan(j + 1);
            TensorPrimitives.MultiplyAdd<double>(uj.AsSpan(j + 1), -e, rest, rest);
        }
    }
}
