using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>What the <c>plan</c> verb asks for.</summary>
public sealed record PlanRequest
{
    /// <summary>Budgets to fit (one allocation each, from one measured table).</summary>
    public required IReadOnlyList<Budget> Budgets { get; init; }

    /// <summary>Formats to choose from; null: <see cref="PlanOptions.DefaultCandidates"/>.</summary>
    public IReadOnlyList<string>? Candidates { get; init; }

    public string? Include { get; init; }
    public string? Exclude { get; init; }

    /// <summary>Calibration text whose Hessians weigh the errors; null: H = I.</summary>
    public string? CalibrationPath { get; init; }

    /// <summary>Tokens of <see cref="CalibrationPath"/> to run.</summary>
    public int CalibrationTokens { get; init; } = 4096;

    /// <summary>A folder for the calibration's Hessians (<see cref="CompressionRequest.CalibrationCache"/>).</summary>
    public string? CalibrationCache { get; init; }

    /// <summary>Tokens of the calibration text each tensor's loss probe runs (<see cref="PlanOptions.ProbeTokens"/>);
    /// 0: no probe, the cost is the output error alone.</summary>
    public int ProbeTokens { get; init; } = 2048;

    /// <summary>Tokenizer for calibration and perplexity (default: the one beside the model).</summary>
    public string? TokenizerPath { get; init; }

    /// <summary>Text to measure each allocation's perplexity on; null: predicted costs only.</summary>
    public string? TextPath { get; init; }

    /// <summary>Score at most this many tokens of <see cref="TextPath"/>; null: all.</summary>
    public int? MaxTokens { get; init; }

    /// <summary>Window length for perplexity; null: the model's.</summary>
    public int? ContextLength { get; init; }

    /// <summary>Also measure every candidate applied to every tensor (the uniform points of the frontier).</summary>
    public bool Uniform { get; init; }

    public bool AllowNonFinite { get; init; }
    public Parallelism Parallelism { get; init; }

    /// <summary>Folder for work files (default: the system temp folder).</summary>
    public string? WorkFolder { get; init; }
}

/// <summary>One point of the size–quality frontier: an allocation (<see cref="Plan"/> set) or one format everywhere.</summary>
/// <param name="Label">The budget, or the uniform format's spec.</param>
/// <param name="Plan">The allocation; null for a uniform point.</param>
/// <param name="BitsPerWeight">Bits per weight of the planned tensors, from their stored bytes.</param>
/// <param name="ModelBytes">Every tensor's stored bytes.</param>
/// <param name="PredictedCost">The summed predicted cost.</param>
/// <param name="Error">Weight error of the planned tensors, decoded from what was written (null without a text).</param>
/// <param name="Perplexity">Measured on the written checkpoint; null without a text.</param>
public sealed record PlanPoint(string Label, BudgetPlan? Plan, double BitsPerWeight, long ModelBytes, double PredictedCost,
    ErrorMetrics? Error, PerplexityResult? Perplexity);

/// <summary>What <c>plan</c> found: the measured table, an allocation per budget, the uniform points when asked, and
/// the original model's perplexity when a text was given.</summary>
public sealed record PlanReport(SensitivityTable Table, IReadOnlyList<PlanPoint> Plans, IReadOnlyList<PlanPoint> Uniform,
    PerplexityResult? Original, TimeSpan Elapsed);

