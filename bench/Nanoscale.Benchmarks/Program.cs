using BenchmarkDotNet.Running;
using Nanoscale.Benchmarks;

// `io-read` is a whole-checkpoint streaming run (throughput and peak memory), which BenchmarkDotNet's
// repeated-invocation model does not fit; everything else is a BenchmarkDotNet class selected with --filter.
if (args.Length > 0 && args[0] == "io-read") return IoReadBenchmark.Run(args[1..]);
if (args.Length > 0 && args[0] == "eval") return EvalBenchmark.Run(args[1..]);
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;

namespace Nanoscale.Benchmarks
{
    public partial class Program;
}
