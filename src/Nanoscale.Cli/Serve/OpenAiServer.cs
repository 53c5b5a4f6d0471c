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
internal sealed record ServeOptions(string Host = "127.0.0.1", int Port = 8080, string? ApiKey = null);

/// <summary>
/// The OpenAI-compatible HTTP face of a <see cref="CompletionService"/> (Kestrel, minimal APIs):
/// <c>GET /health</c>, <c>GET /v1/models</c>, <c>POST /v1/completions</c> and <c>POST /v1/chat/completions</c>, both with
/// <c>stream: true</c> as server-sent events. Every answer is JSON; every failure an OpenAI error object
/// (<c>{"error": {"message", "type", "param", "code"}}</c>) with 400 (malformed body, a field of the wrong type or out of
/// range), 401 (missing or wrong API key), 404 (another model's name, unknown path), 413 (a prompt longer than the
/// context, a body over 8 MiB) or 429 (queue full); the server keeps serving. Requests are cancelled when their client
/// disconnects.
/// </summary>
internal static class OpenAiServer
{
    private const long MaxBodyBytes = 8 << 20;

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    public static WebApplication Build(CompletionService service, ServeOptions options)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls($"http://{(options.Host.Contains(':') ? $"[{options.Host}]" : options.Host)}:{options.Port}");
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = MaxBodyBytes);
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = TimeSpan.FromSeconds(10));
        var app = builder.Build();

        if (options.ApiKey is { } key)
            app.Use(async (context, next) =>
            {
                if (context.Request.Path.StartsWithSegments("/v1") && context.Request.Headers.Authorization.ToString() != $"Bearer {key}")
                {
                    await Error(context, 401, "invalid_request_error", "missing or wrong API key (Authorization: Bearer KEY)", null, "invalid_api_key");
                    return;
                }
                await next(context);
            });

        app.MapGet("/health", () => Results.Json(new { status = "ok", model = service.ModelName }, Json));
        app.MapGet("/v1/models", () => Results.Json(new
        {
            @object = "list",
            data = new[] { new { id = service.ModelName, @object = "model", created = 0, owned_by = "nanoscale" } },
        }, Json));
        app.MapPost("/v1/completions", context => Complete(context, service, chat: false));
        app.MapPost("/v1/chat/completions", context => Complete(context, service, chat: true));
        app.MapFallback(context => Error(context, 404, "invalid_request_error", $"no route {context.Request.Method} {context.Request.Path}", null, "not_found"));
        return app;
    }

    /// <summary>A request field that is present but wrong: 400 naming it.</summary>
    private sealed class BadField(string field, string message) : Exception(message)
    {
        public string Field { get; } = field;
    }

    private static async Task Complete(HttpContext context, CompletionService service, bool chat)
    {
        CompletionRequest request;
        bool stream;
        try
        {
            JsonDocument document;
            try { document = await JsonDocument.ParseAsync(context.Request.Body, default, context.RequestAborted); }
            catch (JsonException e) { throw new BadField("body", $"the body is not valid JSON ({e.Message})"); }
            catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (e.StatusCode == 413)
            {
                await Error(context, 413, "invalid_request_error", $"the body exceeds {MaxBodyBytes} bytes", null, "request_too_large");
                return;
            }
            using (document)
            {
                var root = document.RootElement;
                if (root.ValueKind != JsonValueKind.Object) throw new BadField("body", "the body must be a JSON object");
                if (Str(root, "model") is { } model && model != service.ModelName)
                {
                    await Error(context, 404, "invalid_request_error", $"the model '{model}' does not exist; this server serves '{service.ModelName}'", "model", "model_not_found");
                    return;
                }
                stream = Bool(root, "stream") ?? false;
                var sampling = new SamplingOptions
                {
                    Temperature = Number(root, "temperature") ?? 1.0,
                    TopP = Number(root, "top_p") ?? 1.0,
                    Seed = Int(root, "seed") ?? Environment.TickCount,
                    StopStrings = Stops(root),
                };
                int maxTokens = Int(root, chat ? "max_completion_tokens" : "max_tokens") ?? Int(root, "max_tokens") ?? (chat ? Math.Min(256, service.MaxTokensLimit) : 16);
                request = chat
                    ? new CompletionRequest { Messages = Messages(root), MaxTokens = maxTokens, Sampling = sampling }
                    : new CompletionRequest { Prompt = Prompt(root), MaxTokens = maxTokens, Sampling = sampling };
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
            if (!stream)
            {
                var outcome = await service.CompleteAsync(request, null, context.RequestAborted);
                await Results.Json(Response(id, created, service.ModelName, chat, outcome), Json).ExecuteAsync(context);
                return;
            }
            await Stream(context, service, request, id, created, chat);
        }
        catch (InvalidOptionException e)
        {
            bool tooLong = e.Option == "prompt" && e.Message.Contains("context", StringComparison.Ordinal);
            await Error(context, tooLong ? 413 : 400, "invalid_request_error", e.Message, e.Option, tooLong ? "context_length_exceeded" : null);
        }
        catch (ServiceBusyException e)
        {
            await Error(context, 429, "rate_limit_exceeded", e.Message, null, "queue_full");
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // the client went away: nothing to answer
        }
    }

    private static object Response(string id, long created, string model, bool chat, CompletionOutcome outcome)
    {
        var usage = new { prompt_tokens = outcome.PromptTokens, completion_tokens = outcome.CompletionTokens, total_tokens = outcome.PromptTokens + outcome.CompletionTokens };
        return chat
            ? new
            {
                id, @object = "chat.completion", created, model,
                choices = new[] { new { index = 0, message = new { role = "assistant", content = outcome.Text }, finish_reason = outcome.FinishReason } },
                usage,
            }
            : new
            {
                id, @object = "text_completion", created, model,
                choices = new[] { new { index = 0, text = outcome.Text, logprobs = (object?)null, finish_reason = outcome.FinishReason } },
                usage,
            };
    }

    /// <summary>Server-sent events: one chunk per piece of text as generation produces it, a last chunk with the finish
    /// reason and the usage, then <c>[DONE]</c>.</summary>
    private static async Task Stream(HttpContext context, CompletionService service, CompletionRequest request, string id, long created, bool chat)
    {
        var pieces = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var work = service.CompleteAsync(request, text => pieces.Writer.TryWrite(text), context.RequestAborted);
        _ = work.ContinueWith(_ => pieces.Writer.TryComplete(), TaskScheduler.Default);
        bool started = false;
        string kind = chat ? "chat.completion.chunk" : "text_completion";
        object Chunk(string? text, string? finish) => chat
            ? new { id, @object = kind, created, model = service.ModelName, choices = new[] { new { index = 0, delta = text is null ? (object)new { } : new { content = text }, finish_reason = finish } } }
            : new { id, @object = kind, created, model = service.ModelName, choices = new[] { new { index = 0, text = text ?? "", logprobs = (object?)null, finish_reason = finish } } };
        async Task Send(object payload)
        {
            if (!started)
            {
                context.Response.ContentType = "text/event-stream";
                context.Response.Headers.CacheControl = "no-cache";
                started = true;
            }
            await context.Response.WriteAsync("data: " + JsonSerializer.Serialize(payload, Json) + "\n\n", context.RequestAborted);
            await context.Response.Body.FlushAsync(context.RequestAborted);
        }
        try
        {
            await foreach (var text in pieces.Reader.ReadAllAsync(context.RequestAborted))
                await Send(Chunk(text, null));
            var outcome = await work; // rethrows a refusal before any text: answered as an error object
            var last = Chunk(null, outcome.FinishReason);
            var usage = new { prompt_tokens = outcome.PromptTokens, completion_tokens = outcome.CompletionTokens, total_tokens = outcome.PromptTokens + outcome.CompletionTokens };
            await Send(Merge(last, usage));
            await context.Response.WriteAsync("data: [DONE]\n\n", context.RequestAborted);
        }
        catch (Exception) when (!started)
        {
            await work; // surface the refusal (InvalidOption, busy) to the caller's error mapping
            throw;
        }
    }

    /// <summary>The chunk's JSON with a <c>usage</c> member added.</summary>
    private static JsonElement Merge(object chunk, object usage)
    {
        var node = JsonSerializer.SerializeToNode(chunk, Json)!.AsObject();
        node["usage"] = JsonSerializer.SerializeToNode(usage, Json);
        return JsonSerializer.SerializeToElement(node, Json);
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

    private static IReadOnlyList<string> Stops(JsonElement root) => Field(root, "stop") switch
    {
        null => [],
        { ValueKind: JsonValueKind.String } s => [s.GetString()!],
        { ValueKind: JsonValueKind.Array } a when a.GetArrayLength() <= 4 && a.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String)
            => [.. a.EnumerateArray().Select(e => e.GetString()!)],
        _ => throw new BadField("stop", "'stop' must be a string or a list of at most 4 strings"),
    };

    private static string Prompt(JsonElement root) => Field(root, "prompt") switch
    {
        null => throw new BadField("prompt", "'prompt' is required"),
        { ValueKind: JsonValueKind.String } s => s.GetString()!,
        { ValueKind: JsonValueKind.Array } a when a.GetArrayLength() == 1 && a[0].ValueKind == JsonValueKind.String => a[0].GetString()!,
        _ => throw new BadField("prompt", "'prompt' must be a string (or a list of one string)"),
    };

    private static IReadOnlyList<(string Role, string Content)> Messages(JsonElement root)
    {
        if (Field(root, "messages") is not { ValueKind: JsonValueKind.Array } list || list.GetArrayLength() == 0)
            throw new BadField("messages", "'messages' must be a non-empty list of {role, content}");
        var messages = new List<(string, string)>();
        foreach (var m in list.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object || Str(m, "role") is not { } role || role is not ("system" or "user" or "assistant" or "developer"))
                throw new BadField("messages", "each message needs a role: system, user, assistant or developer");
            string content = Field(m, "content") switch
            {
                { ValueKind: JsonValueKind.String } s => s.GetString()!,
                { ValueKind: JsonValueKind.Array } parts => string.Concat(parts.EnumerateArray().Select(p =>
                    p.ValueKind == JsonValueKind.Object && Str(p, "type") == "text" && Str(p, "text") is { } t ? t
                        : throw new BadField("messages", "only text content parts are supported"))),
                _ => throw new BadField("messages", "each message needs a string content"),
            };
            messages.Add((role == "developer" ? "system" : role, content));
        }
        return messages;
    }
}
