using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Spectre.Console;

namespace Nanoscale.Cli.Commands;

/// <summary>
/// <c>nanoscale sample OUT [--preset NAME] [--layers N] [--dtype bf16|f16|f32] [--tokenizer DIR]</c>: writes a model
/// folder of deterministic random weights in the exact shapes, tensor names and config of a real model (SmolLM2-135M,
/// Qwen2.5-0.5B, Qwen3-0.6B, Llama-3.2-1B), for measuring formats and memory on models too large to have here.
/// </summary>
internal static class SampleCommand
{
    public static Command Create()
    {
        var output = new Argument<string>("OUT") { Description = "New (or empty) folder to write the model into" };
        var preset = new Option<string>("--preset")
        {
            Description = $"Shape and config: {string.Join(", ", SampleOptions.Presets.Keys)}",
            DefaultValueFactory = _ => "tiny",
        };
        preset.AcceptOnlyFromAmong([.. SampleOptions.Presets.Keys]);
        var layers = new Option<int?>("--layers") { Description = "Number of layers (default: the preset's)" };
        var dtype = new Option<string>("--dtype") { Description = "Weight dtype: bf16, f16 or f32", DefaultValueFactory = _ => "bf16" };
        dtype.AcceptOnlyFromAmong("bf16", "f16", "f32");
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Folder whose tokenizer files (tokenizer.json, tokenizer_config.json, …) are copied beside the model" };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the weights (same seed, same bytes)", DefaultValueFactory = _ => 20261124 };
        var shardSize = CliRunner.MaxShardSizeOption();
        var json = CliRunner.JsonOption();
        var command = new Command("sample", "Write a model folder of random weights in a real model's shapes and config")
        {
            output, preset, layers, dtype, tokenizer, seed, shardSize, json,
        };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var options = SampleOptions.Presets[parse.GetValue(preset)!] with
            {
                DType = parse.GetValue(dtype) switch { "f16" => DType.F16, "f32" => DType.F32, _ => DType.BF16 },
                Seed = parse.GetValue(seed),
                ShardBytes = ModelFolder.ParseShardSize(parse.GetValue(shardSize)!, shardSize.Name),
            };
            if (parse.GetValue(layers) is { } n)
                options = options with { Layers = n > 0 ? n : throw new InvalidOptionException(layers.Name, $"must be positive, not {n}") };
            if (parse.GetValue(tokenizer) is { } from)
            {
                if (!File.Exists(Path.Combine(from, "tokenizer.json")) && !File.Exists(Path.Combine(from, "tokenizer.model")))
                    throw new InvalidOptionException(tokenizer.Name, $"{from} is not a folder with a tokenizer.json or tokenizer.model");
                options = options with { TokenizerFrom = from };
            }
            var folder = OutputGuard.CheckFolder(parse.GetValue(output)!);
            long parameters = SampleCheckpoint.ParameterCount(options);
            context.Log($"sample: {parse.GetValue(preset)} with {options.Layers} layers, {Units.Count(parameters)} parameters ({options.DType}) → {folder}");
            SampleCheckpoint.Write(folder, options, context.Cancellation);
            if (context.Json) return new { output = folder, preset = parse.GetValue(preset), layers = options.Layers, parameters, dtype = options.DType.Name() };
            Terminal.Out.WriteLine($"{folder}: {Units.Count(parameters)} parameters, {Units.Bytes(ModelFolder.SizeOf(folder))}");
            return null;
        }));
        return command;
    }
}
