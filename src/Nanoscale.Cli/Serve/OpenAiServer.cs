using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Serve;

/// <summary>Where <c>nanoscale serve</c> listens and whom it answers.</summary>
/// <param name="SplitReasoning">Whether a thinking template's replies give <c>reasoning_content</c> apart from <c>content</c>.</param>
/// <param name="Pooling">How <c>/v1/embeddings</c> pools an input's hidden states.</param>
/// <param name="CorsOrigins">Origins whose web pages may call the API from a browser (<c>*</c>: any); none: no CORS headers.</param>
/// <param name="MoreApiKeys">Keys accepted beside <paramref name="ApiKey"/> (<c>--api-key-file</c>'s).</param>
internal sealed record ServeOptions(string Host = "127.0.0.1", int Port = 8080, string? ApiKey = null, bool SplitReasoning = true,
    EmbeddingPooling Pooling = EmbeddingPooling.Mean, IReadOnlyList<string>? CorsOrigins = null, IReadOnlyList<string>? MoreApiKeys = null)
{
    /// <summary>Every key a request may present (<see cref="ApiKey"/> and <see cref="MoreApiKeys"/>); empty: none is asked.</summary>
    public IReadOnlyList<string> ApiKeys => [.. (ApiKey is null ? [] : new[] { ApiKey }).Concat(MoreApiKeys ?? []).Distinct()];
}

/// <summary>
/// The OpenAI-compatible HTTP face of a <see cref="CompletionService"/> (Kestrel, minimal APIs):
/// <c>GET /health</c>, <c>GET /v1/models</c>, <c>POST /v1/completions</c> and <c>POST /v1/chat/completions</c>, both with
/// <c>stream: true</c> as server-sent events. Every answer is JSON; every failure an OpenAI error object
/// (<c>{"error": {"message", "type", "param", "code"}}</c>) with 400 (malformed body, a field of the wrong type or out of
/// range), 401 (missing or wrong API key), 404 (another model's name, unknown path), 413 (a prompt longer than the
/// context, a body over 8 MiB) or 429 (queue full); the server keeps serving. Requests are cancelled when their client
/// disconnects.
/// </summary>
internal static partial class OpenAiServer
{
    private const long MaxBodyBytes = 8 << 20;

    /// <summary>Most choices one request may ask for (<c>n</c>); each is a sequence of the batch.</summary>
    private const int MaxChoices = 8;

