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
        // The original is the dashed line, not a point: at 16–32 bpw it would squeeze every compressed format into the
        // left edge.
        if (points.Count > 1) points.RemoveAll(p => p.Format == "original");
        // Perplexities that span more than a factor of 10 (a 2-bit format beside 4-bit ones) go on a log scale, so
        // the good formats do not collapse onto one line at the bottom.
        bool log = perplexity && points.Count > 0 && points.All(p => p.Y > 0) && points.Max(p => p.Y!.Value) > 10 * points.Min(p => p.Y!.Value);
        double Scale(double y) => log ? Math.Log10(y) : y;
        var plot = new ScottPlot.Plot();
        var scatter = plot.Add.ScatterPoints(points.Select(p => p.X).ToArray(), points.Select(p => Scale(p.Y!.Value)).ToArray());
        scatter.MarkerSize = 9;
        foreach (var p in points)
        {
            var label = plot.Add.Text(p.Format, p.X, Scale(p.Y!.Value));
            label.LabelFontSize = 12;
            label.OffsetX = 6;
            label.OffsetY = -6;
        }
        if (perplexity && rows.FirstOrDefault(r => r.Format == "original")?.Perplexity is { } baseline)
        {
            var line = plot.Add.HorizontalLine(Scale(baseline.Perplexity));
            line.LinePattern = ScottPlot.LinePattern.Dashed;
            line.LegendText = $"original ({baseline.Perplexity:0.###})";
        }
        if (log)
            plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
                IntegerTicksOnly = true,
                LabelFormatter = y => Math.Pow(10, y).ToString("G4", System.Globalization.CultureInfo.InvariantCulture),
            };
        plot.Axes.Margins(0.05, 0.25, 0.08, 0.08); // room on the right for the labels of the outermost points
        plot.Title(title);
        plot.XLabel("bits per weight (stored bytes, scales included)");
        plot.YLabel(perplexity ? (log ? "perplexity, log scale (lower is better)" : "perplexity (lower is better)") : "weight SQNR, dB (higher is better)");
        using var temporary = TemporaryFile.Beside(path, "partial.png");
        plot.SavePng(temporary.Path, 900, 560);
        temporary.MoveTo(path);
    }
}
