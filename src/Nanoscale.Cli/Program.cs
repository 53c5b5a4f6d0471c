using System.CommandLine;
using Nanoscale.Cli.Commands;

namespace Nanoscale.Cli;

public static class Program
{
    public static int Main(string[] args) => BuildRoot().Parse(args).Invoke();

    /// <summary>The whole command tree; tests parse and invoke it in-process.</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("Nanoscale: compress the weights of large language models and measure what each compression costs.");
        root.Add(InspectCommand.Create());
        root.Add(CompressCommand.Create());
        root.Add(DecompressCommand.Create());
        root.Add(EvalCommand.Create());
        root.Add(GenerateCommand.Create());
        root.Add(SweepCommand.Create());
        root.Add(BenchCommand.Create());
        root.Add(DemoCommand.Create());
        root.Add(CleanCommand.Create());
        return root;
    }
}
