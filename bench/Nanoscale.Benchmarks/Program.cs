using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Nanoscale.Benchmarks.Formats.QuantizeBenchmarks).Assembly).Run(args);
