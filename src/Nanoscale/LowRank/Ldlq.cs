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
/// <para>With <c>H⁻¹ = UᵀU</c> (U upper triangular, <see cref="Hessian.LdlqFactor"/>): after rounding column j to
/// <c>q_j</c>, every later column t gets <c>w_t −= (w_j − q_j) · U[j,t] / U[j,j]</c>. This is GPTQ's update, which QuIP
/// shows equals LDLQ's <c>Ŵ_j = Q(W_j + (W − Ŵ)_{&lt;j} a_j)</c> with H's LDL factor. Rows are independent (the
/// feedback runs along a row), so rows are processed in parallel; the grid's scales are chosen per group as the
/// columns are reached (<see cref="GridQuantizer.BeginGroup"/>).</para>
/// <para><b>Blocked (GPTQ's lazy batch update)</b>: columns go in blocks of <see cref="BlockColumns"/> (a whole number
/// of the grid's groups). Inside a block each row rounds its columns one by one and feeds the error forward to the
/// block's later columns only, recording <c>e_j = (w_j − q_j)/U[j,j]</c>; after the block, all rows' errors reach every
/// later column at once, <c>W[:, end:] −= E · U[block, end:]</c>, one matrix product (<see cref="DenseAlgebra.Gemm"/>:
/// OpenBLAS when present). The same arithmetic as the column-by-column update, summed in another order, at matrix-
/// product speed: U is read once per block instead of once per row. A group that starts inside a block and runs past
/// its end (only grids whose group is wider than the block, such as a scale per row) is handed its values with the
/// block's pending errors applied, so the scale sees exactly what the one-column update would show it.</para>
/// <para><b>Vector grids</b> (E8: <see cref="GridQuantizer.VectorSize"/> 8; QuIP#'s block LDLQ): the vector's columns
/// are rounded together, to the nearest codebook point of the values they hold when LDLQ reaches the vector's first
/// column, and their errors then go forward as a block. Going on column by column with the point fixed does exactly
/// that: within the vector, <c>e_k = (w_k − q_k)/U[k,k]</c> with <c>w_k</c> already fed by the vector's earlier
/// errors is the forward substitution of <c>E·U_BB = W_B − Q_B</c>, and the later columns receive
/// <c>E·U_{B,later}</c> — the optimal joint update (the inverse Hessian of the columns left, restricted to B, is
/// <c>U_BBᵀU_BB</c>), which for one column is GPTQ's.</para>
/// </remarks>
internal static class Ldlq
{
    /// <summary>Columns per block of the lazy batch update (GPTQ uses 128).</summary>
    public const int BlockColumns = 128;

