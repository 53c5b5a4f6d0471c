using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;

namespace Nanoscale.Cli.Commands;

/// <summary>
/// <c>nanoscale demo</c>: the main job on an embedded default. Generates a deterministic Llama-shaped sample
/// checkpoint and runs the pipeline on it, so a newcomer sees Nanoscale work with no arguments to hunt for.
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var json = CliRunner.JsonOption();
        var outDir = new Option<string?>("--out") { Description = "Keep the sample model in this folder (default: a temporary folder, removed afterwards)" };
        var threads = CliRunner.ThreadsOption();
        var command = new Command("demo", "Generate a sample Llama-shaped checkpoint and run the pipeline on it") { json, outDir, threads };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var keep = parse.GetValue(outDir);
            var folder = keep ?? Path.Combine(Path.GetTempPath(), "nanoscale-demo-" + Guid.NewGuid().ToString("N")[..8]);
            try
            {
                var options = new SampleOptions();
                context.Log($"demo: writing a sample Llama-shaped model ({Units.Count(SampleCheckpoint.ParameterCount(options))} parameters, " +
                            $"{options.DType}) to {folder}");
                SampleCheckpoint.Write(folder, options, context.Cancellation);
                var report = InspectCommand.Run(folder, new InspectOptions { MaxDegreeOfParallelism = parse.GetValue(threads) }, context);
                if (context.Json) return new { sample = folder, kept = keep is not null, inspect = InspectCommand.ToJson(report) };
                InspectCommand.Render(report);
                context.Log(keep is null
                    ? "demo: done (sample removed; pass --out DIR to keep it and try `nanoscale inspect DIR`)"
                    : $"demo: done; the sample model is in {folder}");
                return null;
            }
            finally
            {
                if (keep is null && Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            }
        }));
        return command;
    }
}
