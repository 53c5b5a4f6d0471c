using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;
using Spectre.Console;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale eval MODEL --text FILE [--format SPEC] [--ctx N]</c>: perplexity (SPEC §13) on compressed or original weights.</summary>
internal static class EvalCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "Checkpoint (plain or compressed by `nanoscale compress`)" };
        var format = new Option<string?>("--format", "-f") { Description = "Compress with this format first (default: evaluate the checkpoint as it is)" };
        var flags = new EvalFlags(textRequired: false, "Text file to score perplexity on",
            "Window size in tokens (default: the model's max sequence length, capped at 2048)");
        var tasks = new Option<string?>("--tasks")
        {
            Description = "Multiple-choice items, JSON Lines {\"context\", \"choices\": [..], \"answer\": i}: accuracy by log-likelihood (sum and per character)",
        };
        var json = CliRunner.JsonOption();
        var command = new Command("eval", "Perplexity (--text) and multiple-choice accuracy (--tasks) on original or compressed weights") { model, format, tasks };
        foreach (var option in flags.All) command.Add(option);
        command.Add(json);
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var options = flags.Read(parse) with { Format = parse.GetValue(format), TasksPath = parse.GetValue(tasks) };
            if (options.TextPath.Length == 0 && options.TasksPath is null)
                throw new InvalidOptionException("--text", "give --text FILE (perplexity), --tasks FILE (accuracy), or both");
            var progress = new ProgressSink();
            var report = Evaluation.Evaluate(parse.GetValue(model)!, options, progress, context.Cancellation);
            progress.Finish();
            if (context.Json) return ToJson(report);
            if (report.Perplexity is { } p)
                Terminal.Out.WriteLine(
                    $"{report.Format}: perplexity {p.Perplexity:0.0000} (mean NLL {p.MeanNll:0.000000} nats over {p.PredictedTokens} tokens, " +
                    $"{p.Documents} documents, {p.Windows} windows of ≤{p.ContextLength}), {report.EncodedBitsPerWeight:0.###} bpw" +
                    (report.Error is { } e ? $", weight SQNR {e.SqnrDb:0.00} dB" : "") +
                    $", {p.TokensPerSecond:0} tokens/s, {report.TotalTime.TotalSeconds:0.00} s");
            if (report.Tasks is { } t)
                Terminal.Out.WriteLine(
                    $"{report.Format}: accuracy {t.Accuracy:0.0000} ± {t.AccuracyStderr:0.0000}, length-normalised {t.AccuracyNormalised:0.0000} ± " +
                    $"{t.AccuracyNormalisedStderr:0.0000} over {t.Items} items ({t.ScoredTokens} continuation tokens, {t.Elapsed.TotalSeconds:0.00} s), " +
                    $"{report.EncodedBitsPerWeight:0.###} bpw");
            return null;
        }));
        return command;
    }

    internal static object ToJson(EvalReport r) => new
    {
        model = r.Model,
        format = r.Format,
        mean_nll = r.Perplexity?.MeanNll,
        perplexity = r.Perplexity?.Perplexity,
        predicted_tokens = r.Perplexity?.PredictedTokens,
        documents = r.Perplexity?.Documents,
        windows = r.Perplexity?.Windows,
        context_length = r.Perplexity?.ContextLength,
        tasks = r.Tasks is { } t ? new
        {
            items = t.Items,
            accuracy = t.Accuracy,
            accuracy_stderr = t.AccuracyStderr,
            accuracy_norm = t.AccuracyNormalised,
            accuracy_norm_stderr = t.AccuracyNormalisedStderr,
            continuation_tokens = t.ScoredTokens,
            seconds = t.Elapsed.TotalSeconds,
        } : null,
        bits_per_weight = r.EncodedBitsPerWeight,
        model_bytes = r.ModelBytes,
        error = r.Error is null ? null : CompressCommand.ErrorJson(r.Error),
        tokens_per_second = r.Perplexity?.TokensPerSecond,
        eval_seconds = r.Perplexity?.Elapsed.TotalSeconds,
        compress_seconds = r.CompressTime.TotalSeconds,
        seconds = r.TotalTime.TotalSeconds,
    };
}
