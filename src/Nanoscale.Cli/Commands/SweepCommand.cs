using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Formats;
using Nanoscale.Pipeline;
using Spectre.Console;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale sweep MODEL --formats A,B,… [--text FILE]</c>: a row per format and a rate–distortion PNG.</summary>
internal static class SweepCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "Checkpoint to sweep" };
        var formats = new Option<string>("--formats") { Description = "Spec strings separated by ';' or ',' (a comma followed by key=value continues the previous spec: nxfp4:nm=2,am=e2m1|e1m2;mxfp4). Default: every block format and the bf16 baseline" };
        var flags = new EvalFlags(textRequired: false, "Text for perplexity (default: weight error only)", "Window size in tokens");
        var chart = new Option<string?>("--chart") { Description = "PNG chart path (default: sweep.png in the current folder)" };
        var json = CliRunner.JsonOption();
        var command = new Command("sweep", "Measure several formats on one model: bpw, weight error, perplexity, time, and a chart")
        {
            model, formats, chart,
        };
        foreach (var option in flags.All) command.Add(option);
        command.Add(json);
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var path = parse.GetValue(model)!;
            var list = FormatSpec.SplitList(parse.GetValue(formats) ?? DefaultFormats);
            var weightOptions = flags.Read(parse);
            var textOptions = parse.GetValue(flags.Text) is null ? null : weightOptions;
            var progress = new ProgressSink();
            var rows = Sweep.Run(path, list, textOptions, weightOptions, progress,
                row => { progress.Finish(); context.Log($"sweep: {row.Format} done ({row.Elapsed.TotalSeconds:0.0} s)"); },
                context.Cancellation);
            var chartPath = Path.GetFullPath(parse.GetValue(chart) ?? "sweep.png");
            RateDistortionChart.Save(rows, Path.GetFileName(path), chartPath);
            if (context.Json) return new { model = path, chart = chartPath, rows = rows.Select(ToJson) };
            Render(rows);
            context.Log($"chart: {chartPath}");
            return null;
        }));
        return command;
    }

    /// <summary>The block formats of SPEC §4–§6 and a bf16 baseline.</summary>
    internal const string DefaultFormats = "bf16,mxfp8,mxfp6,mxfp4,nvfp4,mxint8,nxfp4,nxfp5,nxfp6";

    private static object ToJson(SweepRow r) => new
    {
        format = r.Format,
        bits_per_weight = r.BitsPerWeight,
        model_bytes = r.ModelBytes,
        error = r.Error is null ? null : CompressCommand.ErrorJson(r.Error),
        perplexity = r.Perplexity?.Perplexity,
        mean_nll = r.Perplexity?.MeanNll,
        predicted_tokens = r.Perplexity?.PredictedTokens,
        seconds = r.Elapsed.TotalSeconds,
    };

    internal static void Render(IReadOnlyList<SweepRow> rows)
    {
        bool withText = rows.Any(r => r.Perplexity is not null);
        var table = new Table().Border(TableBorder.Simple).AddColumns("format", "bpw", "model size", "SQNR dB", "rel. error");
        if (withText) table.AddColumns("perplexity", "Δ ppl");
        table.AddColumn("time");
        for (int i = 1; i < table.Columns.Count; i++) table.Columns[i].RightAligned();
        var baseline = rows.FirstOrDefault(r => r.Format == "original")?.Perplexity?.Perplexity;
        foreach (var r in rows)
        {
            var cells = new List<string>
            {
                Markup.Escape(r.Format), Units.G(r.BitsPerWeight, "0.###"), Units.Bytes(r.ModelBytes),
                r.Error is null ? "" : Units.G(r.Error.SqnrDb, "0.00"), r.Error is null ? "" : Units.G(r.Error.RelativeError, "0.###e+0"),
            };
            if (withText)
            {
                var ppl = r.Perplexity?.Perplexity;
                cells.Add(ppl is null ? "" : Units.G(ppl.Value, "0.0000"));
                cells.Add(ppl is null || baseline is null ? "" : Units.G(ppl.Value - baseline.Value, "+0.0000;-0.0000;0"));
            }
            cells.Add($"{r.Elapsed.TotalSeconds:0.0} s");
            table.AddRow(cells.ToArray());
        }
        Terminal.Out.Write(table);
    }
}
