using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Tensors;
using Nanoscale.LowRank;

namespace Nanoscale.Pipeline;

/// <summary>What a compression run measured: the report of what was written and, unless skipped, each encoded
/// tensor's weight error decoded from the stored bytes.</summary>
/// <param name="Report">What was written.</param>
/// <param name="Errors">Each encoded tensor's weight error, decoded from the stored bytes (empty when not measured).</param>
/// <param name="Plan">The allocation, when the run fitted a budget.</param>
/// <param name="AlreadyDone">A unit of a sharded run that an earlier run of the same request had finished: left as it was.</param>
public sealed record CompressionResult(CompressReport Report, IReadOnlyList<(string Name, ErrorMetrics Error)> Errors, BudgetPlan? Plan = null,
    bool AlreadyDone = false)
{
    /// <summary>Tokens of calibration text the Hessians were measured on (null without <c>--calib</c>): fewer than asked
    /// when the text is short, and then the Hessians have at most that rank before their damping (docs/caldera.md).</summary>
    public long? CalibrationTokens { get; init; }

    /// <summary>The model's total error over the encoded tensors; null when nothing was measured.</summary>
    public ErrorMetrics? TotalError => Errors.Count == 0 ? null : Errors.Aggregate(ErrorMetrics.Zero, (a, e) => a + e.Error);
}

/// <summary>What the <c>compress</c> verb asks for, in the library's terms.</summary>
public sealed record CompressionRequest
{
    /// <summary>The format spec string (SPEC §7), e.g. <c>nxfp4</c> or <c>caldera:rank=8</c>; null when
    /// <see cref="Budget"/> chooses a format per tensor.</summary>
    public string? Format { get; init; }

    /// <summary>Fit this size instead of one format everywhere: a format per tensor from <see cref="Candidates"/>
    /// (<see cref="BudgetPlanner"/>), weighed by the Hessians of <see cref="CalibrationPath"/> when given.</summary>
    public Budget? Budget { get; init; }

    /// <summary>The formats a budget chooses from; null: <see cref="PlanOptions.DefaultCandidates"/>.</summary>
    public IReadOnlyList<string>? Candidates { get; init; }

    /// <summary>Run only this unit of a sharded compression into <c>output/part-i-of-N</c> (<see cref="ShardedCompression"/>);
    /// <c>merge</c> puts the units together. Null: the whole model here.</summary>
    public ShardUnit? Shard { get; init; }

    /// <summary>A plan written by <c>plan --json</c> with one budget: each tensor in the format it chose, without
    /// measuring again — so a budget can be split into units, every unit reading the same plan.</summary>
    public string? PlanPath { get; init; }

    /// <summary>Regexes that change which tensors the codec applies to (<see cref="TensorSelection"/>).</summary>
    public string? Include { get; init; }

    public string? Exclude { get; init; }

    /// <summary>See <see cref="EncodeOptions.AllowNonFinite"/>.</summary>
    public bool AllowNonFinite { get; init; }

    /// <summary>Threads (default: every core).</summary>
    public Parallelism Parallelism { get; init; }

    /// <summary>Calibration text for codecs fitted to activations (caldera); null: none (such codecs use H = I).</summary>
    public string? CalibrationPath { get; init; }

    /// <summary>Tokens of <see cref="CalibrationPath"/> to run.</summary>
    public int CalibrationTokens { get; init; } = 4096;

    /// <summary>A folder for the calibration's Hessians: read when it holds this calibration, else measured and written
    /// there (every unit of a sharded run can share one); null: measured for this run.</summary>
    public string? CalibrationCache { get; init; }

    /// <summary>Tokenizer for calibration (default: the one beside the model).</summary>
    public string? TokenizerPath { get; init; }

    /// <summary>Allow the output inside the input's model folder (its own files stay refused).</summary>
    public bool Force { get; init; }

    /// <summary>Decode what was written and measure the weight error (default: yes).</summary>
    public bool MeasureError { get; init; } = true;

