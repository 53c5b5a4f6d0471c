using System.Diagnostics;
using Nanoscale.IO;
using Nanoscale.Codecs;
using Nanoscale.Runtime;

namespace Nanoscale.Pipeline;

/// <summary>One format's point on the rate–distortion chart; <see cref="Perplexity"/> is null without a text.</summary>
public sealed record SweepRow(string Format, double BitsPerWeight, long ModelBytes, ErrorMetrics? Error,
    PerplexityResult? Perplexity, TimeSpan Elapsed);

/// <summary>
/// <c>sweep</c>: every format measured the same way on one model — bpw from the stored bytes, weight error, and
/// (given a text) perplexity — starting with the model as it is, the baseline.
/// </summary>
public static class Sweep
{
    public static IReadOnlyList<SweepRow> Run(string modelPath, IReadOnlyList<string> formats, EvalOptions? textOptions,
        EvalOptions weightOptions, IProgress<PipelineProgress>? progress = null, Action<SweepRow>? onRow = null,
        CancellationToken cancellationToken = default)
    {
        foreach (var format in formats) CodecRegistry.Create(format); // fail on a bad spec before any work
        // Calibration runs once for every format of the sweep.
        if (weightOptions.CalibrationPath is not null && weightOptions.Calibration is null)
        {
            var calibration = weightOptions.ResolveCalibration(modelPath, cancellationToken);
            weightOptions = weightOptions with { Calibration = calibration };
            if (textOptions is not null) textOptions = textOptions with { Calibration = calibration };
        }
        var rows = new List<SweepRow>();
        void Add(SweepRow row)
        {
            rows.Add(row);
            onRow?.Invoke(row);
        }

        if (textOptions is not null)
        {
            Add(FromReport(Evaluation.Evaluate(modelPath, textOptions with { Format = null }, progress, cancellationToken)));
            foreach (var format in formats)
                Add(FromReport(Evaluation.Evaluate(modelPath, textOptions with { Format = format }, progress, cancellationToken)));
        }
        else
        {
            using var source = CheckpointLoader.Open(modelPath);
            var selected = source.Tensors.Where(weightOptions.Selection.Selects).ToList();
            Add(new SweepRow("original", 8.0 * selected.Sum(t => t.ByteLength) / Math.Max(1, selected.Sum(t => t.ElementCount)),
                source.Tensors.Sum(t => t.ByteLength), null, null, TimeSpan.Zero));
            foreach (var format in formats)
                Add(MeasureWeights(source, format, weightOptions, progress, cancellationToken));
        }
        return rows;
    }

    private static SweepRow FromReport(EvalReport r) =>
        new(r.Format, r.EncodedBitsPerWeight, r.ModelBytes, r.Error, r.Perplexity, r.TotalTime);

    /// <summary>Compresses into a temporary file and measures bpw and error from what was stored.</summary>
    public static SweepRow MeasureWeights(ICheckpoint source, string format, EvalOptions options,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        var codec = CodecRegistry.Create(format);
        var (result, file) = CompressionRun.RunTemporary(source, options.WorkFolder, new CompressOptions
        {
            Codec = codec,
            Selection = options.Selection,
            EncodeOptions = new EncodeOptions { Parallelism = options.Parallelism, Calibration = options.Calibration },
        }, measureError: true, progress, cancellationToken);
        using (file)
            return new SweepRow(format, result.Report.EncodedBitsPerWeight, result.Report.Tensors.Sum(t => t.StoredBytes),
                result.TotalError ?? ErrorMetrics.Zero, null, clock.Elapsed);
    }
}
