using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Commands;

/// <summary>
/// <c>nanoscale generate MODEL [--prompt TEXT] [-n N] [--temperature T --top-k K --top-p P --repetition-penalty R
/// --seed S] [--stop TEXT]…</c>: text from (compressed) weights, streamed as it is produced, with prompt and generation
/// speed. Greedy by default.
/// </summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "Checkpoint (plain or compressed)" };
        var prompt = new Option<string>("--prompt") { Description = "Prompt (default: empty, i.e. start from BOS)", DefaultValueFactory = _ => "" };
        var suffix = new Option<string?>("--suffix")
        {
            Description = "Fill in the middle: --prompt is the text before a gap and this the text after it (code models' FIM tokens, as serve's suffix)",
        };
        var chat = new Option<string?>("--chat") { Description = "A user message: the model answers it as the assistant, through its chat template (as serve does)" };
        var system = new Option<string?>("--system") { Description = "A system message before --chat" };
        var chatTemplate = new Option<string?>("--chat-template") { Description = "A Jinja chat template file for --chat instead of the model's" };
        var jsonSchema = new Option<string?>("--json-schema")
        {
            Description = "Make the new text one JSON object following this JSON schema (inline JSON or a file; '{}' for any object): constrained decoding, as serve's response_format",
        };
        var regex = new Option<string?>("--regex")
        {
            Description = "Make the new text something this regular expression matches whole (ECMAScript, without lookaround or backreferences): constrained decoding, as serve's guided_regex",
        };
        var grammar = new Option<string?>("--grammar")
        {
            Description = "Make the new text something this GBNF grammar (llama.cpp's format; inline, or a .gbnf file) matches whole from its root rule: constrained decoding, as serve's grammar",
        };
        var flags = new SamplingFlags();
        var noStream = new Option<bool>("--no-stream") { Description = "Print the text at the end instead of as it is produced" };
        var tokenizer = CliRunner.TokenizerOption();
        var threads = CliRunner.ThreadsOption();
        var kvCache = CliRunner.KvCacheOption();
        var json = CliRunner.JsonOption();
        var command = new Command("generate", "Generate text (greedy, or sampled with --temperature), streamed, with tokens/s")
        {
            model, prompt, suffix, chat, system, chatTemplate, jsonSchema, regex, grammar,
        };
        foreach (var option in flags.All) command.Options.Add(option);
        foreach (Option option in (Option[])[noStream, tokenizer, threads, kvCache, json]) command.Options.Add(option);
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var path = parse.GetValue(model)!;
            int count = flags.Count(parse);
            var sampling = flags.Read(parse);
            using var loaded = LoadedModel.Open(path, new ModelLoadOptions
            {
                TokenizerPath = parse.GetValue(tokenizer),
                Parallelism = new(parse.GetValue(threads)),
                KvCache = parse.GetValue(kvCache),
            });
            string promptText = parse.GetValue(prompt)!;
            string? message = parse.GetValue(chat);
            if (message is null && (parse.GetValue(system) is not null || parse.GetValue(chatTemplate) is not null))
                throw new InvalidOptionException("--chat", "--system and --chat-template go with --chat");
            if (message is not null && promptText.Length > 0) throw new InvalidOptionException("--chat", "give --chat or --prompt, not both");
            string? after = parse.GetValue(suffix);
            if (after is not null && message is not null) throw new InvalidOptionException("--suffix", "a chat has no suffix: give --prompt with --suffix");
            var schema = parse.GetValue(jsonSchema) is { } schemaText ? ReadSchema(schemaText) : null;
            var rules = parse.GetValue(grammar) is { } grammarText ? ReadGrammar(grammarText) : null;
            bool stream = !context.Json && !parse.GetValue(noStream);
            var output = Console.Out;
            if (stream && message is null)
            {
                output.Write(promptText);
                output.Flush();
            }
            Action<string>? onText = stream ? piece => { output.Write(piece); output.Flush(); } : null;
            GenerationResult result;
            try
            {
                result = after is not null
                    ? loaded.Infill(promptText, after, count, sampling, onText, context.Cancellation, schema, parse.GetValue(regex), rules, "--suffix")
                    : message is null
                    ? loaded.Generate(promptText, count, sampling, onText, context.Cancellation, schema, parse.GetValue(regex), rules)
                    : loaded.Chat([.. parse.GetValue(system) is { } s ? [("system", s)] : Array.Empty<(string, string)>(), ("user", message)],
                        count, sampling, onText, parse.GetValue(chatTemplate), context.Cancellation, schema, parse.GetValue(regex), rules);
            }
            catch (InvalidOptionException) when (stream && message is null)
            {
                output.WriteLine(); // the prompt was echoed: the error goes on a line of its own
                throw;
            }
            if (context.Json)
                return new
                {
                    // Filled in: the prefix, the middle and the suffix, in the file's order.
                    text = after is not null ? promptText + result.NewText + after : message is null ? result.Text : result.NewText,
                    middle = after is not null ? result.NewText : null,
                    tokens = result.Tokens,
                    prompt_tokens = result.PromptTokens,
                    generated_tokens = result.GeneratedTokens,
                    stop_reason = result.Stop.ToString().ToLowerInvariant(),
                    stopped_at_end = result.StoppedAtEnd,
                    prompt_seconds = result.PromptSeconds,
                    generate_seconds = result.GenerateSeconds,
                    prompt_tokens_per_second = result.PromptTokensPerSecond,
                    generated_tokens_per_second = result.GeneratedTokensPerSecond,
                };
            if (stream) output.WriteLine(after ?? "");
            else output.WriteLine(after is not null ? promptText + result.NewText + after : message is null ? result.Text : result.NewText);
            context.Log($"prompt: {result.PromptTokens} tokens at {result.PromptTokensPerSecond:0.0} tokens/s; " +
                        $"generated: {result.GeneratedTokens} tokens at {result.GeneratedTokensPerSecond:0.0} tokens/s; stop: {Describe(result.Stop)}");
            return null;
        }));
        return command;
    }

    /// <summary><c>--grammar</c>: a file of GBNF when one exists at that path (at most 1 MiB), else the text itself.</summary>
    private static string ReadGrammar(string text)
    {
        if (!File.Exists(text)) return text.Contains("::=") ? text : throw new InvalidOptionException("--grammar", $"'{text}' is neither a grammar (no '::=') nor a file");
        if (new FileInfo(text).Length > 1 << 20) throw new InvalidOptionException("--grammar", $"{text} is larger than 1 MiB");
        return File.ReadAllText(text);
    }

    /// <summary><c>--json-schema</c>: inline JSON (starting with <c>{</c>) or a file of it.</summary>
    private static JsonSchema ReadSchema(string text)
    {
        string json;
        if (text.TrimStart().StartsWith('{')) json = text;
        else if (File.Exists(text)) json = File.ReadAllText(text);
        else throw new InvalidOptionException("--json-schema", $"'{text}' is neither inline JSON nor a file");
        try
        {
            using var document = System.Text.Json.JsonDocument.Parse(json);
            var schema = JsonSchema.From(document.RootElement);
            return schema.AllowsObject ? schema : throw new InvalidOptionException("--json-schema", "the schema must describe an object at its root");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidOptionException("--json-schema", $"{(json == text ? "the schema" : text)} is not valid JSON ({e.Message})");
        }
    }

    private static string Describe(StopReason stop) => stop switch
    {
        StopReason.EndToken => "end token",
        StopReason.StopString => "stop string",
        StopReason.Context => "the model's maximum sequence length",
        _ => "token limit",
    };
}
