using System.Diagnostics;
using Nanoscale.IO;
using Nanoscale.Codecs;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

public sealed record EvalOptions
{
    /// <summary>Spec string to compress with before evaluating; null evaluates the checkpoint as it is.</summary>
    public string? Format { get; init; }
    /// <summary>Text to score perplexity on; empty: none (then <see cref="TasksPath"/> must be set).</summary>
    public required string TextPath { get; init; }

    /// <summary>Multiple-choice items (<see cref="TaskFile"/>) to score accuracy on; null: none.</summary>
    public string? TasksPath { get; init; }
    public int? ContextLength { get; init; }

    /// <summary>Score at most this many tokens of the text (<see cref="PerplexityOptions.MaxTokens"/>); null: all.</summary>
    public int? MaxTokens { get; init; }
    public string? TokenizerPath { get; init; }
    /// <summary>Regexes that change which tensors the codec applies to (<see cref="TensorSelection"/>).</summary>
    public string? Include { get; init; }
    public string? Exclude { get; init; }

    /// <summary>
    /// The tensors every codec applies to in an evaluation or sweep: the same ones for all codecs (by default the
    /// linear weights, even for <c>lossless</c>), so that bpw, error and perplexity compare like with like.
    /// </summary>
    public TensorSelection Selection => new(Include, Exclude);

    /// <summary>Threads (default: every core).</summary>
    public Parallelism Parallelism { get; init; }

    /// <summary>How the evaluated model stores its key/value cache (default f32): what a narrower cache costs in
    /// perplexity is measured like a weight format.</summary>
    public Runtime.KvCacheType KvCache { get; init; }

    /// <summary>Calibration text for codecs fitted to activations (caldera); ignored by the others.</summary>
    public string? CalibrationPath { get; init; }

    /// <summary>Tokens of <see cref="CalibrationPath"/> to run.</summary>
    public int CalibrationTokens { get; init; } = 4096;

    /// <summary>Hessians already collected (a sweep collects once); wins over <see cref="CalibrationPath"/>.</summary>
    public LowRank.CalibrationSet? Calibration { get; init; }

    /// <summary>The calibration to encode with: <see cref="Calibration"/>, or collected from <see cref="CalibrationPath"/>
    /// when that is set, else null.</summary>
    public LowRank.CalibrationSet? ResolveCalibration(string modelPath, CancellationToken cancellationToken = default) =>
        Calibration ?? (CalibrationPath is { } path
            ? Pipeline.Calibration.Collect(modelPath, path, TokenizerPath, new CalibrationOptions
            {
                Tokens = CalibrationTokens,
                Parallelism = Parallelism,
            }, cancellationToken: cancellationToken)
            : null);

    /// <summary>Folder for the temporary compressed checkpoint (default: the system temp folder).</summary>
    public string? WorkFolder { get; init; }
}

/// <summary>
/// One evaluation: <see cref="EncodedBitsPerWeight"/> counts the stored parts of the encoded tensors (for a plain
/// model, the codec-eligible weights at their dtype width); <see cref="ModelBytes"/> is every tensor as stored;
/// <see cref="Error"/> is the encoded tensors' weight error from the stored bytes (null when nothing was encoded).
/// </summary>
/// <summary>What <c>eval</c> measured on one model.</summary>
/// <param name="Model">The model evaluated (before compression, when a format was given).</param>
/// <param name="Format">The format evaluated, or <c>original</c>.</param>
/// <param name="EncodedBitsPerWeight">Bits per weight of the tensors a codec applies to, from the stored bytes.</param>
/// <param name="ModelBytes">Stored bytes of every tensor.</param>
/// <param name="Error">Weight error of the compression; null for a model evaluated as it is.</param>
/// <param name="Perplexity">Null when no text was given.</param>
/// <param name="CompressTime">Time spent compressing first.</param>
/// <param name="TotalTime">Wall time of the whole evaluation.</param>
/// <param name="Tasks">Multiple-choice accuracy; null when no task file was given.</param>
public sealed record EvalReport(
    string Model, string Format, double EncodedBitsPerWeight, long ModelBytes, ErrorMetrics? Error,
    PerplexityResult? Perplexity, TimeSpan CompressTime, TimeSpan TotalTime, MultipleChoiceResult? Tasks = null);

