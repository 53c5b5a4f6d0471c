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
        // Uniform formats far above the largest budget would squeeze the frontier into a corner: they are left out, and said so.
        double right = plans.Count == 0 ? double.PositiveInfinity : plans.Max(p => p.BitsPerWeight) + 1.25;
        var uniform = report.Uniform.Where(p => Y(p) is { } y && double.IsFinite(y) && p.BitsPerWeight <= right).ToList();
        var omitted = report.Uniform.Where(p => p.BitsPerWeight > right).Select(p => p.Label).ToList();
        if (uniform.Count > 0)
        {
            var points = plot.Add.ScatterPoints(uniform.Select(p => p.BitsPerWeight).ToArray(), uniform.Select(p => Y(p)!.Value).ToArray());
            points.LegendText = "one format everywhere";
            points.MarkerSize = 9;
            // Points that nearly coincide (a format and its rANS-coded twin) share one label.
            double xs = Math.Max(1e-9, uniform.Max(p => p.BitsPerWeight) - uniform.Min(p => p.BitsPerWeight));
            double ys = Math.Max(1e-9, uniform.Max(p => Y(p)!.Value) - uniform.Min(p => Y(p)!.Value));
            var labels = new List<(double X, double Y, List<string> Names)>();
            foreach (var p in uniform.OrderBy(p => p.BitsPerWeight))
            {
                double x = p.BitsPerWeight, y = Y(p)!.Value;
                int near = labels.FindIndex(l => Math.Abs(l.X - x) < 0.03 * xs && Math.Abs(l.Y - y) < 0.01 * ys);
                if (near >= 0) labels[near].Names.Add(p.Label);
                else labels.Add((x, y, [p.Label]));
            }
            // A label whose text would run into the previous one at the same height goes below its point instead.
            var placed = new List<(double X, double Y)>();
            foreach (var (x, y, names) in labels)
            {
                int crowded = placed.Count(l => x - l.X < 0.25 * xs && Math.Abs(l.Y - y) < 0.02 * ys);
                var label = plot.Add.Text(string.Join("\n", names), x, y);
                label.LabelFontSize = 11;
                label.OffsetX = 6;
                label.OffsetY = -6 + 14 * crowded * names.Count;
                placed.Add((x, y));
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
        plot.Title(omitted.Count == 0 ? title : $"{title} ({omitted.Count} uniform formats above {right:0.##} bpw not shown)");
        plot.XLabel("bits per weight (stored bytes, scales included)");
        plot.YLabel(perplexity ? "perplexity (lower is better)" : "predicted cost (lower is better)");
        using var temporary = TemporaryFile.Beside(path, "partial.png");
        plot.SavePng(temporary.Path, 900, 560);
        temporary.MoveTo(path);
    }
}
