using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Formats;
using Nanoscale.Pipeline;
using Spectre.Console;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale plan MODEL --budget 3.8bpw[,4bpw…] [--calib FILE] [--text FILE]</c>: a format per tensor
/// that fits each budget (docs/budget.md), with measured perplexity and a frontier chart when asked.</summary>
internal static class PlanCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "Checkpoint to plan" };
        var budget = BudgetOption(required: true);
        var candidates = CandidatesOption();
        var flags = new EvalFlags(textRequired: false, "Text to measure each allocation's perplexity on (default: predicted cost only)", "Window size in tokens");
        var uniform = new Option<bool>("--uniform") { Description = "Also measure every candidate applied to every tensor (the uniform points of the frontier)" };
        var probeTokens = new Option<int>("--probe-tokens")
        {
            Description = "Tokens of the calibration text each tensor's loss probe runs (its KL divergence scales the tensor's cost); 0: output error alone",
            DefaultValueFactory = _ => 2048,
        };
        var calibCache = CliRunner.CalibrationCacheOption();
        var chart = new Option<string?>("--chart") { Description = "Write a PNG of the frontier (allocations and uniform formats) here" };
        var json = CliRunner.JsonOption();
        var command = new Command("plan", "Choose a format per tensor to fit a size budget, by measured sensitivity")
        {
            model, budget, candidates, uniform, probeTokens, calibCache, chart,
        };
        foreach (var option in flags.All) command.Add(option);
        command.Add(json);
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var path = parse.GetValue(model)!;
            var eval = flags.Read(parse);
            var progress = new ProgressSink();
            var report = BudgetPlanner.Run(path, new PlanRequest
            {
                Budgets = Budget.ParseList(parse.GetValue(budget)!),
                Candidates = ReadCandidates(parse, candidates),
                Include = eval.Include,
                Exclude = eval.Exclude,
                CalibrationPath = eval.CalibrationPath,
                CalibrationTokens = eval.CalibrationTokens,
                CalibrationCache = parse.GetValue(calibCache),
                TokenizerPath = eval.TokenizerPath,
                TextPath = eval.TextPath.Length == 0 ? null : eval.TextPath,
                MaxTokens = eval.MaxTokens,
                ContextLength = eval.ContextLength,
                Uniform = parse.GetValue(uniform),
                ProbeTokens = parse.GetValue(probeTokens) is var p and >= 0 ? p : throw new Tensors.InvalidOptionException("--probe-tokens", "must be 0 or more"),
                Parallelism = eval.Parallelism,
            }, progress, context.Cancellation);
            progress.Finish();
            string? chartPath = parse.GetValue(chart) is { } c ? Path.GetFullPath(c) : null;
            if (chartPath is not null) FrontierChart.Save(report, Path.GetFileName(path), chartPath);
            if (context.Json) return ToJson(report, chartPath);
            Render(report);
            if (chartPath is not null) context.Log($"chart: {chartPath}");
            return null;
        }));
        return command;
    }

    /// <summary><c>--budget</c>, shared with <c>compress</c>.</summary>
    internal static Option<string?> BudgetOption(bool required) => new("--budget")
    {
        Description = "Size to fit: bits per weight of the encoded tensors (3.8bpw) or the whole checkpoint's tensors (3GB, 250MiB, 123456B)" +
            (required ? "; several separated by commas" : "") + ". A format is chosen per tensor from --candidates",
        Required = required,
    };

    /// <summary><c>--candidates</c>, shared with <c>compress</c>.</summary>
    internal static Option<string?> CandidatesOption() => new("--candidates")
    {
        Description = "Formats a budget chooses from, separated by ';' or ',' (default: " + string.Join(",", PlanOptions.DefaultCandidates) + ")",
    };

    internal static IReadOnlyList<string>? ReadCandidates(ParseResult parse, Option<string?> option) =>
        parse.GetValue(option) is { } text ? FormatSpec.SplitList(text) : null;

    private static object ToJson(PlanReport r, string? chart) => new
    {
        model = r.Table.Model,
        cost = r.Table.CostKind,
        candidates = r.Table.Candidates,
        original_perplexity = r.Original?.Perplexity,
        chart,
        seconds = r.Elapsed.TotalSeconds,
        measure_seconds = r.Table.Elapsed.TotalSeconds,
        plans = r.Plans.Select(p => new
        {
            budget = p.Label,
            bits_per_weight = p.BitsPerWeight,
            model_bytes = p.ModelBytes,
            allowed_encoded_bytes = p.Plan!.AllowedEncodedBytes,
            unit_bytes = p.Plan.BudgetUnitBytes,
            predicted_cost = p.PredictedCost,
            perplexity = p.Perplexity?.Perplexity,
            error = p.Error is null ? null : CompressCommand.ErrorJson(p.Error),
            tensors = p.Plan.Tensors.Select(t => new { name = t.Name, format = t.Format, bytes = t.Bytes, bits_per_weight = t.BitsPerWeight, predicted_cost = t.Cost }),
        }),
        uniform = r.Uniform.Select(p => new
        {
            format = p.Label,
            bits_per_weight = p.BitsPerWeight,
            model_bytes = p.ModelBytes,
            predicted_cost = p.PredictedCost,
            perplexity = p.Perplexity?.Perplexity,
            error = p.Error is null ? null : CompressCommand.ErrorJson(p.Error),
        }),
        sensitivity = r.Table.Tensors.Select(t => new
        {
            name = t.Name,
            shape = t.Shape,
            calibrated = t.Calibrated,
            loss_weight = t.LossWeight,
            probe_kl = t.ProbeKl,
            candidates = t.Candidates.Select((m, i) => new { format = r.Table.Candidates[i], bytes = m.Fits ? m.Bytes : (long?)null, predicted_cost = m.Fits ? m.Cost : (double?)null, failure = m.Failure }),
        }),
    };

    private static void Render(PlanReport r)
    {
        var console = Terminal.Out;
        if (r.Plans.Count == 1)
        {
            var plan = r.Plans[0].Plan!;
            var tensors = new Table().Border(TableBorder.Simple).AddColumns("tensor", "format", "stored", "bpw", "predicted cost");
            foreach (var i in new[] { 2, 3, 4 }) tensors.Columns[i].RightAligned();
            foreach (var t in plan.Tensors)
                tensors.AddRow(Markup.Escape(t.Name), Markup.Escape(t.Format), Units.Bytes(t.Bytes), Units.G(t.BitsPerWeight, "0.###"), Units.G(t.Cost, "0.###e+0"));
            console.Write(tensors);
        }
        bool withText = r.Plans.Any(p => p.Perplexity is not null);
        var table = new Table().Border(TableBorder.Simple).AddColumns("budget / format", "bpw", "model size", "predicted cost", "formats used");
        if (withText) table.AddColumns("perplexity", "Δ ppl");
        for (int i = 1; i < table.Columns.Count; i++) if (i != 4) table.Columns[i].RightAligned();
        void Add(PlanPoint p, string used)
        {
            var cells = new List<string> { Markup.Escape(p.Label), Units.G(p.BitsPerWeight, "0.###"), Units.Bytes(p.ModelBytes), Units.G(p.PredictedCost, "0.###e+0"), Markup.Escape(used) };
            if (withText)
            {
                cells.Add(p.Perplexity is { } ppl ? Units.G(ppl.Perplexity, "0.0000") : "");
                cells.Add(p.Perplexity is { } q && r.Original is { } o ? Units.G(q.Perplexity - o.Perplexity, "+0.0000;-0.0000;0") : "");
            }
            table.AddRow(cells.ToArray());
        }
        foreach (var p in r.Plans)
            Add(p, string.Join(", ", p.Plan!.Tensors.GroupBy(t => t.Format).OrderByDescending(g => g.Count()).Select(g => $"{g.Key}×{g.Count()}")));
        foreach (var p in r.Uniform) Add(p, "(every tensor)");
        console.Write(table);
        var t0 = r.Table;
        console.MarkupLine(Markup.Escape(
            $"{t0.Tensors.Count} tensors ({Units.Count(t0.Weights)} weights) × {t0.Candidates.Count} candidates measured in {t0.Elapsed.TotalSeconds:0.0} s; " +
            $"cost: {t0.CostKind}; achievable {Units.G(t0.BitsPerWeight(t0.MinEncodedBytes), "0.###")}–{Units.G(t0.BitsPerWeight(t0.MaxEncodedBytes), "0.###")} bpw" +
            (r.Original is { } original ? $"; original perplexity {Units.G(original.Perplexity, "0.0000")}" : "")));
    }
}