public static partial class BudgetPlanner
{
    /// <summary>
    /// The <c>plan</c> verb: calibrates when asked, measures the table once, solves every budget, and with a text
    /// writes each allocation (and each uniform candidate, when asked) to a temporary checkpoint and measures its
    /// perplexity there, so every number comes from stored bytes.
    /// </summary>
    public static PlanReport Run(string modelPath, PlanRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        if (request.Budgets.Count == 0) throw new InvalidOptionException("PlanOptions.Budget", "give at least one budget");
        if (request.Candidates is { } candidates) foreach (var spec in candidates) CodecRegistry.Create(spec); // fail before any work
        var text = request.TextPath is { } textPath ? TextInput.Read(textPath, "PlanRequest.TextPath") : null;
        string? tokenizerPath = request.TokenizerPath ?? TokenizerLoader.FindBeside(modelPath);
        using var source = CheckpointLoader.Open(modelPath);
        if (text is not null && source.Config is null)
            throw new CheckpointFormatException(source.Path, "config", null, "the checkpoint does not describe a model architecture, so its perplexity cannot be measured");
        LowRank.CalibrationSet? calibration = null;
        IDisposable? calibrationFiles = null;
        if (request.CalibrationPath is { } calibrationPath)
            (calibration, calibrationFiles) = Calibration.CollectReporting(source, calibrationPath, request.TokenizerPath, request.CalibrationTokens,
                request.Parallelism, progress, cancellationToken, request.CalibrationCache, request.WorkFolder);
        using var releaseCalibration = calibrationFiles;
        var table = Measure(source, new PlanOptions
        {
            Candidates = request.Candidates,
            Include = request.Include,
            Exclude = request.Exclude,
            Calibration = calibration,
            ProbeTextPath = request.ProbeTokens > 0 && source.Config is not null ? request.CalibrationPath : null,
            ProbeTokens = request.ProbeTokens,
            TokenizerPath = request.TokenizerPath,
            AllowNonFinite = request.AllowNonFinite,
            Parallelism = request.Parallelism,
            WorkFolder = request.WorkFolder,
        }, progress, cancellationToken);
        var plans = request.Budgets.Select(b => Solve(table, b)).ToList(); // every budget checked before any perplexity

        // The original and every written point are evaluated alike: the model's own tokenizer, the same text and window.
        var evalOptions = new EvalOptions
        {
            TextPath = request.TextPath ?? "",
            TokenizerPath = tokenizerPath,
            MaxTokens = request.MaxTokens,
            ContextLength = request.ContextLength,
            Parallelism = request.Parallelism,
        };

        PlanPoint Point(string label, BudgetPlan? plan, IReadOnlyDictionary<string, string> assignment, double bpw, long modelBytes, double cost)
        {
            if (text is null) return new PlanPoint(label, plan, bpw, modelBytes, cost, null, null);
            var (result, file) = CompressionRun.RunTemporary(source, request.WorkFolder, new CompressOptions
            {
                Assignment = Codecs(assignment),
                EncodeOptions = new EncodeOptions { Parallelism = request.Parallelism, AllowNonFinite = request.AllowNonFinite, Calibration = calibration },
            }, measureError: true, progress, cancellationToken);
            using (file)
            {
                var report = Evaluation.Evaluate(file.Path, evalOptions, progress, cancellationToken);
                return new PlanPoint(label, plan, 8.0 * result.Report.Tensors.Where(t => t.Codec != "plain").Sum(t => t.StoredBytes) / Math.Max(1, table.Weights),
                    result.Report.Tensors.Sum(t => t.StoredBytes), cost, result.TotalError, report.Perplexity);
            }
        }

        PerplexityResult? original = text is null ? null : Evaluation.Evaluate(modelPath, evalOptions, progress, cancellationToken).Perplexity;
        var points = plans.Select(p => Point(p.Budget.ToString(), p, p.Assignment, p.BitsPerWeight, p.ModelBytes, p.PredictedCost)).ToList();
        var uniform = new List<PlanPoint>();
        if (request.Uniform)
            for (int c = 0; c < table.Candidates.Count; c++)
            {
                if (table.UniformBytes(c) is not { } bytes) continue;
                string spec = table.Candidates[c];
                uniform.Add(Point(spec, null, table.Tensors.ToDictionary(t => t.Name, _ => spec, StringComparer.Ordinal),
                    table.BitsPerWeight(bytes), table.OtherBytes + bytes, table.UniformCost(c)!.Value));
            }
        return new PlanReport(table, points, uniform, original, clock.Elapsed);
    }
}
