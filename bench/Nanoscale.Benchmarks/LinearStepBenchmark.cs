using System.Diagnostics;
using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;

namespace Nanoscale.Benchmarks;

/// <summary>
/// Each linear weight of a (compressed) Llama checkpoint multiplied by one token through the runtime's own seam
/// (<c>ILinearWeight.MatMul</c>, the generation step's path), timed alone: where a step's time goes, by tensor.
/// Then steps of 1–16 sequences together (<c>InferenceSession.StepMany</c>) beside their products alone, and the managed bytes a step allocates; with the
/// environment variable <c>PER_TENSOR=1</c> also the first layer's products and the head per batch size;
/// <c>BATCHES=16,128</c> chooses the batch sizes (default 1,2,4,8,16; past 16 the products are a window's).
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- linear-step MODEL [threads] [repeats]</code>
/// </summary>
internal static class LinearStepBenchmark
{
    public static int Run(string[] args)
    {
        if (args.Length < 1 || args[0].StartsWith('-')) { Console.Error.WriteLine("usage: linear-step MODEL [THREADS] [REPEATS]"); return 1; }
        string path = args[0];
        int threads = args.Length > 1 ? int.Parse(args[1]) : Environment.ProcessorCount;
        int repeats = args.Length > 2 ? int.Parse(args[2]) : 20;
        using var checkpoint = LogicalCheckpoint.Open(path);
        using var weights = new LogicalWeightSource(checkpoint);
        var config = checkpoint.Config ?? throw new InvalidOperationException("no config");
        var model = LlamaModel.Load(config, weights, new RuntimeOptions { Parallelism = new(threads) }, path);
        var random = new Random(1);
        double total = 0;
        var seen = new HashSet<ILinearWeight>(ReferenceEqualityComparer.Instance);
        var list = model.Layers.SelectMany((l, i) => new (string, ILinearWeight)[]
        {
            ($"{i}.q", l.Query), ($"{i}.k", l.Key), ($"{i}.v", l.Value), ($"{i}.o", l.Output),
            ($"{i}.gate", l.Gate), ($"{i}.up", l.Up), ($"{i}.down", l.Down),
        }).Append(("head", model.Head));
        foreach (var (name, w) in list)
        {
            if (!seen.Add(w)) continue;
            var x = Enumerable.Range(0, w.Columns).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
            var y = new float[w.Rows];
            for (int i = 0; i < 3; i++) w.MatMul(x, y, model.Options);
            double best = double.MaxValue;
            for (int i = 0; i < repeats; i++)
            {
                var clock = Stopwatch.StartNew();
                w.MatMul(x, y, model.Options);
                best = Math.Min(best, clock.Elapsed.TotalSeconds);
            }
            total += best;
            Console.WriteLine($"{name,-8} {w.Rows,6} × {w.Columns,-6} {best * 1e3,8:0.000} ms  {(double)w.Rows * w.Columns / best / 1e9,6:0.0} G weights/s");
        }
        Console.WriteLine($"sum of the products alone: {total * 1e3:0.00} ms per token (each repeated, so a matrix smaller than the L3 cache stays there)");
        // Every product in the model's order, as a step runs them (each matrix read from memory once per pass), then the
        // whole step for comparison.
        var order = seen.Select(w => (w, x: Enumerable.Range(0, w.Columns).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray(), y: new float[w.Rows])).ToList();
        double pass = double.MaxValue, step = double.MaxValue, steps = 0;
        var times = new List<double>();
        var session = model.CreateSession(repeats + 8);
        var logits = new float[config.VocabSize];
        for (int i = 0; i < repeats; i++)
        {
            var clock = Stopwatch.StartNew();
            foreach (var (w, x, y) in order) w.MatMul(x, y, model.Options);
            pass = Math.Min(pass, clock.Elapsed.TotalSeconds);
            clock.Restart();
            session.Forward([i % config.VocabSize], logits);
            step = Math.Min(step, clock.Elapsed.TotalSeconds);
            steps += clock.Elapsed.TotalSeconds;
            times.Add(clock.Elapsed.TotalMilliseconds);
        }
        Console.WriteLine($"all products in order: {pass * 1e3:0.00} ms ({1 / pass:0.0} tokens/s); a whole step: {step * 1e3:0.00} ms ({1 / step:0.0} tokens/s), mean {steps / repeats * 1e3:0.00} ms");
        Console.WriteLine("steps in order (ms): " + string.Join(" ", times.Select(t => t.ToString("0.0"))));
        // Several sequences stepped together (the token factory's step): aggregate tokens/s per batch size.
        foreach (int batch in (Environment.GetEnvironmentVariable("BATCHES") ?? "1,2,4,8,16").Split(",").Select(int.Parse))
        {
            var sessions = Enumerable.Range(0, batch).Select(_ => model.CreateSession(repeats + 8)).ToList();
            var batchLogits = new float[batch * config.VocabSize];
            int[] tokens = [.. Enumerable.Range(0, batch).Select(b => 100 + b)];
            double bestStep = double.MaxValue;
            long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
            int stepsRun = Math.Min(repeats, 12);
            for (int i = 0; i < stepsRun; i++)
            {
                var clock = Stopwatch.StartNew();
                InferenceSession.StepMany(sessions, tokens, batchLogits);
                bestStep = Math.Min(bestStep, clock.Elapsed.TotalSeconds);
            }
            double allocatedPerStep = (GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore) / (double)stepsRun;
            // The same batch's products alone (every weight in order, the step's options): the rest of the step is
            // attention, norms and hand-offs.
            var stepOptions = model.Options with { FusedTokens = 16, FusedWindows = true };
            var batchOrder = order.Select(o => (o.w, x: Enumerable.Range(0, batch * o.w.Columns).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray(),
                y: new float[batch * o.w.Rows])).ToList();
            double bestProducts = double.MaxValue;
            for (int i = 0; i < Math.Min(repeats, 12); i++)
            {
                var clock = Stopwatch.StartNew();
                foreach (var (w, x, y) in batchOrder) w.MatMul(x, y, stepOptions);
                bestProducts = Math.Min(bestProducts, clock.Elapsed.TotalSeconds);
            }
            if (Environment.GetEnvironmentVariable("PER_TENSOR") == "1")
                foreach (var (w, x, y) in batchOrder.Take(8).Append(batchOrder[^1]))
                {
                    double b = double.MaxValue;
                    for (int i = 0; i < 10; i++) { var c = Stopwatch.StartNew(); w.MatMul(x, y, stepOptions); b = Math.Min(b, c.Elapsed.TotalSeconds); }
                    Console.WriteLine($"   {w.Rows,6} × {w.Columns,-6} {b * 1e6,8:0.0} us  {(double)w.Rows * w.Columns * batch / b / 1e9,6:0.0} G MACs/s");
                }
            Console.WriteLine($"batch {batch,2}: step {bestStep * 1e3,7:0.00} ms, {batch / bestStep,7:0.0} tokens/s aggregate (best step); its products alone {bestProducts * 1e3,7:0.00} ms; {allocatedPerStep / 1024:0.0} KB allocated a step");
        }
        Console.WriteLine($"GC counts: gen0 {GC.CollectionCount(0)}, gen1 {GC.CollectionCount(1)}, gen2 {GC.CollectionCount(2)}");
        return 0;
    }
}
