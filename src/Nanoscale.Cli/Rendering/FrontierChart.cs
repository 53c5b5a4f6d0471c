using Nanoscale.IO;
using Nanoscale.Pipeline;

namespace Nanoscale.Cli.Rendering;

/// <summary><c>plan --chart</c>: the allocations' size–quality frontier (a line) beside every uniform format's point,
/// perplexity when measured, else the predicted cost.</summary>
internal static class FrontierChart
{
    public static void Save(PlanReport report, string title, string path)
    {
        bool perplexity = report.Plans.Any(p => p.Perplexity is not null);
        double? Y(PlanPoint p) => perplexity ? p.Perplexity?.Perplexity : p.PredictedCost;
        var plot = new ScottPlot.Plot();
        var plans = report.Plans.Where(p => Y(p) is { } y && double.IsFinite(y)).OrderBy(p => p.BitsPerWeight).ToList();
        if (plans.Count > 0)
        {
            var line = plot.Add.Scatter(plans.Select(p => p.BitsPerWeight).ToArray(), plans.Select(p => Y(p)!.Value).ToArray());
            line.LegendText = "allocation at each budget";
            line.MarkerSize = 7;
        }
        var uniform = report.Uniform.Where(p => Y(p) is { } y && double.IsFinite(y)).ToList();
        if (uniform.Count > 0)
        {
            var points = plot.Add.ScatterPoints(uniform.Select(p => p.BitsPerWeight).ToArray(), uniform.Select(p => Y(p)!.Value).ToArray());
            points.LegendText = "one format everywhere";
            points.MarkerSize = 9;
            foreach (var p in uniform)
            {
                var label = plot.Add.Text(p.Label, p.BitsPerWeight, Y(p)!.Value);
                label.LabelFontSize = 11;
                label.OffsetX = 6;
                label.OffsetY = -6;
            }
        }
        if (perplexity && report.Original is { } original)
        {
            var baseline = plot.Add.HorizontalLine(original.Perplexity);
            baseline.LinePattern = ScottPlot.LinePattern.Dashed;
            baseline.LegendText = "original";
        }
        if (!perplexity) plot.Axes.SetupMultiplierNotation(plot.Axes.Left);
        plot.ShowLegend(ScottPlot.Alignment.UpperRight);
        plot.Axes.Margins(0.05, 0.25, 0.08, 0.08);
        plot.Title(title);
        plot.XLabel("bits per weight (stored bytes, scales included)");
        plot.YLabel(perplexity ? "perplexity (lower is better)" : "predicted cost (lower is better)");
        using var temporary = TemporaryFile.Beside(path, "partial.png");
        plot.SavePng(temporary.Path, 900, 560);
        temporary.MoveTo(path);
    }
}