    /// <summary>A folder output's shard size limit (default 5 GB).</summary>
    public long MaxShardBytes { get; init; } = CheckpointWriter.DefaultMaxShardBytes;
}

/// <summary>
/// The one compression run (SPEC §14): compress, reopen what was written, measure it. Every verb that compresses
/// (<c>compress</c>, <c>eval --format</c>, <c>sweep</c>, <c>demo</c>) goes through here, so bits per weight and error
/// always come from the stored bytes.
/// </summary>
public static class CompressionRun
{
    /// <summary>
    /// The <c>compress</c> verb: opens the checkpoint at <paramref name="modelPath"/>, builds the codec of the request's
    /// format, calibrates when asked, compresses into <paramref name="output"/> and measures what was written.
    /// </summary>
    /// <exception cref="NanoscaleException">A bad spec, option or input; the output would overwrite the model.</exception>
    public static CompressionResult Run(string modelPath, string output, CompressionRequest request,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        if (new object?[] { request.Format, request.Budget, request.PlanPath }.Count(o => o is not null) != 1)
            throw new InvalidOptionException("CompressionRequest.Format", "give a format, a budget to choose a format per tensor, or a plan file (one of them)");
        var codec = request.Format is { } format ? CodecRegistry.Create(format) : null;
        if (request.Candidates is { } candidates) foreach (var spec in candidates) CodecRegistry.Create(spec); // fail before any work
        if (request.Shard is not null && request.Budget is not null)
            throw new InvalidOptionException("CompressionRequest.Shard", "a budget is not split into units (every unit would measure the whole model): write the plan once (plan --json with the one budget) and give it to every unit as CompressionRequest.PlanPath");
        var planned = request.PlanPath is { } planPath ? BudgetPlanner.ReadAssignment(planPath) : null;
        // Work files (a decoded GGUF, spilled Hessians, the planner's encodings) go beside the output.
        string outputFolder = Path.GetDirectoryName(Path.GetFullPath(output))!;
        using var opened = CheckpointLoader.Open(modelPath);
        if (request.Shard is not null && opened is GgufFile { Quantized.Count: > 0 })
            throw new InputException($"{modelPath}: a GGUF file of quantized tensors cannot be split into units (each would decode it whole); decompress it first", "CompressionRequest.Shard");
        // A GGUF file of ggml block types is re-quantized from its decoded values: decoded first, as F32 (exact for
        // every ggml type), into a work folder beside the output that goes when the run ends.
        using var decoded = opened is GgufFile { Quantized.Count: > 0 } ? TemporaryFolder.Create("gguf-decoded", outputFolder) : null;
        if (decoded is not null)
        {
            ModelFolder.CheckOutput(output, opened, null, request.Force);
            progress?.Report(new PipelineProgress("decode gguf", null, 0, 1, "files"));
            using var logical = LogicalCheckpoint.Wrap(CheckpointLoader.Open(modelPath));
            Decompressor.Decompress(logical, Path.Combine(decoded.Path, "model"), new DecompressOptions { DType = Tensors.DType.F32 }, null, cancellationToken);
        }
        using var source = decoded is null ? opened : CheckpointLoader.Open(Path.Combine(decoded.Path, "model"));
        // Checked before the work (calibration can take minutes), and again by the compressor itself.
        string[] alsoRead = [.. new[] { request.CalibrationPath, request.TokenizerPath }.OfType<string>()];
        if (request.Shard is { } unit)
        {
            if (!ModelFolder.IsFolder(output)) throw new InvalidOptionException("output", $"a unit of a sharded run writes into a folder of units, not the file {output}");
            // The unit's own folder gets a model folder's checks (new, not the model's, not inside its folder).
            string unitFolder = Path.Combine(output, unit.FolderName);
            if (!File.Exists(Path.Combine(unitFolder, ShardedCompression.ManifestName))) ModelFolder.CheckOutput(unitFolder, source, alsoRead, request.Force);
            Directory.CreateDirectory(output);
        }
        else ModelFolder.CheckOutput(output, source, alsoRead, request.Force);
        CalibrationSet? calibration = null;
        IDisposable? calibrationFiles = null;
        if (request.CalibrationPath is { } calibrationPath)
            (calibration, calibrationFiles) = Calibration.CollectReporting(source, calibrationPath, request.TokenizerPath, request.CalibrationTokens,
                request.Parallelism, progress, cancellationToken, request.CalibrationCache, outputFolder);
        using var releaseCalibration = calibrationFiles;
        BudgetPlan? plan = null;
        if (request.Budget is { } budget)
        {
            var table = BudgetPlanner.Measure(source, new PlanOptions
            {
                Candidates = request.Candidates,
                Include = request.Include,
                Exclude = request.Exclude,
                Calibration = calibration,
                ProbeTextPath = source.Config is null ? null : request.CalibrationPath,
                TokenizerPath = request.TokenizerPath,
                AllowNonFinite = request.AllowNonFinite,
                Parallelism = request.Parallelism,
                WorkFolder = outputFolder,
            }, progress, cancellationToken);
            plan = BudgetPlanner.Solve(table, budget);
        }
        if (planned is not null)
            foreach (var name in planned.Keys)
                if (!source.Tensors.Any(t => t.Name == name))
                    throw new InputException($"{request.PlanPath}: the plan names the tensor {name}, which {modelPath} does not have (a plan of another model?)", "CompressionRequest.PlanPath");
        var options = new CompressOptions
        {
            Codec = codec,
            Assignment = plan is not null ? BudgetPlanner.Codecs(plan) : planned is not null ? BudgetPlanner.Codecs(planned) : null,
            Selection = codec is null ? TensorSelection.Default : TensorSelection.For(codec, request.Include, request.Exclude),
            Force = request.Force,
            AlsoRead = alsoRead,
            MaxShardBytes = request.MaxShardBytes,
            TokenizerPath = request.TokenizerPath,
            EncodeOptions = new EncodeOptions
            {
                Parallelism = request.Parallelism,
                AllowNonFinite = request.AllowNonFinite,
                Calibration = calibration,
            },
        };
        if (request.Shard is { } shard)
            return ShardedCompression.RunUnit(source, output, shard, request, options, progress, cancellationToken) with { CalibrationTokens = calibration?.Tokens };
        return Run(source, output, options, request.MeasureError, progress, cancellationToken) with { Plan = plan, CalibrationTokens = calibration?.Tokens };
    }

    /// <summary>Compresses <paramref name="source"/> into <paramref name="output"/>, then, when
    /// <paramref name="measureError"/>, decodes every encoded tensor of the written file and compares it with the source.</summary>
    public static CompressionResult Run(ICheckpoint source, string output, CompressOptions options, bool measureError = true,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var report = Compressor.Compress(source, output, options, progress, cancellationToken);
        if (!measureError) return new CompressionResult(report, []);
        using var written = LogicalCheckpoint.Open(output);
        var errors = ErrorMetrics.Compare(source, written, cancellationToken, progress);
        return new CompressionResult(report, errors);
    }

    /// <summary>As <see cref="Run(ICheckpoint, string, CompressOptions, bool, IProgress{PipelineProgress}?, CancellationToken)"/>, into a temporary checkpoint in <paramref name="workFolder"/> (default: the system's
    /// temporary folder) that is deleted when the returned handle is disposed.</summary>
    public static (CompressionResult Result, TemporaryFile File) RunTemporary(ICheckpoint source, string? workFolder, CompressOptions options,
        bool measureError = true, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var file = TemporaryFile.In(workFolder, "nanoscale-work", ".safetensors");
        try
        {
            return (Run(source, file.Path, options, measureError, progress, cancellationToken), file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }
}
