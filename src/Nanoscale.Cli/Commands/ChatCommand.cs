using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;

namespace Nanoscale.Cli.Commands;

/// <summary>
/// <c>nanoscale chat MODEL [--system TEXT] [-n N] [sampling flags]</c>: a conversation on standard input, a user
/// message a line; each answer streamed as it is produced, the conversation so far rendered with the model's chat
/// template every turn (as <c>serve</c> renders it) and only what the key/value cache does not hold yet run
/// (<see cref="ChatSession"/>). <c>/reset</c> forgets the conversation; an empty line is skipped; the end of input ends it.
/// </summary>
internal static class ChatCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "Checkpoint (plain or compressed) with a chat template beside it, or give --chat-template" };
        var system = new Option<string?>("--system") { Description = "A system message that opens the conversation" };
        var chatTemplate = new Option<string?>("--chat-template") { Description = "A Jinja chat template file instead of the model's" };
        var flags = new SamplingFlags();
        flags.Tokens.DefaultValueFactory = _ => 256;
        var tokenizer = CliRunner.TokenizerOption();
        var threads = CliRunner.ThreadsOption();
        var kvCache = CliRunner.KvCacheOption();
        var json = CliRunner.JsonOption();
        var command = new Command("chat", "Chat with the model: a user message a line on standard input, answers streamed") { model, system, chatTemplate };
        foreach (var option in flags.All) command.Options.Add(option);
        foreach (Option option in (Option[])[tokenizer, threads, kvCache, json]) command.Options.Add(option);
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            int count = flags.Count(parse);
            var sampling = flags.Read(parse);
            using var loaded = LoadedModel.Open(parse.GetValue(model)!, new ModelLoadOptions
            {
                TokenizerPath = parse.GetValue(tokenizer),
                Parallelism = new(parse.GetValue(threads)),
                KvCache = parse.GetValue(kvCache),
            });
            using var chat = loaded.StartChat(parse.GetValue(system), parse.GetValue(chatTemplate));
            var turns = new List<object>();
            var output = Console.Out;
            bool stream = !context.Json;
            // At a terminal, a prompt on standard error shows where to type (and stays out of piped output).
            bool prompting = !Console.IsInputRedirected;
            while ((prompting ? Prompt() : Console.In.ReadLine()) is { } line)
            {
                context.Cancellation.ThrowIfCancellationRequested();
                if (line.Trim().Length == 0) continue;
                if (line.Trim() == "/reset")
                {
                    chat.Reset();
                    context.Log("(conversation reset)");
                    continue;
                }
                var result = chat.Reply(line, count, sampling with { Seed = sampling.Seed + turns.Count },
                    stream ? piece => { output.Write(piece); output.Flush(); } : null, context.Cancellation);
                if (stream) output.WriteLine();
                context.Log($"({result.PromptTokens} prompt tokens, {chat.ReusedTokens} of them from the cache; {result.GeneratedTokens} new at " +
                            $"{result.GeneratedTokensPerSecond:0.0} tokens/s)");
                turns.Add(new
                {
                    user = line,
                    reply = result.NewText,
                    prompt_tokens = result.PromptTokens,
                    reused_tokens = chat.ReusedTokens,
                    generated_tokens = result.GeneratedTokens,
                    stop_reason = result.Stop.ToString().ToLowerInvariant(),
                });
            }
            return context.Json ? new { turns } : null;
        }));
        return command;
    }

    private static string? Prompt()
    {
        Console.Error.Write("> ");
        return Console.In.ReadLine();
    }
}
