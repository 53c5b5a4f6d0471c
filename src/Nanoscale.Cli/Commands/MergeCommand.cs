using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale merge UNITS [-o OUT]</c>: the units of <c>compress --shard i/N -o UNITS</c> checked and put
/// together into the model a single-machine run writes (docs/scale-out.md).</summary>
internal static class MergeCommand
{
    public static Command Create()
    {
        var units = new Argument<string>("UNITS") { Description = "The folder the units were written into (compress --shard i/N -o UNITS)" };
        var output = new Option<string?>("--output", "-o")
        {
            Description = "The model folder to write (or one file when it ends in .safetensors); default: UNITS/model",
        };
        var noError = new Option<bool>("--no-error") { Description = "Skip measuring the weight error (decoding the output again)" };
        var json = CliRunner.JsonOption();
        var command = new Command("merge", "Check the units of a sharded compress and write the model they make")
        {
            units, output, noError, json,
        };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var folder = parse.GetValue(units)!;
            var progress = new ProgressSink();
            var merged = ShardedCompression.Merge(folder, parse.GetValue(output) ?? Path.Combine(folder, "model"), !parse.GetValue(noError),
                progress, context.Cancellation);
            progress.Finish();
            var result = merged.Result;
            var byName = result.Errors.ToDictionary(e => e.Name, e => e.Error);
            if (context.Json) return new { units = merged.Units, merged = CompressCommand.ToJson(result.Report, byName, result.TotalError) };
            CompressCommand.Render(result.Report, byName, result.TotalError);
            context.Log($"merged {merged.Units.Count} units: {string.Join(", ", merged.Units.Select(Path.GetFileName))}");
            return null;
        }));
        return command;
    }
}
