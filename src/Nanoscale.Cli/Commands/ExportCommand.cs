using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale export MODEL --type q8_0 -o model.gguf</c>: a GGUF file llama.cpp runs (docs/gguf.md);
/// <c>--layout hf-mxfp4|ct-nvfp4 -o FOLDER</c>: a Hugging Face model folder in transformers' MXFP4 or compressed-tensors'
/// NVFP4 layout (docs/hf-layouts.md).</summary>
internal static class ExportCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("MODEL") { Description = "Model (plain or compressed): llama2.c .bin, safetensors, model folder or GGUF" };
        var output = new Option<string>("--output", "-o") { Description = "The GGUF file to write (*.gguf), or with --layout the model folder", Required = true };
        var layout = new Option<string>("--layout")
        {
            Description = "Instead of GGUF, a Hugging Face model folder: hf-mxfp4 (transformers' NAME_blocks/NAME_scales) or ct-nvfp4 " +
                          "(compressed-tensors nvfp4-pack-quantized, which vLLM loads); linear weights quantized, the rest copied",
        };
        layout.AcceptOnlyFromAmong([.. HfLayoutOptions.Layouts]);
        var include = new Option<string>("--include") { Description = "With --layout: regex of extra tensor names to quantize (e.g. 'lm_head')" };
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
        var command = new Command("export", "Write a GGUF file that llama.cpp runs (llama, qwen2 or qwen3 architecture, tokenizer embedded), or with --layout a Hugging Face folder in transformers' MXFP4 or compressed-tensors' NVFP4 layout")
            { input, output, type, layout, include, tokenizer, force, threads, json };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            if (parse.GetValue(layout) is { } chosen)
            {
                if (parse.GetResult(type) is { Implicit: false })
                    throw new Nanoscale.Tensors.InvalidOptionException("--type", "--type is the GGUF type; --layout writes its own 4-bit format");
                var sink = new ProgressSink();
                var hf = HfLayoutExport.Export(parse.GetValue(input)!, parse.GetValue(output)!, new HfLayoutOptions
                {
                    Layout = chosen,
                    Include = parse.GetValue(include),
                    TokenizerPath = parse.GetValue(tokenizer),
                    Force = parse.GetValue(force),
                    Parallelism = new(parse.GetValue(threads)),
                }, sink, context.Cancellation);
                sink.Finish();
                if (context.Json)
                    return new
                    {
                        output = hf.Output, layout = hf.Layout, bytes = hf.Bytes, quantized = hf.Quantized,
                        kept = hf.Kept.Select(k => new { name = k.Name, reason = k.Reason }), seconds = hf.Elapsed.TotalSeconds,
                    };
                context.Log($"{hf.Output}: {hf.Layout}, {hf.Quantized.Count} weights quantized, {Units.Bytes(hf.Bytes)}, {hf.Elapsed.TotalSeconds:0.0} s");
                foreach (var (name, reason) in hf.Kept) context.Log($"  {name}: kept ({reason})");
                return null;
            }
            if (parse.GetResult(include) is { Implicit: false })
                throw new Nanoscale.Tensors.InvalidOptionException("--include", "--include goes with --layout (a GGUF export quantizes every matrix)");
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
                $"vocabulary {report.Vocabulary}{(report.PreTokenizer is { } pre ? $" (pre-tokenizer {pre})" : "")} from {report.TokenizerPath}" +
                (report.ChatTemplateFrom is { } chat ? $"; chat template from {chat}" : ""));
            foreach (var t in report.Fallbacks)
                context.Log($"  {t.GgufName}: {t.Type} instead of {report.Type} ({t.Fallback})");
            return null;
        }));
        return command;
    }
}