    /// <summary>Rounds <paramref name="a"/> (rows × cols, row-major) onto <paramref name="grid"/>; with
    /// <paramref name="hessian"/> null (or the identity) this is round-to-nearest. <paramref name="native"/> false keeps
    /// the block products on managed code (the tests' twin of OpenBLAS). <paramref name="actOrder"/>: GPTQ's act-order,
    /// columns in descending order of H's diagonal (the inputs with the most energy first, while the most later columns
    /// remain to absorb their error), moved a whole group at a time so each group's scale is still chosen from its
    /// values when LDLQ reaches it (single columns for casts and for grids with one scale per row, whose scale is chosen
    /// at the start from the whole row). The stored codes keep their natural positions: only the rounding order
    /// changes.</summary>
    public static QuantizedMatrix Quantize(ReadOnlySpan<double> a, int rows, int cols, Hessian? hessian, QuantGrid grid,
        Parallelism parallelism = default, CancellationToken cancellationToken = default, bool native = true, bool actOrder = false)
    {
        if (a.Length != (long)rows * cols) throw new ArgumentException($"expected {rows}×{cols} values, found {a.Length}", nameof(a));
        if (hessian is not null && hessian.Size != cols)
            throw new ArgumentException($"the Hessian is {hessian.Size}×{hessian.Size}, the matrix has {cols} columns", nameof(hessian));
        var initial = new float[a.Length];
        for (int i = 0; i < a.Length; i++) initial[i] = (float)a[i];
        var quantizer = grid.Begin(rows, cols, initial);
        var values = new float[a.Length];
        var w = a.ToArray();
        int group = Math.Max(1, quantizer.GroupSize), vector = Math.Max(1, quantizer.VectorSize);
        if (vector > 1 && group % vector != 0)
            throw new ArgumentException($"{grid.Spec}: groups of {group} columns are not whole vectors of {vector}", nameof(grid));
        if (vector > 1 && actOrder && group >= cols)
            throw new ArgumentException($"{grid.Spec}: act-order moves single columns of a matrix narrower than one group, which would split its vectors of {vector}", nameof(actOrder));
        if (hessian is null || hessian.IsIdentity)
        {
            parallelism.ForEach(rows, () => new float[Math.Min(group, cols)], (row, groupValues) =>
            {
                cancellationToken.ThrowIfCancellationRequested();
                var r = w.AsSpan(row * cols, cols);
                var output = values.AsSpan(row * cols, cols);
                for (int j = 0; j < cols; j++)
                {
                    if (j % group == 0)
                    {
                        int length = Math.Min(group, cols - j);
                        for (int t = 0; t < length; t++) groupValues[t] = (float)r[j + t];
                        quantizer.BeginGroup(row, j, groupValues.AsSpan(0, length));
                    }
                    if (vector > 1 && j % vector == 0)
                    {
                        int length = Math.Min(vector, cols - j);
                        for (int t = 0; t < length; t++) groupValues[t] = (float)r[j + t];
                        quantizer.BeginVector(row, j, groupValues.AsSpan(0, length));
                    }
                    output[j] = quantizer.Round(row, j, r[j]);
                }
            });
            return new QuantizedMatrix(quantizer, values);
        }

        // Positions → columns: the natural order, or act-order's.
        int[]? order = actOrder ? ActOrder(hessian, cols, group) : null;
        double[] u = order is null ? hessian.LdlqFactor : hessian.Permuted(order).ComputeLdlqFactor(native);
        if (order is not null)
        {
            // w in position space: column order[p] of each row at position p.
            var natural = w;
            w = new double[natural.Length];
            parallelism.For(rows, row =>
            {
                for (int p = 0; p < cols; p++) w[(long)row * cols + p] = natural[(long)row * cols + order[p]];
            });
        }
        int block = group <= BlockColumns ? group * (BlockColumns / group) : BlockColumns;
        var errors = new double[(long)rows * block];
        for (int j0 = 0; j0 < cols; j0 += block)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int j1 = Math.Min(cols, j0 + block);
            parallelism.ForEach(rows, () => new float[Math.Min(group, cols)], (row, groupValues) =>
            {
                cancellationToken.ThrowIfCancellationRequested();
                QuantizeBlock(w.AsSpan(row * cols, cols), row, cols, j0, j1, u, quantizer, group, vector, groupValues,
                    values.AsSpan(row * cols, cols), errors.AsSpan(row * block, block), order);
            });
            if (j1 < cols)
                DenseAlgebra.Gemm(rows, cols - j1, j1 - j0, -1, errors, 0, block, u, (long)j0 * cols + j1, cols, 1, w, j1, cols,
                    parallelism, native);
        }
        return new QuantizedMatrix(quantizer, values);
    }

    /// <summary>Act-order (<see cref="Quantize"/>): positions → columns, units of a group (of one column when the
    /// group is 1 or the whole row) sorted by the mean of H's diagonal over the unit, descending; ties keep the
    /// natural order.</summary>
    internal static int[] ActOrder(Hessian hessian, int cols, int group)
    {
        int unit = group >= cols ? 1 : group, units = (cols + unit - 1) / unit;
        var diagonal = hessian.Matrix.Diagonal();
        var energy = new double[units];
        for (int c = 0; c < cols; c++) energy[c / unit] += diagonal[c];
        for (int g = 0; g < units; g++) energy[g] /= Math.Min(unit, cols - g * unit);
        var sorted = Enumerable.Range(0, units).OrderByDescending(g => energy[g]).ThenBy(g => g);
        return [.. sorted.SelectMany(g => Enumerable.Range(g * unit, Math.Min(unit, cols - g * unit)))];
    }

    /// <summary>One row's positions [j0, j1) (columns <paramref name="order"/>[j], or j): round each, feed its error
    /// to the block's later positions, record it.</summary>
    private static void QuantizeBlock(Span<double> w, int row, int cols, int j0, int j1, double[] u, GridQuantizer quantizer,
        int group, int vector, float[] groupValues, Span<float> output, Span<double> errors, int[]? order)
    {
        for (int j = j0; j < j1; j++)
        {
            int column = order is null ? j : order[j];
            if (order is not null && group >= cols)
            {
                // One scale for the whole row, chosen before its first rounding from the row as it then is (nothing
                // has been fed back yet), in natural order.
                if (j == 0)
                {
                    for (int p = 0; p < cols; p++) groupValues[order[p]] = (float)w[p];
                    quantizer.BeginGroup(row, 0, groupValues.AsSpan(0, cols));
                }
            }
            else if (column % group == 0)
            {
                int length = Math.Min(group, cols - column);
                for (int t = 0; t < length; t++)
                {
                    double v = w[j + t];
                    // Past the block, the errors of this block's earlier columns are still pending (they arrive with the
                    // block's matrix product): apply them here so the group's scale sees the values it would see.
                    for (int s = j0; s < j && j + t >= j1; s++) v -= errors[s - j0] * u[(long)s * cols + j + t];
                    groupValues[t] = (float)v;
                }
                quantizer.BeginGroup(row, column, groupValues.AsSpan(0, length));
            }
            if (vector > 1 && column % vector == 0)
            {
                // The vector's columns sit at positions j.. (groups move whole under act-order) inside this block (a
                // block is whole groups, a group whole vectors), each already fed by every earlier position.
                int length = Math.Min(vector, cols - column);
                for (int t = 0; t < length; t++) groupValues[t] = (float)w[j + t];
                quantizer.BeginVector(row, column, groupValues.AsSpan(0, length));
            }
            float q = quantizer.Round(row, column, w[j]);
            output[column] = q;
            long diagonal = (long)j * cols + j;
            double e = (w[j] - q) / u[diagonal];
            errors[j - j0] = e;
            if (e == 0 || j + 1 == j1) continue;
            var rest = w[(j + 1)..j1];
            TensorPrimitives.MultiplyAdd<double>(u.AsSpan(checked((int)(diagonal + 1)), rest.Length), -e, rest, rest);
        }
    }
}
