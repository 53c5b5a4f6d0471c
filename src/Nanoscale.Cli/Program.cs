using System.CommandLine;
using System.Text.Json;
using Nanoscale.Cli.Rendering;
using Nanoscale.Cli.Commands;

namespace Nanoscale.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var parse = BuildRoot().Parse(args);
        // With --json, standard output carries exactly one JSON object even when the command line is wrong (no help text).
        if (parse.Errors.Count > 0 && args.Contains("--json"))
        {
            var reason = string.Join("; ", parse.Errors.Select(e => e.Message));
            Console.Error.WriteLine($"error: {reason}");
            Console.Out.WriteLine(JsonSerializer.Serialize(new { error = reason }, Json.Options));
            return 1;
        }
        return parse.Invoke();
    }

    /// <summary>The whole command tree; tests parse and invoke it in-process.</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("Nanoscale: compress the weights of large language models and measure what each compression costs.");
        root.Add(InspectCommand.Create());
        root.Add(CompressCommand.Create());
        root.Add(MergeCommand.Create());
        root.Add(DecompressCommand.Create());
        root.Add(ExportCommand.Create());
        root.Add(ServeCommand.Create());
        root.Add(EvalCommand.Create());
        root.Add(GenerateCommand.Create());
        root.Add(ChatCommand.Create());
        root.Add(TokenizeCommand.Create());
        root.Add(SweepCommand.Create());
        root.Add(PlanCommand.Create());
        root.Add(BenchCommand.Create());
        root.Add(DemoCommand.Create());
        root.Add(SampleCommand.Create());
        root.Add(VerifyCommand.Create());
        root.Add(CleanCommand.Create());
        return root;
    }
}
