using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale decompress IN -o OUT [--dtype bf16|f16|f32]</c>: writes a plain model folder (or one safetensors file).</summary>
internal static class DecompressCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("IN") { Description = "Compressed checkpoint" };
        var output = new Option<string>("--output", "-o")
        {
            Description = "Output model folder (shards, config.json, tokenizer), or a single file when it ends in .safetensors",
            Required = true,
        };
        var shardSize = CliRunner.MaxShardSizeOption();
        var dtype = new Option<string?>("--dtype") { Description = "Dtype of floating-point tensors: bf16, f16 or f32 (default: each tensor's original dtype)" };
        dtype.AcceptOnlyFromAmong("bf16", "f16", "f32");
        var force = new Option<bool>("--force") { Description = "Allow the output inside the input's model folder (never over one of its files)" };
        var json = CliRunner.JsonOption();
        var command = new Command("decompress", "Write a plain model folder (or safetensors file) from a compressed one") { input, output, shardSize, dtype, force, json };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            DType? target = parse.GetValue(dtype) switch { "bf16" => DType.BF16, "f16" => DType.F16, "f32" => DType.F32, _ => null };
            var progress = new ProgressSink();
            var result = Decompressor.Decompress(parse.GetValue(input)!, parse.GetValue(output)!, new DecompressOptions
                {
                    DType = target,
                    Force = parse.GetValue(force),
                    MaxShardBytes = ModelFolder.ParseShardSize(parse.GetValue(shardSize)!, shardSize.Name),
                },
                progress, context.Cancellation);
            progress.Finish();
            if (context.Json) return new { output = result.Output, bytes = result.Bytes, tensors = result.Tensors, format = result.Format };
            context.Log($"{result.Output}: {result.Tensors} tensors, {Units.Bytes(result.Bytes)}");
            return null;
        }));
        return command;
    }
}
