using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale export MODEL --type q8_0 -o model.gguf</c>: a GGUF file llama.cpp runs (docs/gguf.md).</summary>
internal static class ExportCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("MODEL") { Description = "Model (plain or compressed): llama2.c .bin, safetensors, model folder or GGUF" };
        var output = new Option<string>("--output", "-o") { Description = "The GGUF file to write (*.gguf)", Required = true };
        var type = new Option<string>("--type", "-t")
        {
            Description = $"ggml type of the weight matrices: {string.Join(", ", GgufExportOptions.Types)} (norms stay f32; rows that are not whole blocks fall back to f16)",
            DefaultValueFactory = _ => "f16",
        };
        type.AcceptOnlyFromAmong([.. GgufExportOptions.Types]);
        var tokenizer = CliRunner.TokenizerOption();
        var force = new Option<bool>("--force") { Description = "Allow the output inside the input's model folder (never over one of its files)" };
        var threads = CliRunner.ThreadsOption();
        var json = CliRunner.JsonOption();
        var command = new Command("export", "Write a GGUF file that llama.cpp runs (llama, qwen2 or qwen3 architecture, tokenizer embedded)")
            { input, output, type, tokenizer, force, threads, json };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var progress = new ProgressSink();
            var report = GgufExport.Export(parse.GetValue(input)!, parse.GetValue(output)!, new GgufExportOptions
                {
                    Type = parse.GetValue(type)!,
                    TokenizerPath = parse.GetValue(tokenizer),
                    Force = parse.GetValue(force),
                    Parallelism = new(parse.GetValue(threads)),
                },
                progress, context.Cancellation);
            progress.Finish();
            if (context.Json) return report;
            context.Log($"{report.Output}: {report.Tensors.Count} tensors, {Units.Bytes(report.Bytes)}, {report.Type}; " +
                $"vocabulary {report.Vocabulary}{(report.PreTokenizer is { } pre ? $" (pre-tokenizer {pre})" : "")} from {report.TokenizerPath}");
            foreach (var t in report.Fallbacks)
                context.Log($"  {t.GgufName}: {t.Type} instead of {report.Type} ({t.Fallback})");
            return null;
        }));
        return command;
    }
}
