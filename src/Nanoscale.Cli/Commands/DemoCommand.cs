using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.IO;
using Nanoscale.Pipeline;

namespace Nanoscale.Cli.Commands;

/// <summary>
/// <c>nanoscale demo</c>: the main job on an embedded default. Generates a deterministic Llama-shaped sample
/// checkpoint and runs the pipeline on it, so a newcomer sees Nanoscale work with no arguments to hunt for.
/// </summary>
internal static class DemoCommand
{
    /// <summary>Formats the demo sweeps.</summary>
    private static readonly string[] DemoFormats = ["bf16", "mxfp8", "mxfp6", "mxfp4", "nvfp4", "nxfp4", "nxfp5", "mxint8"];

    public static Command Create()
    {
        var json = CliRunner.JsonOption();
        var outDir = new Option<string?>("--out") { Description = "Keep the sample model in this folder (default: a temporary folder, removed afterwards)" };
        var threads = CliRunner.ThreadsOption();
        var command = new Command("demo", "Generate a sample Llama-shaped checkpoint and run the pipeline on it") { json, outDir, threads };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var keep = parse.GetValue(outDir);
            using var temporary = keep is null ? TemporaryFolder.Create("nanoscale-demo") : null;
            var folder = keep ?? temporary!.Path;
            var options = new SampleOptions();
            context.Log($"demo: writing a sample Llama-shaped model ({Units.Count(SampleCheckpoint.ParameterCount(options))} parameters, " +
                        $"{options.DType}) to {folder}");
            SampleCheckpoint.Write(folder, options, context.Cancellation);
            int threadCount = parse.GetValue(threads);
            var report = InspectCommand.Run(folder, new InspectOptions { Parallelism = new(threadCount) }, context);
            if (!context.Json) InspectCommand.Render(report);

            // Compress with MXFP4 and decompress again: the file round trip every user relies on.
            var compressed = Path.Combine(folder, "model.mxfp4.safetensors");
            var restored = Path.Combine(folder, "model.restored.safetensors");
            context.Log("demo: compress --format mxfp4, then decompress");
            var compressReport = CompressionRun.Run(folder, compressed,
                new CompressionRequest { Format = "mxfp4", Parallelism = new(threadCount), MeasureError = false, Force = true },
                cancellationToken: context.Cancellation).Report;
            Decompressor.Decompress(compressed, restored, cancellationToken: context.Cancellation);

            // Every format on the same footing: bpw from the stored bytes and weight error from decoding them.
            var formats = DemoFormats.ToList();
            context.Log($"demo: sweep {string.Join(", ", formats)}");
            var rows = Sweep.Run(folder, formats, null, new EvalOptions { TextPath = "", Parallelism = new(threadCount) },
                cancellationToken: context.Cancellation);
            // Nothing lands in the current folder: the chart goes beside the kept sample, or to the system's temporary folder.
            var chart = Path.GetFullPath(Path.Combine(keep ?? Path.GetTempPath(), keep is null ? "nanoscale-demo-sweep.png" : "sweep.png"));
            RateDistortionChart.Save(rows, "sample Llama-shaped model (weights)", chart);

            if (context.Json)
                return new
                {
                    sample = folder,
                    kept = keep is not null,
                    inspect = InspectCommand.ToJson(report),
                    compress = new { format = compressReport.Format, bits_per_weight = compressReport.EncodedBitsPerWeight, bytes = compressReport.OutputFileBytes },
                    sweep = rows.Select(r => new { format = r.Format, bits_per_weight = r.BitsPerWeight, sqnr_db = r.Error?.SqnrDb }),
                    chart,
                };
            SweepCommand.Render(rows);
            context.Log($"demo: chart {chart}");
            context.Log(keep is null
                ? "demo: done (sample removed; pass --out DIR to keep it and try `nanoscale inspect DIR`)"
                : $"demo: done; the sample model, its MXFP4 checkpoint and the chart are in {folder}");
            return null;
        }));
        return command;
    }
}
