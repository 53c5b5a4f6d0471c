using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;
using Spectre.Console;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale generate MODEL [--prompt TEXT] [--tokens N]</c>: greedy decoding, a quick sanity check of (compressed) weights.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "Checkpoint (plain or compressed)" };
        var prompt = new Option<string>("--prompt") { Description = "Prompt (default: empty, i.e. start from BOS)", DefaultValueFactory = _ => "" };
        var tokens = new Option<int>("--tokens", "-n") { Description = "New tokens to generate", DefaultValueFactory = _ => 64 };
        var tokenizer = CliRunner.TokenizerOption();
        var threads = CliRunner.ThreadsOption();
        var json = CliRunner.JsonOption();
        var command = new Command("generate", "Greedy text generation") { model, prompt, tokens, tokenizer, threads, json };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var path = parse.GetValue(model)!;
            int count = parse.GetValue(tokens);
            if (count < 1) throw new InvalidOptionException("--tokens", "must be at least 1");
            using var loaded = LoadedModel.Open(path, new ModelLoadOptions
            {
                TokenizerPath = parse.GetValue(tokenizer),
                Parallelism = new(parse.GetValue(threads)),
            });
            var result = loaded.Generate(parse.GetValue(prompt)!, count, context.Cancellation);
            if (context.Json) return new { text = result.Text, tokens = result.Tokens, prompt_tokens = result.PromptTokens, stopped_at_end = result.StoppedAtEnd };
            Terminal.Out.WriteLine(result.Text);
            return null;
        }));
        return command;
    }
}
