using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Nanoscale.Codecs;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale decompress IN -o OUT [--dtype bf16|f16|f32]</c>: writes a plain safetensors checkpoint.</summary>
internal static class DecompressCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("IN") { Description = "Compressed checkpoint" };
        var output = new Option<string>("--output", "-o") { Description = "Output .safetensors file", Required = true };
        var dtype = new Option<string?>("--dtype") { Description = "Dtype of floating-point tensors: bf16, f16 or f32 (default: each tensor's original dtype)" };
        dtype.AcceptOnlyFromAmong("bf16", "f16", "f32");
        var json = CliRunner.JsonOption();
        var command = new Command("decompress", "Write a plain safetensors checkpoint from a compressed one") { input, output, dtype, json };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var outPath = parse.GetValue(output)!;
            using var compressed = CompressedCheckpoint.Open(parse.GetValue(input)!);
            if (Path.GetFullPath(outPath) == Path.GetFullPath(compressed.Container.Path))
                throw new InvalidOptionException("--output", "it would overwrite the input");
            DType? target = parse.GetValue(dtype) switch { "bf16" => DType.BF16, "f16" => DType.F16, "f32" => DType.F32, _ => null };
            var progress = new ProgressSink();
            Decompressor.Decompress(compressed, outPath, new DecompressOptions { DType = target }, progress, context.Cancellation);
            progress.Finish();
            var bytes = new FileInfo(outPath).Length;
            if (context.Json) return new { output = outPath, bytes, tensors = compressed.Tensors.Count, format = compressed.Format };
            context.Log($"{outPath}: {compressed.Tensors.Count} tensors, {Units.Bytes(bytes)}");
            return null;
        }));
        return command;
    }
}
