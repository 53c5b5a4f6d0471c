using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;
using Spectre.Console;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale eval MODEL --text FILE [--format SPEC] [--ctx N]</c>: perplexity (SPEC §13) on compressed or original weights.</summary>
internal static class EvalCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "Checkpoint (plain or compressed by `nanoscale compress`)" };
        var format = new Option<string?>("--format", "-f") { Description = "Compress with this format first (default: evaluate the checkpoint as it is)" };
        var flags = new EvalFlags(textRequired: true, "Text file to score",
            "Window size in tokens (default: the model's max sequence length, capped at 2048)");
        var json = CliRunner.JsonOption();
        var command = new Command("eval", "Perplexity of a model on original or compressed weights") { model, format };
        foreach (var option in flags.All) command.Add(option);
        command.Add(json);
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var options = flags.Read(parse) with { Format = parse.GetValue(format) };
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
