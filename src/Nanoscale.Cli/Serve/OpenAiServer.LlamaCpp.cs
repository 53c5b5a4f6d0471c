using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Http;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Serve;

/// <summary>
/// llama.cpp's own completion API (<c>POST /completion</c>, what its web UI's older versions, llama.vim and many
/// wrappers speak, and <c>GET /props</c>) on the same generation: a flat request with llama.cpp's names and defaults,
/// and a flat answer (<c>content</c>, <c>stop</c>, <c>stop_type</c>, token counts, <c>timings</c>); streamed, one
/// <c>data: {"content", "stop": false}</c> event per piece and a last one with <c>stop: true</c> and the rest, without
/// OpenAI's <c>[DONE]</c>.
/// </summary>
internal static partial class OpenAiServer
{
    // llama.cpp's sampling defaults for /completion (its common_params_sampling).
    private const double NativeTemperature = 0.8, NativeTopP = 0.95, NativeMinP = 0.05;
    private const int NativeTopK = 40;

    /// <summary><c>POST /completion</c>: <c>prompt</c> (a string), <c>n_predict</c> (−1 or absent: up to the context),
    /// <c>temperature</c>, <c>top_k</c>, <c>top_p</c>, <c>min_p</c>, <c>repeat_penalty</c>, <c>presence_penalty</c>,
    /// <c>frequency_penalty</c>, <c>seed</c> (−1: random), <c>stop</c>, <c>stream</c>, <c>grammar</c>,
    /// <c>json_schema</c>, <c>n_probs</c>; <c>cache_prompt</c> and <c>id_slot</c> are accepted and left to the server
    /// (prompt caching is on unless <c>--no-prompt-cache</c>).</summary>
    /// <remarks>With <paramref name="infill"/>, llama.cpp's <c>POST /infill</c>: the same options and answer, the prompt
    /// made from <c>input_prefix</c> and <c>input_suffix</c> (the text before and after the gap), <c>input_extra</c>
    /// (other files, <c>[{"filename", "text"}]</c>, as context) and <c>prompt</c> (what the middle already begins with)
    /// with the model's fill-in-the-middle tokens (<see cref="FillInTheMiddle"/>).</remarks>
    private static async Task NativeComplete(HttpContext context, CompletionService service, bool infill = false)
    {
        CompletionRequest request;
        bool stream;
        string prompt;
        try
        {
            if (await ReadBody(context, service) is not { } document) return;
            using (document)
            {
                var root = document.RootElement;
                prompt = Field(root, "prompt") switch
                {
                    null when infill => "",
                    null => throw new BadField("prompt", "'prompt' is required"),
                    { ValueKind: JsonValueKind.String } s => s.GetString()!,
                    _ => throw new BadField("prompt", "'prompt' must be a string (token-id prompts are not supported)"),
                };
                stream = Bool(root, "stream") ?? false;
                var (json, regex, grammar) = StructuredReply(root);
                var triggers = LazyTriggers(root, json is not null || regex is not null || grammar is not null, service);
                int predict = Int(root, "n_predict") ?? -1;
                if (predict == 0 || predict < -1) throw new BadField("n_predict", "'n_predict' must be −1 (up to the context) or positive");
                int? probs = Int(root, "n_probs") is int p and > 0 ? p : null;
                int seed = Seed(root) ?? -1;
                request = new CompletionRequest
                {
                    Prompt = infill ? Str(root, "input_prefix") ?? "" : prompt,
                    Suffix = infill ? Str(root, "input_suffix") ?? "" : null,
                    InfillFiles = infill ? InfillFiles(root) : null,
                    MiddleStart = infill ? prompt : "",
                    MaxTokens = predict == -1 ? service.MaxTokensLimit : predict,
                    JsonReply = json, RegexReply = regex, GrammarReply = grammar, ShapeTriggers = triggers,
                    Sampling = new SamplingOptions
                    {
                        Temperature = Math.Max(0, Number(root, "temperature") ?? NativeTemperature),
                        TopK = Int(root, "top_k") is int k && k > 0 ? k : Field(root, "top_k") is null ? NativeTopK : 0,
                        TopP = Number(root, "top_p") ?? NativeTopP,
                        MinP = Number(root, "min_p") ?? NativeMinP,
                        RepetitionPenalty = Number(root, "repeat_penalty") ?? 1,
                        PresencePenalty = Number(root, "presence_penalty") ?? 0,
                        FrequencyPenalty = Number(root, "frequency_penalty") ?? 0,
                        Seed = seed == -1 ? Environment.TickCount : seed,
                        StopStrings = NativeStops(root),
                        LogProbs = probs,
                    },
                };
            }
        }
        catch (BadField e)
        {
            await Error(context, 400, "invalid_request_error", e.Message, e.Field, null);
            return;
        }
        try
        {
            if (!stream)
            {
                var outcome = await service.CompleteAsync(request, null, context.RequestAborted);
                await Results.Json(NativeAnswer(service, request, prompt, outcome, outcome.Text), Json).ExecuteAsync(context);
                return;
            }
            var pieces = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true });
            var work = service.CompleteAsync(request, piece => pieces.Writer.TryWrite(piece), context.RequestAborted);
            _ = work.ContinueWith(_ => pieces.Writer.TryComplete(), TaskScheduler.Default);
            var events = new EventStream(context, Json);
            try
            {
                await foreach (var piece in pieces.Reader.ReadAllAsync(context.RequestAborted))
                    await events.Send(new { content = piece, stop = false, id_slot = 0 });
                var done = await work;
                await events.Send(NativeAnswer(service, request, prompt, done, ""));
            }
            catch (Exception) when (!events.Started)
            {
                await work; // the refusal (invalid option, busy) to the error mapping below
                throw;
            }
        }
        catch (Exception e) when (e is InvalidOptionException or ServiceBusyException)
        {
            await Refuse(context, e);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client left; its sequence left the batch.
        }
    }

    /// <summary><c>/infill</c>'s <c>input_extra</c>: other files as context, <c>[{"filename", "text"}]</c> (at most 1024).</summary>
    private static IReadOnlyList<(string Name, string Text)>? InfillFiles(JsonElement root)
    {
        const string Expected = "'input_extra' must be a list of at most 1024 {\"filename\": string, \"text\": string} objects";
        if (Field(root, "input_extra") is not { } extra) return null;
        if (extra.ValueKind != JsonValueKind.Array || extra.GetArrayLength() > 1024) throw new BadField("input_extra", Expected);
        return [.. extra.EnumerateArray().Select(chunk => chunk.ValueKind == JsonValueKind.Object
            && (Field(chunk, "filename") is null or { ValueKind: JsonValueKind.String }) && Field(chunk, "text") is { ValueKind: JsonValueKind.String } text
                ? (Str(chunk, "filename") ?? "tmp", text.GetString()!)
                : throw new BadField("input_extra", Expected))];
    }

    /// <summary>llama.cpp's <c>stop</c>: a list of strings (one string taken too), any number.</summary>
    private static IReadOnlyList<string> NativeStops(JsonElement root) => Field(root, "stop") switch
    {
        null => [],
        { ValueKind: JsonValueKind.String } s => [s.GetString()!],
        { ValueKind: JsonValueKind.Array } a when a.GetArrayLength() <= 16 && a.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String && e.GetString()!.Length > 0)
            => [.. a.EnumerateArray().Select(e => e.GetString()!)],
        _ => throw new BadField("stop", "'stop' must be a list of at most 16 non-empty strings"),
    };

    /// <summary>The flat answer (whole, or the last streamed event with <paramref name="content"/> empty).</summary>
    private static object NativeAnswer(CompletionService service, CompletionRequest request, string prompt, CompletionOutcome o, string content)
    {
        string stopType = o.Stop switch
        {
            StopReason.EndToken => "eos",
            StopReason.StopString => "word",
            StopReason.Length or StopReason.Context => "limit",
            _ => "none",
        };
        var stops = request.Sampling.StopStrings;
        return new
        {
            content,
            id_slot = 0,
            stop = true,
            model = service.ModelName,
            tokens_predicted = o.CompletionTokens,
            tokens_evaluated = o.PromptTokens,
            tokens_cached = o.CachedPromptTokens,
            prompt,
            stop_type = stopType,
            stopped_eos = stopType == "eos",
            stopped_word = stopType == "word",
            stopped_limit = stopType == "limit",
            // Which stop string ended it is not kept: named when the request gave only one.
            stopping_word = stopType == "word" && stops.Count == 1 ? stops[0] : "",
            truncated = false,
            generation_settings = NativeSettings(service, request.Sampling, request.MaxTokens),
            completion_probabilities = o.LogProbs?.Select(p => new
            {
                content = p.Token, logprob = p.LogProb,
                top_logprobs = p.Top.Select(t => new { token = t.Token, logprob = t.LogProb }).ToArray(),
            }).ToArray(),
            timings = new
            {
                prompt_n = o.PromptTokens - o.CachedPromptTokens,
                prompt_ms = o.PromptSeconds * 1000,
                prompt_per_second = o.PromptSeconds > 0 ? (o.PromptTokens - o.CachedPromptTokens) / o.PromptSeconds : 0,
                predicted_n = o.CompletionTokens,
                predicted_ms = o.GenerateSeconds * 1000,
                predicted_per_second = o.GenerateSeconds > 0 ? o.CompletionTokens / o.GenerateSeconds : 0,
            },
        };
    }

    private static object NativeSettings(CompletionService service, SamplingOptions sampling, int predict) => new
    {
        n_ctx = service.ContextLength,
        n_predict = predict,
        model = service.ModelName,
        temperature = sampling.Temperature,
        top_k = sampling.TopK,
        top_p = sampling.TopP,
        min_p = sampling.MinP,
        repeat_penalty = sampling.RepetitionPenalty,
        presence_penalty = sampling.PresencePenalty,
        frequency_penalty = sampling.FrequencyPenalty,
        seed = sampling.Seed,
        stop = sampling.StopStrings,
    };

    /// <summary><c>GET /props</c>: what llama.cpp's clients read of a server — its default generation settings, its
    /// slots (the batch size), the model, the chat template and its BOS/EOS tokens.</summary>
    private static object Props(CompletionService service) => new
    {
        default_generation_settings = NativeSettings(service, new SamplingOptions
        {
            Temperature = NativeTemperature, TopK = NativeTopK, TopP = NativeTopP, MinP = NativeMinP,
        }, -1),
        total_slots = service.MaxBatch,
        model_alias = service.ModelName,
        model_path = service.ModelName,
        chat_template = service.ChatTemplateText,
        bos_token = service.BosText,
        eos_token = service.EosText,
        build_info = "nanoscale",
    };
}
