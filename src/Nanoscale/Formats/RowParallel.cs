using Nanoscale.Tensors;

namespace Nanoscale.Formats;

/// <summary>Splits a range of rows into contiguous parts and runs them on up to <c>parallelism</c> threads.</summary>
internal static class RowParallel
{
    /// <summary>Runs <paramref name="body"/>(firstRow, rowCount) over [0, rows). Non-finite errors from several parts are
    /// reduced to the one with the lowest element index, so the error does not depend on thread timing.</summary>
    public static void For(int rows, long elementsPerRow, Parallelism parallelism, Action<int, int> body) =>
        // Below ~64K elements per part the thread hand-off costs more than it saves.
        parallelism.ForRanges(rows, Math.Max(1, 65536 / Math.Max(1, elementsPerRow)), body);
}
