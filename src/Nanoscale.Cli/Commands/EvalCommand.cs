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
        var text = new Option<string>("--text") { Description = "Text file to score", Required = true };
        var format = new Option<string?>("--format", "-f") { Description = "Compress with this format first (default: evaluate the checkpoint as it is)" };
        var ctx = new Option<int?>("--ctx") { Description = "Window size in tokens (default: the model's max sequence length, capped at 2048)" };
        var tokenizer = CliRunner.TokenizerOption();
        var include = CliRunner.IncludeOption();
        var exclude = CliRunner.ExcludeOption();
        var calib = CliRunner.CalibrationOption();
        var calibTokens = CliRunner.CalibrationTokensOption();
        var threads = CliRunner.ThreadsOption();
        var json = CliRunner.JsonOption();
        var command = new Command("eval", "Perplexity of a model on original or compressed weights")
        {
            model, text, format, ctx, tokenizer, include, exclude, calib, calibTokens, threads, json,
        };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var options = new EvalOptions
            {
                TextPath = parse.GetValue(text)!,
                Format = parse.GetValue(format),
                ContextLength = parse.GetValue(ctx),
                TokenizerPath = parse.GetValue(tokenizer),
                Include = parse.GetValue(include),
                Exclude = parse.GetValue(exclude),
                Parallelism = new(parse.GetValue(threads)),
                CalibrationPath = parse.GetValue(calib),
                CalibrationTokens = parse.GetValue(calibTokens),
            };
            if (options.ContextLength is < 2) throw new InvalidOptionException("--ctx", "must be at least 2");
            var progress = new ProgressSink();
            var report = Evaluation.Evaluate(parse.GetValue(model)!, options, progress, context.Cancellation);
            progress.Finish();
            if (context.Json) return ToJson(report);
            var p = report.Perplexity;
            Terminal.Out.WriteLine(
                $"{report.Format}: perplexity {p.Perplexity:0.0000} (mean NLL {p.MeanNll:0.000000} nats over {p.PredictedTokens} tokens, " +
                $"{p.Documents} documents, {p.Windows} windows of ≤{p.ContextLength}), {report.EncodedBitsPerWeight:0.###} bpw" +
                (report.Error is { } e ? $", weight SQNR {e.SqnrDb:0.00} dB" : "") +
                $", {p.TokensPerSecond:0} tokens/s, {report.TotalTime.TotalSeconds:0.00} s");
            return null;
        }));
        return command;
    }

    internal static object ToJson(EvalReport r) => new
    {
        model = r.Model,
        format = r.Format,
        mean_nll = r.Perplexity.MeanNll,
        perplexity = r.Perplexity.Perplexity,
        predicted_tokens = r.Perplexity.PredictedTokens,
        documents = r.Perplexity.Documents,
        windows = r.Perplexity.Windows,
        context_length = r.Perplexity.ContextLength,
        bits_per_weight = r.EncodedBitsPerWeight,
        model_bytes = r.ModelBytes,
        error = r.Error is null ? null : CompressCommand.ErrorJson(r.Error),
        tokens_per_second = r.Perplexity.TokensPerSecond,
        eval_seconds = r.Perplexity.Elapsed.TotalSeconds,
        compress_seconds = r.CompressTime.TotalSeconds,
        seconds = r.TotalTime.TotalSeconds,
    };
}
