namespace Nanoscale.Formats;

/// <summary>Splits a range of rows into contiguous parts and runs them on up to <c>parallelism</c> threads.</summary>
internal static class RowParallel
{
    /// <summary>Runs <paramref name="body"/>(firstRow, rowCount) over [0, rows). Non-finite errors from several parts are
    /// reduced to the one with the lowest element index, so the error does not depend on thread timing.</summary>
    public static void For(int rows, long elementsPerRow, int parallelism, Action<int, int> body)
    {
        // Below ~64K elements per part the thread hand-off costs more than it saves.
        long minRowsPerPart = Math.Max(1, 65536 / Math.Max(1, elementsPerRow));
        int parts = (int)Math.Min(parallelism, Math.Max(1, rows / minRowsPerPart));
        if (parts <= 1)
        {
            body(0, rows);
            return;
        }
        try
        {
            Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = parts }, part =>
            {
                int start = (int)((long)rows * part / parts), end = (int)((long)rows * (part + 1) / parts);
                body(start, end - start);
            });
        }
        catch (AggregateException e) when (e.InnerExceptions.All(x => x is NonFiniteValueException))
        {
            throw e.InnerExceptions.Cast<NonFiniteValueException>().MinBy(x => x.ElementIndex)!;
        }
    }
}
