using BenchmarkDotNet.Running;
using Nanoscale.Benchmarks;

if (args is ["lossless-context"])
{
    LosslessContext.Run();
    return 0;
}
if (args is ["lossless-kernels"])
{
    LosslessKernels.Run();
    return 0;
}
if (args is ["lossless-quick"])
{
    LosslessQuick.Run();
    return 0;
}
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
