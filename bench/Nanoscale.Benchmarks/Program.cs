using BenchmarkDotNet.Running;
using Nanoscale.Benchmarks;

// Whole-run modes that BenchmarkDotNet's repeated-invocation model does not fit (streaming a checkpoint, peak memory,
// quick stopwatch comparisons); everything else is a BenchmarkDotNet class selected with --filter.
switch (args.FirstOrDefault())
{
    case "io-read": return IoReadBenchmark.Run(args[1..]);
    case "eval": return EvalBenchmark.Run(args[1..]);
    case "lossless-context": LosslessContext.Run(); return 0;
    case "lossless-kernels": LosslessKernels.Run(); return 0;
    case "lossless-quick": LosslessQuick.Run(); return 0;
    case "bitflips": return BitFlipBenchmark.Run(args[1..]);
    case "llamacpp-generate": return LlamaCppGenerateBenchmark.Run(args[1..]);
    case "dot-kernels": return DotKernelQuick.Run(args[1..]);
    case "panel-gemm": return PanelGemmBenchmark.Run(args[1..]);
    case "vnni-peak": return VnniPeak.Run(args[1..]);
    case "lanes-kernel": return LanesKernelBenchmark.Run(args[1..]);
    case "quantize-activations": return QuantizeActivationsBenchmark.Run(args[1..]);
    case "attend-rows": return AttendRowsBenchmark.Run(args[1..]);
    case "chat-template": return ChatTemplateBenchmark.Run(args[1..]);
    case "fork-join": return ForkJoinBenchmark.Run(args[1..]);
    case "linear-step": return LinearStepBenchmark.Run(args[1..]);
    case "token-factory": return TokenFactoryBenchmark.Run(args[1..]);
    case "serve-load": return ServeLoadBenchmark.Run(args[1..]);
    case "prompt-cache": return PromptCacheBenchmark.Run(args[1..]);
    case "json-constraint": return JsonConstraintBenchmark.Run(args[1..]);
    case "sampler": return SamplerBenchmark.Run(args[1..]);
    case "budget-rank": return BudgetRankBenchmark.Run(args[1..]);
    case "hadamard": return HadamardBenchmark.Run(args[1..]);
    case "e8-mse": return E8Distortion.Run(args[1..]);
    case "e8-rvq": return E8Distortion.Residual(args[1..]);
    case "ldlq-scale": return LdlqScaleBenchmark.Run(args[1..]);
    case "e8-exact": return E8NearestCheck.Run(args[1..]);
}
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;

namespace Nanoscale.Benchmarks
{
    public partial class Program;
}
