namespace Nanoscale.Lossless;

/// <summary>Runs a body over chunk indices with per-worker scratch; 1 worker (or 1 chunk) stays on the calling thread.</summary>
internal static class Parallelism
{
    public static void ForEachChunk<TScratch>(int chunkCount, int maxDegreeOfParallelism, Func<TScratch> createScratch, Action<int, TScratch> body)
    {
        if (chunkCount == 0) return;
        if (maxDegreeOfParallelism == 1 || chunkCount == 1)
        {
            var scratch = createScratch();
            for (int chunk = 0; chunk < chunkCount; chunk++) body(chunk, scratch);
            return;
        }
        var options = new ParallelOptions { MaxDegreeOfParallelism = maxDegreeOfParallelism };
        try
        {
            Parallel.For(0, chunkCount, options, createScratch, (chunk, _, scratch) =>
            {
                body(chunk, scratch);
                return scratch;
            }, _ => { });
        }
        catch (AggregateException e) when (e.InnerExceptions.Count == 1)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }
    }
}