    /// <summary>Most alternatives the legacy completions API's <c>logprobs</c> may ask for (as OpenAI's).</summary>
    private const int MaxCompletionLogProbs = 5;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>Sends the started server one short completion and one chat completion over loopback, so the HTTP and
    /// JSON code a first request runs is compiled before a client waits on it (~0.2 s on a 2-core machine).</summary>
    public static async Task WarmUpAsync(WebApplication app, ServeOptions options, CancellationToken cancellationToken)
    {
        var url = app.Urls.First();
        using var http = new HttpClient { BaseAddress = new Uri(url.Replace("://0.0.0.0", "://127.0.0.1").Replace("://[::]", "://[::1]")) };
        if (options.ApiKeys is [var key, ..]) http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
        foreach (var (path, body) in ((string, string)[])[("/v1/completions", """{"prompt": "Hi", "max_tokens": 1}"""),
                     ("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}""")])
        {
            try { using var _ = await http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"), cancellationToken); }
            catch (HttpRequestException) { } // a warm-up that cannot reach the server changes nothing
        }
    }

    public static WebApplication Build(CompletionService service, ServeOptions options)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls($"http://{(options.Host.Contains(':') ? $"[{options.Host}]" : options.Host)}:{options.Port}");
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = MaxBodyBytes);
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = TimeSpan.FromSeconds(10));
        if (options.CorsOrigins is { Count: > 0 }) builder.Services.AddCors();
        var app = builder.Build();

        // Browsers' cross-origin requests (a web page's chat client) from the origins given with --cors: answered before
        // the API key is asked for, so a preflight (which carries no key) passes, and every answer, errors included,
        // carries the headers that let the page read it. ASP.NET Core's CORS middleware.
        if (options.CorsOrigins is { Count: > 0 } origins)
            app.UseCors(policy =>
            {
                if (origins.Contains("*")) policy.AllowAnyOrigin();
                else policy.WithOrigins([.. origins]);
                policy.AllowAnyHeader().AllowAnyMethod().SetPreflightMaxAge(TimeSpan.FromMinutes(10));
            });

        // A request that fails after it was accepted — a constraint too costly to follow (its automaton past its cap) is
        // the request's fault, anything else the server's — gets an error object (400 or 500), or once its stream has begun
        // an error event and the stream's end (as vLLM does), and the server goes on serving.
        app.Use(async (context, next) =>
        {
            try { await next(context); }
            catch (Exception e) when (!context.RequestAborted.IsCancellationRequested)
            {
                await Failed(context, e);
            }
        });

        if (options.ApiKeys is { Count: > 0 } keys)
        {
            // Compared in constant time (the answer's timing tells nothing of how much of a key was right).
            var accepted = keys.Select(k => System.Text.Encoding.UTF8.GetBytes("Bearer " + k)).ToArray();
            app.Use(async (context, next) =>
            {
                var presented = System.Text.Encoding.UTF8.GetBytes(context.Request.Headers.Authorization.ToString());
                bool known = false;
                foreach (var key in accepted) known |= System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(presented, key);
                if (!context.Request.Path.StartsWithSegments("/health") && !known)
                {
                    await Error(context, 401, "invalid_request_error", "missing or wrong API key (Authorization: Bearer KEY)", null, "invalid_api_key");
                    return;
                }
                await next(context);
            });
        }

        app.MapGet("/health", () => Results.Json(new
        {
            status = "ok",
            model = service.ModelName,
            in_service = service.InService,
            running = service.Running,
            kv_reserved_bytes = service.ReservedKvBytes,
            kv_budget_bytes = service.KvBudgetBytes,
            kv_cache = service.KvCacheName,
            kv_kept_bytes = service.PooledKvBytes,
            shared_prefixes = service.SharedPrefixes.Count,
            kv_shared_bytes = service.SharedPrefixes.Bytes,
            prompt_cache = service.PromptCache,
            cached_prompt_tokens = service.CachedPromptTokens,
        }, Json));
        app.MapGet("/metrics", () => Results.Text(Metrics(service), "text/plain; version=0.0.4; charset=utf-8"));
        var modelObject = new { id = service.ModelName, @object = "model", created = service.ModelCreated, owned_by = "nanoscale" };
        app.MapGet("/v1/models", () => Results.Json(new { @object = "list", data = new[] { modelObject } }, Json));
        // Retrieve a model (the OpenAI clients' GetModel): this one, or 404.
        app.MapGet("/v1/models/{**name}", (HttpContext context, string name) => name == service.ModelName
            ? Results.Json(modelObject, Json).ExecuteAsync(context)
            : Error(context, 404, "invalid_request_error", $"the model '{name}' does not exist; this server serves '{service.ModelName}'", "model", "model_not_found"));
        app.MapPost("/v1/embeddings", context => Embed(context, service, options.Pooling));
        foreach (var route in (string[])["tokenize", "detokenize", "apply-template"])
            app.MapPost("/" + route, context => Utility(context, service, route));
        var responses = new ResponseStore(256);
        bool split = options.SplitReasoning && service.ChatTemplateThinks;
        app.MapPost("/v1/responses", context => Respond(context, service, responses, split));
        app.MapPost("/v1/completions", context => Complete(context, service, chat: false));
        app.MapPost("/completion", context => NativeComplete(context, service));
        app.MapPost("/infill", context => NativeComplete(context, service, infill: true));
        app.MapGet("/props", () => Results.Json(Props(service), Json));
        app.MapPost("/v1/chat/completions", context => Complete(context, service, chat: true, split));
        app.MapFallback(context => Error(context, 404, "invalid_request_error", $"no route {context.Request.Method} {context.Request.Path}", null, "not_found"));
        return app;
    }

    /// <summary>A request field that is present but wrong: 400 naming it.</summary>
    private sealed class BadField(string field, string message) : Exception(message)
    {
        public string Field { get; } = field;
    }

    /// <summary><c>GET /metrics</c>: the service's counters and gauges in Prometheus' text format (<c>nanoscale_</c> names).</summary>
    internal static string Metrics(CompletionService service)
    {
        var m = service.Metrics;
        var text = new StringBuilder();
        void Write(string name, string type, string help, object value)
        {
            text.Append("# HELP nanoscale_").Append(name).Append(' ').Append(help).Append('\n');
            text.Append("# TYPE nanoscale_").Append(name).Append(' ').Append(type).Append('\n');
            text.Append("nanoscale_").Append(name).Append(' ').Append(Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture)).Append('\n');
        }
        Write("requests_admitted_total", "counter", "Completion and chat requests admitted.", m.Admitted);
        Write("requests_finished_total", "counter", "Requests that finished with an answer.", m.Finished);
        Write("requests_cancelled_total", "counter", "Requests cancelled (their client went away).", m.Cancelled);
        Write("requests_failed_total", "counter", "Requests that failed after admission (refused by the chat template, over the KV budget, ...).", m.Failed);
        Write("requests_rejected_total", "counter", "Requests turned away with 429: the batch and the queue were full.", m.Rejected);
        Write("prompt_tokens_total", "counter", "Prompt tokens of finished requests.", m.PromptTokens);
        Write("prompt_tokens_cached_total", "counter", "Prompt tokens taken from kept or running caches instead of run.", m.CachedPromptTokens);
        Write("generated_tokens_total", "counter", "Tokens generated for finished requests.", m.GeneratedTokens);
        Write("embedding_inputs_total", "counter", "Inputs embedded.", m.EmbeddingInputs);
        Write("embedding_tokens_total", "counter", "Tokens of the inputs embedded.", m.EmbeddingTokens);
        Write("steps_total", "counter", "Passes over the weights the batch has run.", service.Steps);
        Write("requests_running", "gauge", "Sequences in the running batch.", service.Running);
        Write("requests_in_service", "gauge", "Requests admitted and not finished (running or waiting).", service.InService);
        Write("kv_reserved_bytes", "gauge", "KV cache the admitted requests hold.", service.ReservedKvBytes);
        Write("kv_kept_bytes", "gauge", "KV cache finished requests' sessions keep for the next.", service.PooledKvBytes);
        Write("kv_shared_bytes", "gauge", "KV cache of shared prompt beginnings, held once for every request reading them.", service.SharedPrefixes.Bytes);
        if (service.KvBudgetBytes is { } budget) Write("kv_budget_bytes", "gauge", "The KV budget (--kv-budget).", budget);
        var (buckets, count, sum) = m.FirstText();
        text.Append("# HELP nanoscale_time_to_first_text_seconds From a request's arrival to its first generated text.\n");
        text.Append("# TYPE nanoscale_time_to_first_text_seconds histogram\n");
        long cumulative = 0;
        for (int i = 0; i < buckets.Length; i++)
        {
            cumulative += buckets[i];
            string le = i < ServiceMetrics.FirstTextBounds.Count ? ServiceMetrics.FirstTextBounds[i].ToString(System.Globalization.CultureInfo.InvariantCulture) : "+Inf";
            text.Append("nanoscale_time_to_first_text_seconds_bucket{le=\"").Append(le).Append("\"} ").Append(cumulative).Append('\n');
        }
        text.Append("nanoscale_time_to_first_text_seconds_sum ").Append(sum.ToString("R", System.Globalization.CultureInfo.InvariantCulture)).Append('\n');
        text.Append("nanoscale_time_to_first_text_seconds_count ").Append(count).Append('\n');
        return text.ToString();
    }

    /// <summary>A request's body as a JSON object, or null when an answer went out already (a body over the size limit:
    /// 413; another model's name: 404).</summary>
    /// <exception cref="BadField">Not JSON, or not an object.</exception>
    private static async Task<JsonDocument?> ReadBody(HttpContext context, CompletionService service)
    {
        JsonDocument document;
        try { document = await JsonDocument.ParseAsync(context.Request.Body, default, context.RequestAborted); }
        catch (JsonException e) { throw new BadField("body", $"the body is not valid JSON ({e.Message})"); }
        catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (e.StatusCode == 413)
        {
            await Error(context, 413, "invalid_request_error", $"the body exceeds {MaxBodyBytes} bytes", null, "request_too_large");
            return null;
        }
        var root = document.RootElement;
        try
        {
            if (root.ValueKind != JsonValueKind.Object) throw new BadField("body", "the body must be a JSON object");
            if (Str(root, "model") is { } model && model != service.ModelName)
            {
                await Error(context, 404, "invalid_request_error", $"the model '{model}' does not exist; this server serves '{service.ModelName}'", "model", "model_not_found");
                document.Dispose();
                return null;
            }
        }
        catch
        {
            document.Dispose();
            throw;
        }
        return document;
    }

    /// <summary>llama.cpp's utility routes: <c>POST /tokenize</c> <c>{"content", "add_special"}</c> →
    /// <c>{"tokens"}</c>, <c>POST /detokenize</c> <c>{"tokens"}</c> → <c>{"content"}</c>, and <c>POST /apply-template</c>
    /// <c>{"messages", "tools", "chat_template_kwargs"}</c> → <c>{"prompt"}</c> (the chat template's rendering, as a chat
    /// request's prompt is made).</summary>
    private static async Task Utility(HttpContext context, CompletionService service, string route)
    {
        try
        {
            if (await ReadBody(context, service) is not { } document) return;
            object answer;
            using (document)
            {
                var root = document.RootElement;
                answer = route switch
                {
                    "tokenize" => new { tokens = service.Tokenize(Str(root, "content") ?? throw new BadField("content", "'content' is required"), Bool(root, "add_special") ?? false) },
                    "detokenize" => new
                    {
                        content = service.Detokenize(Field(root, "tokens") is { ValueKind: JsonValueKind.Array } list
                            ? [.. list.EnumerateArray().Select(t => t.ValueKind == JsonValueKind.Number && t.TryGetInt32(out int id) ? id : throw new BadField("tokens", "'tokens' must be a list of token ids"))]
                            : throw new BadField("tokens", "'tokens' must be a list of token ids")),
                    },
                    _ => new { prompt = service.RenderPrompt(new CompletionRequest { Messages = Messages(root), Tools = Tools(root), ChatTemplateArguments = TemplateArguments(root, ReasoningEffort(root)) }) },
                };
            }
            await Results.Json(answer, Json).ExecuteAsync(context);
        }
        catch (BadField e)
        {
            await Error(context, 400, "invalid_request_error", e.Message, e.Field, null);
        }
        catch (InvalidOptionException e)
        {
            await Error(context, 400, "invalid_request_error", e.Message, e.Option, null);
        }
    }

    /// <summary><c>POST /v1/embeddings</c>: <c>input</c> (a string, a list of strings, a list of token ids, or a list of
    /// such lists), <c>encoding_format</c> <c>float</c> (the default) or <c>base64</c> (little-endian float32, as the
    /// official clients ask by default), <c>model</c>; <c>dimensions</c> only as the model's width.</summary>
    private static async Task Embed(HttpContext context, CompletionService service, EmbeddingPooling pooling)
    {
        List<object> inputs;
        bool base64;
        try
        {
            if (await ReadBody(context, service) is not { } document) return;
            using (document)
            {
                var root = document.RootElement;
                base64 = Str(root, "encoding_format") switch
                {
                    null or "float" => false,
                    "base64" => true,
                    _ => throw new BadField("encoding_format", "'encoding_format' may be \"float\" or \"base64\""),
                };
                if (Int(root, "dimensions") is { } dimensions && dimensions != service.EmbeddingWidth)
                    throw new BadField("dimensions", $"this model's embeddings have {service.EmbeddingWidth} dimensions (shortening them is not supported)");
                inputs = EmbeddingInputs(Field(root, "input") ?? throw new BadField("input", "'input' is required"));
            }
        }
        catch (BadField e)
        {
            await Error(context, 400, "invalid_request_error", e.Message, e.Field, null);
            return;
        }
        try
        {
            var (vectors, tokens) = await service.EmbedAsync(inputs, pooling, context.RequestAborted);
            var data = vectors.Select((v, i) => new
            {
                @object = "embedding", index = i,
                embedding = base64 ? (object)Convert.ToBase64String(System.Runtime.InteropServices.MemoryMarshal.AsBytes(v.AsSpan())) : v,
            }).ToArray();
            await Results.Json(new { @object = "list", data, model = service.ModelName, usage = new { prompt_tokens = tokens, total_tokens = tokens } }, Json)
                .ExecuteAsync(context);
        }
        catch (InvalidOptionException e)
        {
            bool tooLong = e.Option == "prompt";
            await Error(context, tooLong ? 413 : 400, "invalid_request_error", e.Message, tooLong ? "input" : e.Option, tooLong ? "context_length_exceeded" : null);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // the client went away
        }
    }

    /// <summary>The embeddings <c>input</c>: a string, a list of strings, a list of token ids, or a list of such lists.</summary>
    private static List<object> EmbeddingInputs(JsonElement input)
    {
        const string Expected = "'input' must be a string, a list of strings, a list of token ids, or a list of such lists";
        static int[] Ids(JsonElement list) => [.. list.EnumerateArray().Select(t => t.ValueKind == JsonValueKind.Number && t.TryGetInt32(out int id)
            ? id : throw new BadField("input", Expected))];
        switch (input.ValueKind)
        {
            case JsonValueKind.String: return [input.GetString()!];
            case JsonValueKind.Array when input.GetArrayLength() > CompletionService.MaxEmbeddingInputs * 64:
                throw new BadField("input", "'input' is too long a list");
            case JsonValueKind.Array when input.GetArrayLength() > 0 && input[0].ValueKind == JsonValueKind.Number:
                return [Ids(input)];
            case JsonValueKind.Array:
                return [.. input.EnumerateArray().Select(item => item.ValueKind switch
                {
                    JsonValueKind.String => (object)item.GetString()!,
                    JsonValueKind.Array => Ids(item),
                    _ => throw new BadField("input", Expected),
                })];
            default:
                throw new BadField("input", Expected);
        }
    }

    private static async Task Complete(HttpContext context, CompletionService service, bool chat, bool split = false)
    {
        CompletionRequest request;
        bool stream;
        bool? includeUsage;
        int choices;
        IReadOnlyList<(string Text, int[]? Ids)> prompts = [];
        try
        {
            if (await ReadBody(context, service) is not { } document) return;
            using (document)
            {
                var root = document.RootElement;
                var (jsonReply, regexReply, grammarReply) = StructuredReply(root);
                var triggers = LazyTriggers(root, jsonReply is not null || regexReply is not null || grammarReply is not null, service);
                stream = Bool(root, "stream") ?? false;
                includeUsage = IncludeUsage(root, stream);
                RefuseUnsupported(root, chat);
                choices = Int(root, "n") ?? 1;
                if (choices < 1 || choices > MaxChoices) throw new BadField("n", $"'n' must be within 1..{MaxChoices}");
                int? logProbs = chat ? RequestedChatLogProbs(root) : Int(root, "logprobs");
                if (!chat && logProbs is < 0 or > MaxCompletionLogProbs) throw new BadField("logprobs", $"'logprobs' must be within 0..{MaxCompletionLogProbs}");
                var sampling = new SamplingOptions
                {
                    Temperature = Number(root, "temperature") ?? 1.0,
                    TopP = Number(root, "top_p") ?? 1.0,
                    // vLLM's and llama.cpp's extensions: top_k (0 or −1: off), min_p, repetition_penalty.
                    TopK = Int(root, "top_k") is int k and < 0 ? 0 : Int(root, "top_k") ?? 0,
                    MinP = Number(root, "min_p") ?? 0,
                    RepetitionPenalty = Number(root, "repetition_penalty") ?? 1,
                    FrequencyPenalty = Number(root, "frequency_penalty") ?? 0,
                    PresencePenalty = Number(root, "presence_penalty") ?? 0,
                    LogProbs = logProbs,
                    Seed = Seed(root) ?? Environment.TickCount,
                    StopStrings = Stops(root),
                    LogitBias = LogitBias(root),
                };
                int maxTokens = Int(root, chat ? "max_completion_tokens" : "max_tokens") ?? Int(root, "max_tokens") ?? (chat ? Math.Min(256, service.MaxTokensLimit) : 16);
                request = chat
                    ? new CompletionRequest
                    {
                        Messages = Messages(root), ChatTemplateArguments = TemplateArguments(root, ReasoningEffort(root)), Tools = Tools(root), RequiredTool = RequiredTool(root),
                        ParallelToolCalls = Bool(root, "parallel_tool_calls") ?? true,
                        MaxTokens = maxTokens, Sampling = sampling, JsonReply = jsonReply, RegexReply = regexReply, GrammarReply = grammarReply, ShapeTriggers = triggers,
                    }
                    : new CompletionRequest
                    {
                        Echo = Bool(root, "echo") ?? false,
                        // Fill in the middle: a non-empty suffix is the text after the gap (an empty one, a plain completion).
                        Suffix = Str(root, "suffix") is { Length: > 0 } suffix ? suffix : null,
                        MaxTokens = maxTokens, Sampling = sampling, JsonReply = jsonReply, RegexReply = regexReply, GrammarReply = grammarReply, ShapeTriggers = triggers,
                    };
                if (!chat)
                {
                    prompts = Prompts(root);
                    if (prompts.Count * choices > MaxSequences)
                        throw new BadField("prompt", $"{prompts.Count} prompts × n = {choices} is more than {MaxSequences} sequences a request");
                }
                // Fields that would change the answer and are not implemented are refused rather than ignored.
                if (Int(root, "best_of") is int bestOf && bestOf != choices)
                    throw new BadField("best_of", "'best_of' is not supported beyond 'n' (every choice is returned)");
            }
        }
        catch (BadField e)
        {
            await Error(context, 400, "invalid_request_error", e.Message, e.Field, null);
            return;
        }

        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N")[..24];
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        try
        {
            // n choices are n sequences of the batch, seeded seed, seed + 1, …; several prompts, n choices each, in order.
            var requests = (chat ? [("", null)] : prompts).SelectMany(p => Enumerable.Range(0, choices)
                .Select(i => request with { Prompt = p.Text, PromptIds = p.Ids, Sampling = request.Sampling with { Seed = unchecked(request.Sampling.Seed + i) } })).ToList();
            if (!stream)
            {
                var outcomes = await CompleteAll(service, requests, null, context.RequestAborted);
                await Results.Json(Response(id, created, service.ModelName, chat, outcomes, split, tools: request.Tools is { Count: > 0 }, perPrompt: choices,
                        parallelCalls: request.ParallelToolCalls), Json)
                    .ExecuteAsync(context);
                return;
            }
            await Stream(context, service, requests, id, created, chat, split, choices, includeUsage);
        }
        catch (Exception e) when (e is InvalidOptionException or ServiceBusyException)
        {
            await Refuse(context, e);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // the client went away: nothing to answer
        }
    }

    /// <summary>A generation the service refused, as the API's error: a prompt longer than the context 413
    /// (<c>context_length_exceeded</c>), another bad option 400 naming the request's field, a full queue 429.</summary>
    private static Task Refuse(HttpContext context, Exception refusal)
    {
        if (refusal is ServiceBusyException) return Error(context, 429, "rate_limit_exceeded", refusal.Message, null, "queue_full");
        var e = (InvalidOptionException)refusal;
        bool tooLong = e.Option == "prompt" && e.Message.Contains("context", StringComparison.Ordinal);
        // The sampling checks name options as the command line spells them (top-p): the request's field is top_p.
        return Error(context, tooLong ? 413 : 400, "invalid_request_error", e.Message, e.Option?.Replace('-', '_'), tooLong ? "context_length_exceeded" : null);
    }

    /// <summary>Runs every request (the choices of one API request) in the batch; the first refusal cancels the others
    /// and is what the caller answers.</summary>
    private static async Task<CompletionOutcome[]> CompleteAll(CompletionService service, IReadOnlyList<CompletionRequest> requests,
        Action<int, string>? onText, CancellationToken cancellationToken, Action<int, IReadOnlyList<CompletionLogProb>>? onLogProbs = null)
    {
        using var all = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var tasks = requests.Select((r, i) => service.CompleteAsync(r, onText is null ? null : text => onText(i, text), all.Token,
            onLogProbs is null ? null : list => onLogProbs(i, list))).ToList();
        foreach (var task in tasks)
            _ = task.ContinueWith(_ =>
            {
                try { all.Cancel(); }
                catch (ObjectDisposedException) { } // every choice had ended already
            }, CancellationToken.None, TaskContinuationOptions.NotOnRanToCompletion, TaskScheduler.Default);
        try { return await Task.WhenAll(tasks); }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested
            && tasks.FirstOrDefault(t => t.IsFaulted)?.Exception?.InnerException is { } refusal)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(refusal);
            throw;
        }
    }

    internal static object Response(string id, long created, string model, bool chat, IReadOnlyList<CompletionOutcome> outcomes, bool split = false,
        bool tools = false, int? perPrompt = null, bool parallelCalls = true)
    {
        var usage = Usage(outcomes, perPrompt);
        return chat
            ? new
            {
                id, @object = "chat.completion", created, model,
                choices = outcomes.Select((o, i) => new
                {
                    index = i,
                    message = Message(o, split, tools, parallelCalls),
                    logprobs = ChatLogProbs(o.LogProbs), finish_reason = o.FinishReason,
                }).ToArray(),
                usage,
            }
            : new
            {
                id, @object = "text_completion", created, model,
                // Echoed: the prompt's text and log-probabilities first (its first token has none).
                choices = outcomes.Select((o, i) => new
                {
                    index = i, text = (o.PromptText ?? "") + o.Text,
                    logprobs = CompletionLogProbs(o.PromptText is null ? o.LogProbs : [.. o.PromptLogProbs ?? [], .. o.LogProbs ?? []]),
                    finish_reason = o.FinishReason,
                }).ToArray(),
                usage,
            };
    }

    /// <summary>The API's <c>usage</c>: each prompt counted once (the outcomes come in groups of
    /// <paramref name="perPrompt"/> choices a prompt; one group without it), every choice's new tokens, and in
    /// <c>prompt_tokens_details.cached_tokens</c> the prompt tokens a kept cache held (not run) for every choice.</summary>
    private static object Usage(IReadOnlyList<CompletionOutcome> outcomes, int? perPrompt = null)
    {
        int group = perPrompt ?? outcomes.Count;
        int completion = outcomes.Sum(o => o.CompletionTokens), prompt = outcomes.Where((_, i) => i % group == 0).Sum(o => o.PromptTokens);
        return new
        {
            prompt_tokens = prompt, completion_tokens = completion, total_tokens = prompt + completion,
            prompt_tokens_details = new { cached_tokens = outcomes.Min(o => o.CachedPromptTokens) },
        };
    }

    /// <summary>A chat reply as the API's message: its content (less a reasoning block, given apart as
    /// <c>reasoning_content</c> when <paramref name="split"/>), and its tool calls. With <paramref name="tools"/>, a
    /// reply cut off by <c>max_tokens</c> inside a call answers that call as far as it was written (its arguments not
    /// whole JSON), as OpenAI does and as the streamed answer has sent it (<see cref="ToolCallDeltas"/>).</summary>
    private static object Message(CompletionOutcome o, bool split, bool tools = false, bool parallelCalls = true)
    {
        var (reasoning, content) = split ? ReasoningStream.Split(o.Text, o.StartsInReasoning) : (null, o.Text);
        var made = o.ToolCalls;
        if (tools && made is null && o.FinishReason == "length")
        {
            var cut = new ToolCallDeltas();
            cut.Accept(content);
            if (cut.FirstCall is int at)
            {
                made = [.. cut.Calls.Take(parallelCalls ? int.MaxValue : 1).Select(c => new ToolCall(c.Id, c.Name, c.Arguments))];
                content = content[..at].TrimEnd();
            }
        }
        return (made, reasoning) switch
        {
            ({ } calls, null) => new { role = "assistant", content = content.Length > 0 ? content : null, tool_calls = ToolCallsJson(calls, indexed: false) },
            ({ } calls, _) => new { role = "assistant", content = content.Length > 0 ? content : null, reasoning_content = reasoning, tool_calls = ToolCallsJson(calls, indexed: false) },
            (null, null) => (object)new { role = "assistant", content },
            _ => new { role = "assistant", content, reasoning_content = reasoning },
        };
    }

    /// <summary>The legacy completions API's <c>logprobs</c> object (tokens, token_logprobs, top_logprobs, text_offset
    /// into the completion's text, or the chunk's when streamed), or null when not asked.</summary>
    private static object? CompletionLogProbs(IReadOnlyList<CompletionLogProb>? logProbs)
    {
        if (logProbs is not { } list) return null;
        var offsets = new int[list.Count];
        for (int i = 1; i < list.Count; i++) offsets[i] = offsets[i - 1] + list[i - 1].Token.Length;
        return new
        {
            tokens = list.Select(t => t.Token).ToArray(),
            // An echoed prompt's first token has none (NaN): null, as OpenAI writes it.
            token_logprobs = list.Select(t => double.IsNaN(t.LogProb) ? (double?)null : t.LogProb).ToArray(),
            // Two ids that decode to the same text keep the likelier one (a JSON object holds each key once).
            top_logprobs = list.Select(t => t.Top.Count == 0 ? null
                : t.Top.GroupBy(a => a.Token).ToDictionary(g => g.Key, g => g.Max(a => a.LogProb))).ToArray(),
            text_offset = offsets,
        };
    }

    /// <summary>The chat API's <c>logprobs</c> object (content: token, logprob, bytes, top_logprobs), or null.</summary>
    private static object? ChatLogProbs(IReadOnlyList<CompletionLogProb>? logProbs) => logProbs is not { } list ? null : new
    {
        content = list.Select(t => new
        {
            token = t.Token, logprob = t.LogProb, bytes = Bytes(t.Token),
            top_logprobs = t.Top.Select(a => new { token = a.Token, logprob = a.LogProb, bytes = Bytes(a.Token) }).ToArray(),
        }).ToArray(),
    };

    private static int[] Bytes(string text) => [.. Encoding.UTF8.GetBytes(text).Select(b => (int)b)];

    /// <summary>The chat API's <c>logprobs</c> (true/false) and <c>top_logprobs</c> (0..20) as a count of alternatives,
    /// or null when log-probabilities are not asked for.</summary>
    private static int? RequestedChatLogProbs(JsonElement root)
    {
        bool asked = Bool(root, "logprobs") ?? false;
        int? top = Int(root, "top_logprobs");
        if (top is not null && !asked) throw new BadField("top_logprobs", "'top_logprobs' needs \"logprobs\": true");
        if (top is < 0 or > SamplingOptions.MaxLogProbs) throw new BadField("top_logprobs", $"'top_logprobs' must be within 0..{SamplingOptions.MaxLogProbs}");
        return asked ? top ?? 0 : null;
    }

    /// <summary>Server-sent events: one chunk per piece of text as generation produces it (each with its choice's
    /// index), a chunk with each choice's finish reason as it ends, the usage, then <c>[DONE]</c>. The usage rides on
    /// the last choice's final chunk unless the request's <c>stream_options</c> said otherwise
    /// (<paramref name="includeUsage"/>, <see cref="IncludeUsage"/>).</summary>
    private static async Task Stream(HttpContext context, CompletionService service, IReadOnlyList<CompletionRequest> requests, string id, long created, bool chat,
        bool split = false, int? perPrompt = null, bool? includeUsage = null)
    {
        var pieces = Channel.CreateUnbounded<(int Index, string Text, IReadOnlyList<CompletionLogProb>? LogProbs)>(new UnboundedChannelOptions { SingleReader = true });
        // A sequence's log-probabilities come just before its piece of text, on the same thread: held until the piece.
        var pending = new IReadOnlyList<CompletionLogProb>?[requests.Count];
        // With tools offered, a reply may turn out to be calls: its text goes out until it may be a call's start, the
        // rest when the reply is done (its remaining text, or its calls).
        bool tools = requests[0].Tools is { Count: > 0 };
        var gates = tools ? requests.Select(_ => new ToolCallStream()).ToArray() : null;
        // ... and its calls go out as they are written: a call's id and name, then its arguments piece by piece.
        var calling = tools ? requests.Select(_ => new ToolCallDeltas()).ToArray() : null;
        // A thinking template's replies: the reasoning block goes out as reasoning_content, the rest as content.
        bool inside = split && service.StartsInReasoning(requests[0]); // every choice has the same prompt
        var thinking = split ? requests.Select(_ => new ReasoningStream(inside)).ToArray() : null;
        var work = CompleteAll(service, requests, (i, text) =>
        {
            pieces.Writer.TryWrite((i, text, pending[i]));
            pending[i] = null;
        }, context.RequestAborted, requests[0].Sampling.LogProbs is null || tools || split ? null : (i, list) => pending[i] = list);
        _ = work.ContinueWith(_ => pieces.Writer.TryComplete(), TaskScheduler.Default);
        string kind = chat ? "chat.completion.chunk" : "text_completion";
        // A choice's first chat delta names the role, as OpenAI's does (some clients take the message's role from it).
        var roleSent = new bool[requests.Count];
        object Delta(int index, string? text)
        {
            if (roleSent[index]) return text is null ? new { } : new { content = text };
            roleSent[index] = true;
            return new { role = "assistant", content = text ?? "" };
        }
        object Reasoning(int index, string reasoning)
        {
            object delta = roleSent[index] ? new { reasoning_content = reasoning } : new { role = "assistant", reasoning_content = reasoning };
            roleSent[index] = true;
            return new { id, @object = kind, created, model = service.ModelName, choices = new[] { new { index, delta, logprobs = (object?)null, finish_reason = (string?)null } } };
        }
        // The answer text of a piece, through the tool gate when tools are offered.
        async Task Answer(int index, string text, IReadOnlyList<CompletionLogProb>? logProbs)
        {
            if (gates is null)
            {
                await Send(Chunk(index, text, null, logProbs));
                return;
            }
            if (gates[index].Accept(text) is { Length: > 0 } ready) await Send(Chunk(index, ready, null));
            // Without parallel calls only the first goes out (the answer keeps only it).
            foreach (var call in calling![index].Accept(text))
                if (requests[index].ParallelToolCalls || call.Index == 0) await Send(CallChunk(index, call));
        }
        // A tool_calls delta: a call's start (index, id, type, name, empty arguments) or a piece of its arguments.
        object CallChunk(int index, ToolCallDeltas.Delta d)
        {
            object call = d.Id is not null
                ? new { index = d.Index, id = d.Id, type = "function", function = new { name = d.Name, arguments = "" } }
                : new { index = d.Index, function = new { arguments = d.Arguments } };
            object delta = roleSent[index] ? new { tool_calls = new[] { call } } : new { role = "assistant", content = (string?)null, tool_calls = new[] { call } };
            roleSent[index] = true;
            return new { id, @object = kind, created, model = service.ModelName, choices = new[] { new { index, delta, logprobs = (object?)null, finish_reason = (string?)null } } };
        }
        object Chunk(int index, string? text, string? finish, IReadOnlyList<CompletionLogProb>? logProbs = null) => chat
            ? new { id, @object = kind, created, model = service.ModelName, choices = new[] { new { index, delta = Delta(index, text), logprobs = ChatLogProbs(logProbs), finish_reason = finish } } }
            : new { id, @object = kind, created, model = service.ModelName, choices = new[] { new { index, text = text ?? "", logprobs = CompletionLogProbs(logProbs), finish_reason = finish } } };
        var events = new EventStream(context, Json);
        // include_usage: every chunk carries "usage": null, as OpenAI's do, and the usage comes in a chunk of its own.
        Task Send(object payload) => events.Send(includeUsage == true ? WithUsage(payload, null) : payload);
        try
        {
            // Echoed: each choice's text begins with the prompt's (sent once the first piece of any choice has come,
            // so a refused request still gets its error status); a scored prompt is its choice's first piece, with its
            // log-probabilities, from the service.
            bool echoed = !requests[0].Echo || requests[0].Sampling.LogProbs is not null;
            async Task Echo()
            {
                if (echoed) return;
                echoed = true;
                for (int i = 0; i < requests.Count; i++)
                    await Send(Chunk(i, requests[i].PromptIds is { } ids ? service.Detokenize(ids) : requests[i].Prompt, null));
            }
            await foreach (var (index, text, logProbs) in pieces.Reader.ReadAllAsync(context.RequestAborted))
            {
                await Echo();
                if (thinking is null)
                {
                    await Answer(index, text, logProbs);
                    continue;
                }
                var (reasoning, answer) = thinking[index].Accept(text);
                if (reasoning.Length > 0) await Send(Reasoning(index, reasoning));
                if (answer.Length > 0) await Answer(index, answer, null);
            }
            var outcomes = await work; // rethrows a refusal before any text: answered as an error object
            await Echo();
            if (thinking is not null)
                for (int i = 0; i < outcomes.Length; i++)
                {
                    var (reasoning, answer) = thinking[i].Finish();
                    if (reasoning.Length > 0) await Send(Reasoning(i, reasoning));
                    if (answer.Length > 0) await Answer(i, answer, null);
                }
            if (gates is not null)
                for (int i = 0; i < outcomes.Length; i++)
                {
                    int streamed = calling![i].Calls.Count();
                    if (outcomes[i].ToolCalls is { } calls)
                    {
                        // The calls not streamed as they were written (after one it could not follow) go out whole.
                        if (calls.Count <= streamed) continue;
                        var whole = ToolCallsJson([.. calls.Skip(streamed)], indexed: true, first: streamed);
                        var delta = roleSent[i] ? (object)new { tool_calls = whole } : new { role = "assistant", content = (string?)null, tool_calls = whole };
                        roleSent[i] = true;
                        await Send(new { id, @object = kind, created, model = service.ModelName, choices = new[] { new { index = i, delta, logprobs = (object?)null, finish_reason = (string?)null } } });
                    }
                    // A reply that is text: the rest of it (unless it began a call that was cut off, which went out as
                    // far as it was written).
                    else if (streamed == 0 && gates[i].Rest() is { Length: > 0 } rest) await Send(Chunk(i, rest, null));
                }
            for (int i = 0; i < outcomes.Length - 1; i++) await Send(Chunk(i, null, outcomes[i].FinishReason));
            var last = Chunk(outcomes.Length - 1, null, outcomes[^1].FinishReason);
            switch (includeUsage)
            {
                case null:
                    await events.Send(WithUsage(last, Usage(outcomes, perPrompt)));
                    break;
                case true:
                    await Send(last);
                    await events.Send(new { id, @object = kind, created, model = service.ModelName, choices = Array.Empty<object>(), usage = Usage(outcomes, perPrompt) });
                    break;
                default:
                    await Send(last);
                    break;
            }
            await events.Write("data: [DONE]\n\n");
        }
        catch (Exception) when (!events.Started)
        {
            await work; // surface the refusal (InvalidOption, busy) to the caller's error mapping
            throw;
        }
    }

    /// <summary>The chunk's JSON with a <c>usage</c> member added (null: <c>"usage": null</c>).</summary>
    private static JsonElement WithUsage(object chunk, object? usage)
    {
        var node = JsonSerializer.SerializeToNode(chunk, Json)!.AsObject();
        node["usage"] = JsonSerializer.SerializeToNode(usage, Json);
        return JsonSerializer.SerializeToElement(node, Json);
    }

    /// <summary>A request that failed after it was accepted: <see cref="NanoscaleException"/> (what it asked cannot be
    /// done: a grammar too costly to follow) 400, cancelled while the client waits (the server stopping) 503, anything
    /// else 500, as an error object; after a stream began, as a <c>data: {"error": …}</c> event, then
    /// <c>data: [DONE]</c> on the OpenAI routes.</summary>
    private static async Task Failed(HttpContext context, Exception e)
    {
        bool request = e is NanoscaleException, stopping = e is OperationCanceledException;
        string type = request ? "invalid_request_error" : "server_error";
        string message = request ? e.Message : stopping ? "the request was cancelled: the server is stopping" : $"the server failed: {e.Message}";
        if (!context.Response.HasStarted)
        {
            await Error(context, request ? 400 : stopping ? 503 : 500, type, message, null, null);
            return;
        }
        if (context.Response.ContentType?.StartsWith("text/event-stream", StringComparison.Ordinal) != true) return;
        try
        {
            await context.Response.WriteAsync("data: " + JsonSerializer.Serialize(new { error = new { message, type, param = (string?)null, code = (string?)null } }, Json) + "\n\n");
            if (context.Request.Path.StartsWithSegments("/v1")) await context.Response.WriteAsync("data: [DONE]\n\n");
            await context.Response.Body.FlushAsync();
        }
        catch (Exception) when (context.RequestAborted.IsCancellationRequested) { } // the client went away meanwhile
    }

    private static async Task Error(HttpContext context, int status, string type, string message, string? param, string? code)
    {
        if (context.Response.HasStarted) return;
        context.Response.StatusCode = status;
        await context.Response.WriteAsJsonAsync(new { error = new { message, type, param, code } }, Json);
    }

    // ---- fields: present with the right type, or absent (null); anything else is a 400 naming the field ----

    private static JsonElement? Field(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    private static string? Str(JsonElement root, string name) => Field(root, name) is { } v
        ? v.ValueKind == JsonValueKind.String ? v.GetString() : throw new BadField(name, $"'{name}' must be a string")
        : null;

    private static bool? Bool(JsonElement root, string name) => Field(root, name) is { } v
        ? v.ValueKind is JsonValueKind.True or JsonValueKind.False ? v.GetBoolean() : throw new BadField(name, $"'{name}' must be true or false")
        : null;

    private static double? Number(JsonElement root, string name) => Field(root, name) is { } v
        ? v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new BadField(name, $"'{name}' must be a number")
        : null;

    private static int? Int(JsonElement root, string name) => Field(root, name) is { } v
        ? v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i) ? i : throw new BadField(name, $"'{name}' must be an integer")
        : null;

    /// <summary><c>seed</c>: any integer of up to 64 bits, as OpenAI takes it (clients pass e.g. 2³²). One of 32 bits is
    /// the sampler's seed as it is (so it draws as <c>generate --seed</c> does); a larger one is folded to 32 bits (its
    /// halves xor-ed), so equal seeds still draw alike.</summary>
    private static int? Seed(JsonElement root)
    {
        if (Field(root, "seed") is not { } v) return null;
        if (v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out long seed))
            return seed is >= int.MinValue and <= int.MaxValue ? (int)seed : (int)(seed ^ (seed >> 32));
        if (v.ValueKind == JsonValueKind.Number && v.TryGetUInt64(out ulong large)) return (int)(large ^ (large >> 32));
        throw new BadField("seed", "'seed' must be an integer");
    }

    private static IReadOnlyList<string> Stops(JsonElement root) => Field(root, "stop") switch
    {
        null => [],
        { ValueKind: JsonValueKind.String } s => [s.GetString()!],
        { ValueKind: JsonValueKind.Array } a when a.GetArrayLength() <= 4 && a.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String)
            => [.. a.EnumerateArray().Select(e => e.GetString()!)],
        _ => throw new BadField("stop", "'stop' must be a string or a list of at most 4 strings"),
    };

    /// <summary>Sequences one request may ask for (prompts × n).</summary>
    private const int MaxSequences = 64;

    /// <summary>The completions route's <c>prompt</c>: a string, token ids, or a list of strings or of token-id lists
    /// (several prompts, answered in order, as OpenAI's and lm-evaluation-harness's batched requests have it), each as
    /// its text or its ids.</summary>
    private static IReadOnlyList<(string Text, int[]? Ids)> Prompts(JsonElement root)
    {
        const string Expected = "'prompt' must be a string, token ids, or a list of strings or of token-id lists";
        switch (Field(root, "prompt"))
        {
            case null: throw new BadField("prompt", "'prompt' is required");
            case { ValueKind: JsonValueKind.String } s: return [(s.GetString()!, null)];
            case { ValueKind: JsonValueKind.Array } a when Ids(a) is { } ids: return [("", ids)];
            case { ValueKind: JsonValueKind.Array } a when a.GetArrayLength() is > 0 and <= MaxSequences:
                return [.. a.EnumerateArray().Select(p => p.ValueKind == JsonValueKind.String ? (p.GetString()!, (int[]?)null)
                    : Ids(p) is { } ids ? ("", ids) : throw new BadField("prompt", Expected))];
            default: throw new BadField("prompt", Expected);
        }
    }

    private static int[]? Ids(JsonElement list) =>
        list.ValueKind == JsonValueKind.Array && list.GetArrayLength() > 0 && list.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out _))
            ? [.. list.EnumerateArray().Select(e => e.GetInt32())]
            : null;

    /// <summary><c>chat_template_kwargs</c> (vLLM's and llama.cpp's name): extra variables for the chat template, such
    /// as Qwen3's <c>enable_thinking</c>.</summary>
    /// <summary><c>chat_template_kwargs</c>, with <paramref name="reasoningEffort"/> (the request's
    /// <c>reasoning_effort</c>) as the template variable of that name unless the kwargs set it themselves.</summary>
    private static IReadOnlyDictionary<string, object?>? TemplateArguments(JsonElement root, string? reasoningEffort = null)
    {
        var arguments = Field(root, "chat_template_kwargs") switch
        {
            null => null,
            { ValueKind: JsonValueKind.Object } o => o.EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value.Clone()),
            _ => throw new BadField("chat_template_kwargs", "'chat_template_kwargs' must be an object"),
        };
        if (reasoningEffort is null) return arguments;
        arguments ??= [];
        arguments.TryAdd("reasoning_effort", reasoningEffort);
        return arguments;
    }

    /// <summary>OpenAI's <c>reasoning_effort</c> values.</summary>
    private static readonly string[] ReasoningEfforts = ["none", "minimal", "low", "medium", "high", "xhigh"];

    /// <summary><c>reasoning_effort</c>: passed to the chat template as the variable of that name, as vLLM does (gpt-oss's
    /// template reads it; a template that does not is unaffected).</summary>
    private static string? ReasoningEffort(JsonElement root) => Effort(Str(root, "reasoning_effort"), "reasoning_effort", "reasoning_effort");

    /// <summary>A reasoning effort as given (null: none), or a 400 naming <paramref name="field"/> when it is not one
    /// of OpenAI's values.</summary>
    private static string? Effort(string? effort, string field, string shown) => effort is null || ReasoningEfforts.Contains(effort) ? effort
        : throw new BadField(field, $"'{shown}' must be one of {string.Join(", ", ReasoningEfforts)}, not '{effort}'");

    /// <summary><c>stream_options</c> (an object, only with <c>stream: true</c>, as OpenAI has it): its
    /// <c>include_usage</c> true sends the usage in a chunk of its own with no choices before <c>[DONE]</c> and
    /// <c>"usage": null</c> on every other chunk, false sends none; null (not asked) puts it on the last choice's final
    /// chunk. Its other members (vLLM's) are left as they are.</summary>
    private static bool? IncludeUsage(JsonElement root, bool stream)
    {
        if (Field(root, "stream_options") is not { } options) return null;
        if (options.ValueKind != JsonValueKind.Object) throw new BadField("stream_options", "'stream_options' must be an object");
        if (!stream) throw new BadField("stream_options", "'stream_options' applies only with 'stream': true");
        return Field(options, "include_usage") switch
        {
            null => null,
            { ValueKind: JsonValueKind.True or JsonValueKind.False } v => v.GetBoolean(),
            _ => throw new BadField("stream_options", "'stream_options.include_usage' must be true or false"),
        };
    }

    /// <summary>Fields of OpenAI's API that would change the answer and that this server does not implement, refused
    /// (400, naming the field) rather than ignored: the deprecated <c>functions</c>/<c>function_call</c> (tools replace
    /// them), audio output, web search.</summary>
    private static void RefuseUnsupported(JsonElement root, bool chat)
    {
        if (!chat) return;
        foreach (var legacy in new[] { "functions", "function_call" })
            if (Field(root, legacy) is not null)
                throw new BadField(legacy, $"'{legacy}' (deprecated by OpenAI) is not supported: send the functions as 'tools' and the choice as 'tool_choice'");
        if (Field(root, "audio") is not null) throw new BadField("audio", "'audio' output is not supported: this server answers in text");
        if (Field(root, "web_search_options") is not null) throw new BadField("web_search_options", "web search is not supported");
        switch (Field(root, "modalities"))
        {
            case null:
                break;
            case { ValueKind: JsonValueKind.Array } list when list.EnumerateArray().All(m => m.ValueKind == JsonValueKind.String):
                if (list.EnumerateArray().FirstOrDefault(m => m.GetString() != "text") is { ValueKind: JsonValueKind.String } other)
                    throw new BadField("modalities", $"only the 'text' modality is supported, not '{other.GetString()}'");
                break;
            default:
                throw new BadField("modalities", "'modalities' must be a list of strings");
        }
    }

    /// <summary><c>logit_bias</c>: <c>{"token id": bias}</c>, at most 1024 entries (the bias range is checked with the
    /// other sampling options).</summary>
    private static Dictionary<int, double>? LogitBias(JsonElement root)
    {
        if (Field(root, "logit_bias") is not { } bias) return null;
        const string Expected = "'logit_bias' must map token ids (as strings) to numbers, at most 1024 of them";
        if (bias.ValueKind != JsonValueKind.Object) throw new BadField("logit_bias", Expected);
        var map = new Dictionary<int, double>();
        foreach (var entry in bias.EnumerateObject())
        {
            if (map.Count == 1024 || !int.TryParse(entry.Name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int id)
                || entry.Value.ValueKind != JsonValueKind.Number)
                throw new BadField("logit_bias", Expected);
            map[id] = entry.Value.GetDouble();
        }
        return map;
    }

    /// <summary>Characters of a request's grammar at most.</summary>
    private const int MaxGrammar = 64 * 1024;

    /// <summary>
    /// llama.cpp's lazy grammar: with <c>grammar_lazy: true</c>, the words of <c>grammar_triggers</c> (each
    /// <c>{"type": "word" or 1, "value": …}</c>, or the older <c>{"word": …}</c>) after which the reply is held to its
    /// shape, the word included; null when the request is not lazy. Other trigger types (tokens, patterns), a word that
    /// must be at the start, and a lazy request without a shape or without triggers are refused by name.
    /// </summary>
    private static IReadOnlyList<string>? LazyTriggers(JsonElement root, bool shaped, CompletionService service)
    {
        if (Bool(root, "grammar_lazy") != true) return null;
        if (!shaped) throw new BadField("grammar_lazy", "'grammar_lazy' needs a grammar (or another shape) to hold the reply to");
        if (Field(root, "grammar_triggers") is not { ValueKind: JsonValueKind.Array } list || list.GetArrayLength() == 0)
            throw new BadField("grammar_triggers", "a lazy grammar needs 'grammar_triggers': a list of {\"type\": \"word\", \"value\": …}");
        var words = new List<string>();
        foreach (var trigger in list.EnumerateArray())
        {
            if (trigger.ValueKind != JsonValueKind.Object) throw new BadField("grammar_triggers", "each trigger must be an object");
            if (Bool(trigger, "at_start") == true) throw new BadField("grammar_triggers", "triggers that must be at the start ('at_start') are not supported");
            // llama.cpp's types: 0 (token), 1 (word), 2 and 3 (patterns).
            var type = Field(trigger, "type");
            string? kind = type switch
            {
                null => "word",
                { ValueKind: JsonValueKind.String } t => t.GetString(),
                { ValueKind: JsonValueKind.Number } n when n.TryGetInt32(out int k) => k switch { 0 => "token", 1 => "word", _ => "pattern" },
                _ => null,
            };
            if (kind == "token" && Field(trigger, "token") is { } id)
            {
                // A token trigger holds from that token's text in the reply (a marker the reply keeps, or a plain token).
                if (id.ValueKind != JsonValueKind.Number || !id.TryGetInt32(out int token))
                    throw new BadField("grammar_triggers", "a token trigger's 'token' must be a token id");
                string text;
                try { text = service.ReplyText(token); }
                catch (InvalidOptionException e) { throw new BadField("grammar_triggers", e.Message); }
                if (text.Length == 0) throw new BadField("grammar_triggers", $"token {token} leaves no text in a reply (a control token), so it cannot trigger");
                words.Add(text);
                continue;
            }
            if (kind is not ("word" or "token"))
                throw new BadField("grammar_triggers", "only word and token triggers are supported (type \"word\" or 1, \"token\" or 0), not patterns");
            var value = Field(trigger, type is null ? "word" : "value");
            if (value is not { ValueKind: JsonValueKind.String } v || v.GetString() is not { Length: > 0 and <= 256 } text2)
                throw new BadField("grammar_triggers", "each word trigger needs its word: a string of 1..256 characters");
            words.Add(text2);
        }
        if (words.Count > 64) throw new BadField("grammar_triggers", "at most 64 triggers");
        return words;
    }

    /// <summary>
    /// What the reply is held to, by whichever one field asks: OpenAI's <c>response_format</c> (<c>text</c>,
    /// <c>json_object</c>, <c>json_schema</c>); vLLM's <c>guided_json</c> (a schema, or its JSON text), <c>guided_regex</c>,
    /// <c>guided_choice</c> (a list of strings) and their newer home <c>structured_outputs</c> (<c>json</c>,
    /// <c>regex</c>, <c>choice</c>, <c>grammar</c>); llama.cpp's <c>json_schema</c> and <c>grammar</c> (GBNF; vLLM's
    /// <c>guided_grammar</c> is read as GBNF too, the EBNF its xgrammar backend takes).
    /// </summary>
    private static (JsonSchema? Json, string? Regex, string? Grammar) StructuredReply(JsonElement root)
    {
        var asked = new List<string>();
        JsonSchema? json = null;
        string? regex = null, grammar = null;
        foreach (var name in (string[])["grammar", "guided_grammar"])
            if (Field(root, name) is { } g) grammar = Grammar(g, name, Add(name));
        if (Field(root, "response_format") is { } format && ReplyFormat(format, "response_format", "response_format", schemaNested: true) is { } fromFormat)
            (json, _) = (fromFormat, Add("response_format"));
        if (Field(root, "json_schema") is { } schema) json = Schema(schema, "json_schema", Add("json_schema"));
        if (Field(root, "guided_json") is { } guided) json = Schema(guided, "guided_json", Add("guided_json"));
        if (Field(root, "guided_regex") is { } pattern) regex = Regex(pattern, "guided_regex", Add("guided_regex"));
        if (Field(root, "guided_choice") is { } choice) regex = Choice(choice, "guided_choice", Add("guided_choice"));
        if (Field(root, "structured_outputs") is { } outputs)
        {
            if (outputs.ValueKind != JsonValueKind.Object) throw new BadField("structured_outputs", "'structured_outputs' must be an object");
            if (Field(outputs, "grammar") is { } g) grammar = Grammar(g, "structured_outputs", Add("structured_outputs.grammar"));
            if (Field(outputs, "json") is { } j) json = Schema(j, "structured_outputs", Add("structured_outputs.json"));
            if (Field(outputs, "regex") is { } r) regex = Regex(r, "structured_outputs", Add("structured_outputs.regex"));
            if (Field(outputs, "choice") is { } c) regex = Choice(c, "structured_outputs", Add("structured_outputs.choice"));
        }
        if (asked.Count > 1) throw new BadField(asked[1], $"the reply can be held to one shape: {string.Join(", ", asked)} were all given");
        return (json, regex, grammar);

        string Add(string name)
        {
            asked.Add(name);
            return name;
        }
        static JsonSchema Schema(JsonElement value, string field, string what)
        {
            if (value.ValueKind == JsonValueKind.String)
            {
                try
                {
                    using var parsed = JsonDocument.Parse(value.GetString()!);
                    return Schema(parsed.RootElement.Clone(), field, what);
                }
                catch (JsonException e)
                {
                    throw new BadField(field, $"'{what}' is a string that is not JSON ({e.Message})");
                }
            }
            if (value.ValueKind != JsonValueKind.Object) throw new BadField(field, $"'{what}' must be a JSON schema object");
            return ObjectSchema(value, field);
        }
        static string Regex(JsonElement value, string field, string what) =>
            value.ValueKind == JsonValueKind.String && value.GetString()!.Length is > 0 and <= JsonSchema.MaxPattern
                ? value.GetString()!
                : throw new BadField(field, $"'{what}' must be a regular expression of 1..{JsonSchema.MaxPattern} characters");
        static string Grammar(JsonElement value, string field, string what) =>
            value.ValueKind == JsonValueKind.String && value.GetString()!.Length is > 0 and <= MaxGrammar
                ? value.GetString()!
                : throw new BadField(field, $"'{what}' must be a GBNF grammar of 1..{MaxGrammar} characters");
        static string Choice(JsonElement value, string field, string what) =>
            value.ValueKind == JsonValueKind.Array && value.GetArrayLength() is > 0 and <= 256 && value.EnumerateArray().All(c => c.ValueKind == JsonValueKind.String && c.GetString()!.Length > 0)
                ? JsonConstraint.Matches.Choice(value.EnumerateArray().Select(c => c.GetString()!))
                : throw new BadField(field, $"'{what}' must be a list of 1..256 non-empty strings");
    }

    /// <summary>A reply format, chat's <c>response_format</c> or the Responses API's <c>text.format</c>: <c>text</c>
    /// (null), <c>json_object</c> (any object) or <c>json_schema</c> with its schema (in a <c>json_schema</c> member when
    /// <paramref name="schemaNested"/>, chat's shape; beside <c>type</c> otherwise); errors name <paramref name="field"/>.</summary>
    private static JsonSchema? ReplyFormat(JsonElement format, string field, string what, bool schemaNested)
    {
        if (format.ValueKind != JsonValueKind.Object) throw new BadField(field, $"'{what}' must be an object with a 'type'");
        switch (Str(format, "type"))
        {
            case null or "text": return null;
            case "json_object": return JsonSchema.Any;
            case "json_schema":
                var holder = schemaNested ? Field(format, "json_schema") : format;
                if (holder is not { ValueKind: JsonValueKind.Object } spec || Field(spec, "schema") is not { ValueKind: JsonValueKind.Object } schema)
                    throw new BadField(field, schemaNested ? "'json_schema' must be {\"name\": …, \"schema\": {…}}" : $"'{what}' json_schema needs a 'schema' object");
                return ObjectSchema(schema, field);
            default:
                throw new BadField(field, $"'{what}' type may be \"text\", \"json_object\" or \"json_schema\"");
        }
    }

    /// <summary>A reply's JSON schema, which must allow an object at its root; errors name <paramref name="field"/>.</summary>
    private static JsonSchema ObjectSchema(JsonElement schema, string field) =>
        JsonSchema.From(schema) is { AllowsObject: true } compiled ? compiled : throw new BadField(field, "the schema must describe an object at its root");

    /// <summary><c>tool_choice</c>: <c>auto</c> (the default) or <c>none</c> (null: the model chooses, or the tools are
    /// left out), <c>required</c> (<see cref="CompletionRequest.AnyTool"/>) or
    /// <c>{"type": "function", "function": {"name": …}}</c> (that name).</summary>
    private static string? RequiredTool(JsonElement root)
    {
        const string Expected = "'tool_choice' may be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": …}}";
        switch (Field(root, "tool_choice"))
        {
            case null: return null;
            case { ValueKind: JsonValueKind.String } word:
                return word.GetString() switch
                {
                    "auto" or "none" => null,
                    "required" => CompletionRequest.AnyTool,
                    _ => throw new BadField("tool_choice", Expected),
                };
            case { ValueKind: JsonValueKind.Object } named when Str(named, "type") == "function"
                && Field(named, "function") is { ValueKind: JsonValueKind.Object } function && Str(function, "name") is { Length: > 0 } name:
                if (Field(root, "tools") is not { ValueKind: JsonValueKind.Array } offered
                    || !offered.EnumerateArray().Any(t => t.ValueKind == JsonValueKind.Object && Field(t, "function") is { ValueKind: JsonValueKind.Object } f && Str(f, "name") == name))
                    throw new BadField("tool_choice", $"'tool_choice' names '{name}', which is not among the tools");
                return name;
            default:
                throw new BadField("tool_choice", Expected);
        }
    }

    /// <summary><c>tools</c>: function definitions for the chat template, unless <c>tool_choice</c> is <c>none</c>.</summary>
    private static IReadOnlyList<object>? Tools(JsonElement root)
    {
        var choice = Field(root, "tool_choice");
        if (Field(root, "tools") is not { } tools) return null;
        if (tools.ValueKind != JsonValueKind.Array || tools.GetArrayLength() > 128)
            throw new BadField("tools", "'tools' must be a list of at most 128 function definitions");
        foreach (var tool in tools.EnumerateArray())
            if (tool.ValueKind != JsonValueKind.Object || Str(tool, "type") != "function" || Field(tool, "function") is not { ValueKind: JsonValueKind.Object } function
                || Str(function, "name") is not { Length: > 0 })
                throw new BadField("tools", "each tool must be {\"type\": \"function\", \"function\": {\"name\": …, \"parameters\": …}}");
        if (choice is { ValueKind: JsonValueKind.String } c && c.GetString() == "none" || tools.GetArrayLength() == 0) return null;
        return [.. tools.EnumerateArray().Select(t => (object)t.Clone())];
    }

    private static IReadOnlyList<ChatMessage> Messages(JsonElement root)
    {
        if (Field(root, "messages") is not { ValueKind: JsonValueKind.Array } list || list.GetArrayLength() == 0)
            throw new BadField("messages", "'messages' must be a non-empty list of {role, content}");
        var messages = new List<ChatMessage>();
        foreach (var m in list.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object || Str(m, "role") is not { } role || role is not ("system" or "user" or "assistant" or "developer" or "tool"))
                throw new BadField("messages", "each message needs a role: system, user, assistant, developer or tool");
            var calls = role == "assistant" ? ToolCalls(m) : null;
            string? content = Field(m, "content") switch
            {
                { ValueKind: JsonValueKind.String } s => s.GetString()!,
                { ValueKind: JsonValueKind.Array } parts => string.Concat(parts.EnumerateArray().Select(p =>
                    p.ValueKind == JsonValueKind.Object && Str(p, "type") == "text" && Str(p, "text") is { } t ? t
                        : throw new BadField("messages", "only text content parts are supported"))),
                null when calls is not null => null,
                _ => throw new BadField("messages", "each message needs a string content (an assistant's may be null when it has tool_calls)"),
            };
            string? callId = null;
            if (role == "tool" && Str(m, "tool_call_id") is not { Length: > 0 } answered)
                throw new BadField("messages", "a tool message needs the 'tool_call_id' it answers");
            else if (role == "tool") callId = Str(m, "tool_call_id");
            messages.Add(new ChatMessage(role == "developer" ? "system" : role, content) { ToolCalls = calls, ToolCallId = callId });
        }
        return messages;
    }

    /// <summary>An assistant message's <c>tool_calls</c>: <c>[{id, type: "function", function: {name, arguments}}]</c>.</summary>
    private static IReadOnlyList<ToolCall>? ToolCalls(JsonElement message)
    {
        if (Field(message, "tool_calls") is not { } calls) return null;
        if (calls.ValueKind != JsonValueKind.Array) throw new BadField("messages", "'tool_calls' must be a list");
        var list = new List<ToolCall>();
        foreach (var call in calls.EnumerateArray())
        {
            if (call.ValueKind != JsonValueKind.Object || Field(call, "function") is not { ValueKind: JsonValueKind.Object } function
                || Str(function, "name") is not { Length: > 0 } name)
                throw new BadField("messages", "each tool call needs {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}");
            list.Add(new ToolCall(Str(call, "id") ?? "", name, Str(function, "arguments") ?? "{}"));
        }
        return list.Count > 0 ? list : null;
    }

    /// <summary>The API's <c>tool_calls</c> of a reply; <paramref name="indexed"/> adds the <c>index</c> streamed deltas carry.</summary>
    private static object[] ToolCallsJson(IReadOnlyList<ToolCall> calls, bool indexed, int first = 0) => [.. calls.Select((c, i) => indexed
        ? (object)new { index = first + i, id = c.Id, type = "function", function = new { name = c.Name, arguments = c.Arguments } }
        : new { id = c.Id, type = "function", function = new { name = c.Name, arguments = c.Arguments } })];
}