/// <summary>
/// Perplexity of a model on compressed weights (SPEC §13–§14): compresses with the format into a temporary
/// checkpoint (so exactly the stored bytes are measured), then runs the runtime directly on the encoded tensors.
/// </summary>
public static class Evaluation
{
    public static EvalReport Evaluate(string modelPath, EvalOptions options, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        if (options.TextPath.Length == 0 && options.TasksPath is null)
            throw new InvalidOptionException("EvalOptions.TextPath", "give a text to score perplexity on, a task file, or both");
        var text = options.TextPath.Length == 0 ? null : TextInput.Read(options.TextPath, "EvalOptions.TextPath");
        var tasks = options.TasksPath is { } tasksPath ? TaskFile.Read(tasksPath, "EvalOptions.TasksPath") : null;
        // The tokenizer is the one beside the model given, also when the weights evaluated are a temporary compressed copy.
        string? tokenizerPath = options.TokenizerPath ?? TokenizerLoader.FindBeside(modelPath);
        TemporaryFile? temporary = null;
        try
        {
            string evaluated = modelPath;
            ErrorMetrics? error = null;
            TimeSpan compressTime = TimeSpan.Zero;
            if (options.Format is { } format)
            {
                var codec = CodecRegistry.Create(format);
                var calibration = options.ResolveCalibration(modelPath, cancellationToken);
                using var source = CheckpointLoader.Open(modelPath);
                if (source.Config is null)
                    throw new CheckpointFormatException(source.Path, "config", null, "the checkpoint does not describe a model architecture, so it cannot be run");
                (var result, temporary) = CompressionRun.RunTemporary(source, options.WorkFolder, new CompressOptions
                {
                    Codec = codec,
                    Selection = options.Selection,
                    EncodeOptions = new EncodeOptions { Parallelism = options.Parallelism, Calibration = calibration },
                }, measureError: true, progress, cancellationToken);
                error = result.TotalError;
                compressTime = clock.Elapsed;
                evaluated = temporary.Path;
            }

            using var loaded = LoadedModel.Open(evaluated, new ModelLoadOptions
            {
                TokenizerPath = tokenizerPath,
                Parallelism = options.Parallelism,
                KvCache = options.KvCache,
            });
            var perplexityOptions = new PerplexityOptions { ContextLength = options.ContextLength, MaxTokens = options.MaxTokens };
            var documents = text is null ? null : Runtime.Perplexity.Tokenize(loaded.Tokenizer, text, perplexityOptions.DocumentSeparator);
            // The text is ids now: without tasks to tokenize, the tokenizer's native memory goes back before scoring
            // (a lossless checkpoint's eval peaks within 10% of its file; docs/runtime.md).
            if (tasks is null) loaded.ReleaseTokenizer();
            var perplexity = documents is null ? null : Runtime.Perplexity.Evaluate(loaded.Model, documents, perplexityOptions,
                progress is null ? null : new Progress<PerplexityProgress>(p =>
                    progress.Report(new PipelineProgress("eval", null, p.PredictedTokens, p.TotalPredictedTokens, "tokens"))),
                cancellationToken);
            var accuracy = tasks is null ? null : MultipleChoice.Evaluate(loaded.Model, loaded.Tokenizer, tasks,
                progress is null ? null : new Progress<(long Done, long Total)>(p =>
                    progress.Report(new PipelineProgress("tasks", null, p.Done, p.Total, "items"))),
                cancellationToken);

            // The weights a codec applies to: the encoded ones, or for a plain model the ones it would encode.
            var selection = options.Selection;
            var compressed = loaded.Checkpoint;
            var weighed = compressed.Tensors.Where(t => t.Encoded is not null || selection.Selects(t.Plain!)).ToList();
            double bpw = 8.0 * weighed.Sum(t => t.StoredBytes) / Math.Max(1, weighed.Sum(t => t.ElementCount));
            return new EvalReport(modelPath, options.Format ?? compressed.Format ?? "original", bpw,
                compressed.Tensors.Sum(t => t.StoredBytes), error, perplexity, compressTime, clock.Elapsed, accuracy);
        }
        finally
        {
            temporary?.Dispose();
        }
    }
}
