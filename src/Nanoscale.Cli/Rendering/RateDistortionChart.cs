using Nanoscale.Pipeline;
using Nanoscale.IO;

namespace Nanoscale.Cli.Rendering;

/// <summary>The sweep's PNG: perplexity (or weight SQNR without a text) against bits per weight, one labelled point per format.</summary>
internal static class RateDistortionChart
{
    public static void Save(IReadOnlyList<SweepRow> rows, string title, string path)
    {
        bool perplexity = rows.Any(r => r.Perplexity is not null);
        var points = rows
            .Select(r => (r.Format, X: r.BitsPerWeight, Y: perplexity ? r.Perplexity?.Perplexity : r.Error?.SqnrDb))
            .Where(p => p.Y is { } y && double.IsFinite(y))
            .ToList();
        var plot = new ScottPlot.Plot();
        var scatter = plot.Add.ScatterPoints(points.Select(p => p.X).ToArray(), points.Select(p => p.Y!.Value).ToArray());
        scatter.MarkerSize = 9;
        foreach (var p in points)
        {
            var label = plot.Add.Text(p.Format, p.X, p.Y!.Value);
            label.LabelFontSize = 12;
            label.OffsetX = 6;
            label.OffsetY = -6;
        }
        if (perplexity && rows.FirstOrDefault(r => r.Format == "original")?.Perplexity is { } baseline)
        {
            var line = plot.Add.HorizontalLine(baseline.Perplexity);
            line.LinePattern = ScottPlot.LinePattern.Dashed;
            line.LegendText = "original";
        }
        plot.Axes.Margins(0.05, 0.25, 0.08, 0.08); // room on the right for the labels of the outermost points
        plot.Title(title);
        plot.XLabel("bits per weight (stored bytes, scales included)");
        plot.YLabel(perplexity ? "perplexity (lower is better)" : "weight SQNR, dB (higher is better)");
        using var temporary = TemporaryFile.Beside(path, "partial.png");
        plot.SavePng(temporary.Path, 900, 560);
        temporary.MoveTo(path);
    }
}
