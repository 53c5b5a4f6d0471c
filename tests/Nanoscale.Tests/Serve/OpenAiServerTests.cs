using CsCheck;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Nanoscale.Cli.Serve;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Serve;

/// <summary>
/// <c>nanoscale serve</c>'s HTTP API, started in-process on a free loopback port with stories260K: OpenAI-shaped
/// answers whose text is the runtime's own generation, streaming that adds up to the same text, usage counts, and
/// every kind of bad request answered with the right status and an error object while the server keeps serving.
/// </summary>
public sealed class OpenAiServerTests : IAsyncLifetime
{
    private WebApplication _app = null!;
    private CompletionService _service = null!;
    private HttpClient _http = null!;

    private async Task Start(string? apiKey = null, int maxWaiting = 16, int maxBatch = 8)
    {
        var model = LoadedModel.Open(SharedData.Stories260K);
        _service = new CompletionService(model, "stories260K", maxWaiting, maxBatch: maxBatch);
        _app = OpenAiServer.Build(_service, new ServeOptions("127.0.0.1", 0, apiKey));
        await _app.StartAsync();
        _http = new HttpClient { BaseAddress = new Uri(_app.Urls.Single()) };
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        _http?.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        _service?.Dispose();
    }

    private async Task<(HttpStatusCode Status, JsonElement Json)> Post(string path, string body)
    {
        using var response = await _http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, JsonDocument.Parse(text).RootElement.Clone());
    }

    /// <summary>llama.cpp's lazy grammar (<c>grammar_lazy</c>, word <c>grammar_triggers</c> in both of its forms): the reply
    /// is the model's own until the trigger word, then held to the grammar from that word on (stories260K greedily writes
    /// ", there was a little girl…"; held from the start, the same grammar makes it begin "there"); the OpenAI routes read
    /// the same fields; a lazy request without triggers or a grammar, or with another trigger type, is a 400.</summary>
    [Fact]
    public async Task LazyGrammarsHoldFromTheirTriggerWord()
    {
        await Start();
        const string grammar = "\"grammar\": \"root ::= \\\"there was a \\\" [a-z]{2,5} \\\".\\\"\"";
        foreach (var triggers in new[] { "[{\"type\": \"word\", \"value\": \"there\"}]", "[{\"word\": \"there\"}]", "[{\"type\": 1, \"value\": \"there\"}]" })
        {
            var (status, lazy) = await Post("/completion", $$"""{"prompt": "Once upon a time", "n_predict": 40, "temperature": 0, {{grammar}}, "grammar_lazy": true, "grammar_triggers": {{triggers}}}""");
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Matches("^, there was a [a-z]{2,5}\\.$", lazy.GetProperty("content").GetString()!);
        }
        // A token trigger holds from that token's text: the first token of " there" here, the grammar held from it on.
        using (var model = LoadedModel.Open(SharedData.Stories260K))
        {
            int first = model.Tokenizer.Encode(" there", addBos: false)[0];
            string start = model.Tokenizer.Decode([first]);
            Assert.StartsWith(start, " there");
            string fromToken = $"\"grammar\": \"root ::= \\\"{start}{" there"[start.Length..]} was a \\\" [a-z]{{2,5}} \\\".\\\"\"";
            var (tokenStatus, byToken) = await Post("/completion", $$"""{"prompt": "Once upon a time", "n_predict": 40, "temperature": 0, {{fromToken}}, "grammar_lazy": true, "grammar_triggers": [{"type": 0, "value": "{{start}}", "token": {{first}}}]}""");
            Assert.Equal(HttpStatusCode.OK, tokenStatus);
            Assert.Matches("^, there was a [a-z]{2,5}\\.$", byToken.GetProperty("content").GetString()!);
            var (controlStatus, control) = await Post("/completion", $$"""{"prompt": "x", {{grammar}}, "grammar_lazy": true, "grammar_triggers": [{"type": "token", "value": "", "token": {{model.Tokenizer.EosId}}}]}""");
            Assert.Equal(HttpStatusCode.BadRequest, controlStatus);
            Assert.Contains("control token", control.GetProperty("error").GetProperty("message").GetString());
        }
        var (_, eager) = await Post("/completion", $$"""{"prompt": "Once upon a time", "n_predict": 40, "temperature": 0, {{grammar}}}""");
        Assert.StartsWith("there was a ", eager.GetProperty("content").GetString()!);
        var (_, openAi) = await Post("/v1/completions", $$"""{"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0, {{grammar}}, "grammar_lazy": true, "grammar_triggers": [{"type": "word", "value": "there"}]}""");
        Assert.Matches("^, there was a [a-z]{2,5}\\.$", openAi.GetProperty("choices")[0].GetProperty("text").GetString()!);

        foreach (var (body, field) in new[]
        {
            ($$"""{"prompt": "x", {{grammar}}, "grammar_lazy": true}""", "grammar_triggers"),
            ("""{"prompt": "x", "grammar_lazy": true, "grammar_triggers": [{"type": "word", "value": "a"}]}""", "grammar_lazy"),
            ($$"""{"prompt": "x", {{grammar}}, "grammar_lazy": true, "grammar_triggers": [{"type": "pattern", "value": "a+"}]}""", "grammar_triggers"),
            ($$"""{"prompt": "x", {{grammar}}, "grammar_lazy": true, "grammar_triggers": [{"word": "a", "at_start": true}]}""", "grammar_triggers"),
        })
        {
            var (code, error) = await Post("/completion", body);
            Assert.Equal(HttpStatusCode.BadRequest, code);
            Assert.Equal(field, error.GetProperty("error").GetProperty("param").GetString());
        }
    }

    /// <summary>llama.cpp's native <c>/completion</c>: the same text as <c>/v1/completions</c> with the same settings,
    /// its flat answer (stop types, counts, timings, settings), streamed pieces that add up to it with a last
    /// <c>stop: true</c> event and no <c>[DONE]</c>; its grammar and n_probs; <c>/props</c>; bad input 400s.</summary>
    [Fact]
    public async Task LlamaCppsNativeCompletionRoute()
    {
        await Start();
        var (_, openAi) = await Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}""");
        var (status, native) = await Post("/completion", """{"prompt": "Once upon a time", "n_predict": 24, "temperature": 0, "n_probs": 2}""");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(openAi.GetProperty("choices")[0].GetProperty("text").GetString(), native.GetProperty("content").GetString());
        Assert.True(native.GetProperty("stop").GetBoolean());
        Assert.Equal(("limit", true, 24, 5), (native.GetProperty("stop_type").GetString(), native.GetProperty("stopped_limit").GetBoolean(),
            native.GetProperty("tokens_predicted").GetInt32(), native.GetProperty("tokens_evaluated").GetInt32()));
        Assert.Equal(24, native.GetProperty("timings").GetProperty("predicted_n").GetInt32());
        Assert.Equal(24, native.GetProperty("completion_probabilities").GetArrayLength());
        Assert.Equal(2, native.GetProperty("completion_probabilities")[0].GetProperty("top_logprobs").GetArrayLength());
        Assert.Equal(40, native.GetProperty("generation_settings").GetProperty("top_k").GetInt32()); // llama.cpp's default

        using var streamed = await _http.PostAsync("/completion", new StringContent("""{"prompt": "Once upon a time", "n_predict": 24, "temperature": 0, "stream": true}""", Encoding.UTF8, "application/json"));
        var events = (await streamed.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
            .Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.Clone()).ToList();
        Assert.All(events[..^1], e => Assert.False(e.GetProperty("stop").GetBoolean()));
        Assert.True(events[^1].GetProperty("stop").GetBoolean());
        Assert.Equal(native.GetProperty("content").GetString(), string.Concat(events.Select(e => e.GetProperty("content").GetString())));

        var (_, word) = await Post("/completion", """{"prompt": "Once upon a time", "n_predict": 40, "temperature": 0, "stop": ["Lily"]}""");
        Assert.Equal(("word", "Lily"), (word.GetProperty("stop_type").GetString(), word.GetProperty("stopping_word").GetString()));
        var (_, held) = await Post("/completion", """{"prompt": "Once upon a time", "n_predict": 40, "grammar": "root ::= \" there was a \" [a-z]{2,5} \".\""}""");
        Assert.Matches("^ there was a [a-z]{2,5}\\.$", held.GetProperty("content").GetString()!);
        Assert.Equal("eos", held.GetProperty("stop_type").GetString());

        using var props = await _http.GetAsync("/props");
        var json = JsonDocument.Parse(await props.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(8, json.GetProperty("total_slots").GetInt32());
        Assert.Equal(512, json.GetProperty("default_generation_settings").GetProperty("n_ctx").GetInt32());

        foreach (var (body, field) in new[] { ("{\"prompt\": [1, 2]}", "prompt"), ("{}", "prompt"), ("{\"prompt\": \"x\", \"n_predict\": 0}", "n_predict"),
                     ("{\"prompt\": \"x\", \"grammar\": \"root ::= nope\"}", "grammar"), ("{\"prompt\": \"x\", \"stop\": [1]}", "stop"),
                     ("{\"prompt\": \"x\", \"min_p\": 7}", "min_p") })
        {
            var (code, error) = await Post("/completion", body);
            Assert.Equal(HttpStatusCode.BadRequest, code);
            Assert.Equal(field, error.GetProperty("error").GetProperty("param").GetString());
        }
    }

    [Fact]
    public async Task CompletionIsTheRuntimesGreedyTextWithUsage()
    {
        await Start();
        var (status, json) = await Post("/v1/completions", """{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("text_completion", json.GetProperty("object").GetString());
        var choice = json.GetProperty("choices")[0];
        using var model = LoadedModel.Open(SharedData.Stories260K);
        var expected = model.Generate("Once upon a time", 24, new SamplingOptions(), null);
        Assert.Equal(expected.Text, "Once upon a time" + choice.GetProperty("text").GetString());
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        var usage = json.GetProperty("usage");
        Assert.Equal((expected.PromptTokens, 24, expected.PromptTokens + 24),
            (usage.GetProperty("prompt_tokens").GetInt32(), usage.GetProperty("completion_tokens").GetInt32(), usage.GetProperty("total_tokens").GetInt32()));
    }

    /// <summary><c>logit_bias</c> shifts the logits before each choice: −100 on the greedy first token makes another
    /// come first, +100 on one token makes every token that one; ids outside the vocabulary, biases outside −100..100
    /// and keys that are not ids are 400s.</summary>
    [Fact]
    public async Task LogitBiasShiftsTheChoice()
    {
        await Start();
        using var model = LoadedModel.Open(SharedData.Stories260K);
        var greedy = model.Generate("Once upon a time", 4, new SamplingOptions(), null);
        int first = greedy.Tokens[greedy.PromptTokens];
        async Task<(HttpStatusCode, JsonElement)> Complete(string bias) =>
            await Post("/v1/completions", $$"""{"prompt": "Once upon a time", "max_tokens": 4, "temperature": 0, "logit_bias": {{bias}}}""");
        var (status, banned) = await Complete($$"""{"{{first}}": -100}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var text = banned.GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.NotEqual(model.Tokenizer.Decode([first]), text[..Math.Min(text.Length, model.Tokenizer.Decode([first]).Length)]);
        int forced = model.Tokenizer.Encode(" cat", addBos: false)[^1];
        var (_, always) = await Complete($$"""{"{{forced}}": 100}""");
        Assert.Equal(string.Concat(Enumerable.Repeat(model.Tokenizer.Decode([forced]), 4)), always.GetProperty("choices")[0].GetProperty("text").GetString());
        foreach (var bad in new[] { """{"99999": 1}""", """{"5": 200}""", """{"five": 1}""", "[1]", """{"-1": 1}""" })
            Assert.Equal(HttpStatusCode.BadRequest, (await Complete(bad)).Item1);
    }

    [Fact]
    public async Task StreamedChunksAddUpToTheSameTextThenUsageThenDone()
    {
        await Start();
        const string body = """{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0, "stream": true}""";
        using var response = await _http.PostAsync("/v1/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.Clone()).ToList();
        Assert.True(chunks.Count > 3, "one chunk per piece of text");
        var text = string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString()));
        var (_, whole) = await Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}""");
        Assert.Equal(whole.GetProperty("choices")[0].GetProperty("text").GetString(), text);
        Assert.Equal("length", chunks[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(24, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    /// <summary><c>stream_options.include_usage</c> as OpenAI streams it: <c>"usage": null</c> on every chunk, then a
    /// chunk of its own with no choices and the usage; false: no usage at all; not asked: on the final chunk. Misused
    /// (not an object, without <c>stream</c>, a non-boolean) it is a 400 naming it.</summary>
    [Fact]
    public async Task StreamOptionsIncludeUsageSendsTheUsageAsOpenAIDoes()
    {
        await Start();
        async Task<List<JsonElement>> Chunks(string route, string options)
        {
            string body = route == "/v1/completions"
                ? $$"""{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "stream": true{{options}}}"""
                : $$"""{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "temperature": 0, "stream": true{{options}}}""";
            using var response = await _http.PostAsync(route, new StringContent(body, Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("data: [DONE]", events[^1]);
            return [.. events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.Clone())];
        }
        foreach (var route in new[] { "/v1/completions", "/v1/chat/completions" })
        {
            var asked = await Chunks(route, """, "stream_options": {"include_usage": true}""");
            Assert.All(asked[..^1], c => Assert.Equal(JsonValueKind.Null, c.GetProperty("usage").ValueKind));
            Assert.Equal(0, asked[^1].GetProperty("choices").GetArrayLength());
            Assert.Equal(6, asked[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
            Assert.Equal("length", asked[^2].GetProperty("choices")[0].GetProperty("finish_reason").GetString());

            var declined = await Chunks(route, """, "stream_options": {"include_usage": false}""");
            Assert.All(declined, c => Assert.False(c.TryGetProperty("usage", out _)));
            Assert.Equal(asked.Count - 1, declined.Count);

            var unasked = await Chunks(route, "");
            Assert.Equal(6, unasked[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
            Assert.Equal("length", unasked[^1].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        }
        foreach (var bad in new[] { """ "stream_options": 5, "stream": true""", """ "stream_options": {"include_usage": true}""",
                     """ "stream_options": {"include_usage": "yes"}, "stream": true""" })
        {
            var (status, json) = await Post("/v1/completions", $$"""{"prompt": "Once", "max_tokens": 2,{{bad}}}""");
            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.Equal("stream_options", json.GetProperty("error").GetProperty("param").GetString());
        }
    }

    /// <summary>With <c>--cors</c>, a browser page of an allowed origin can call the API: its preflight passes without
    /// the API key, and every answer (a 401 too) carries the headers that let the page read it; another origin gets
    /// none, and without <c>--cors</c> no answer carries them.</summary>
    [Fact]
    public async Task CorsLetsTheAllowedOriginsPagesCallTheApi()
    {
        const string Page = "http://localhost:3000";
        using var service = new CompletionService(LoadedModel.Open(SharedData.Stories260K), "stories260K");
        foreach (var origins in new[] { new[] { Page }, ["*"], [] })
        {
            await using var app = OpenAiServer.Build(service, new ServeOptions("127.0.0.1", 0, "k", CorsOrigins: origins));
            await app.StartAsync();
            using var http = new HttpClient { BaseAddress = new Uri(app.Urls.Single()) };
            string? Allowed(HttpResponseMessage r) => r.Headers.TryGetValues("Access-Control-Allow-Origin", out var v) ? v.Single() : null;
            foreach (var origin in new[] { Page, "http://elsewhere.example" })
            {
                bool allowed = origins.Contains("*") || origins.Contains(origin);
                string? expected = !allowed ? null : origins.Contains("*") ? "*" : origin;
                using var preflight = new HttpRequestMessage(HttpMethod.Options, "/v1/chat/completions");
                preflight.Headers.Add("Origin", origin);
                preflight.Headers.Add("Access-Control-Request-Method", "POST");
                preflight.Headers.Add("Access-Control-Request-Headers", "authorization,content-type");
                using var pre = await http.SendAsync(preflight);
                Assert.Equal(expected, Allowed(pre));
                if (allowed)
                {
                    Assert.Equal(HttpStatusCode.NoContent, pre.StatusCode);
                    Assert.Contains("authorization", string.Join(",", pre.Headers.GetValues("Access-Control-Allow-Headers")), StringComparison.OrdinalIgnoreCase);
                }
                foreach (bool key in new[] { true, false })
                {
                    using var post = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
                    {
                        Content = new StringContent("""{"prompt": "Once", "max_tokens": 2}""", Encoding.UTF8, "application/json"),
                    };
                    post.Headers.Add("Origin", origin);
                    if (key) post.Headers.Add("Authorization", "Bearer k");
                    using var answer = await http.SendAsync(post);
                    Assert.Equal(key ? HttpStatusCode.OK : HttpStatusCode.Unauthorized, answer.StatusCode);
                    Assert.Equal(expected, Allowed(answer));
                }
            }
            await app.StopAsync();
        }
    }

    [Theory]
    [InlineData("ftp://localhost:3000")]
    [InlineData("http://localhost:3000/chat")]
    [InlineData("localhost:3000")]
    public void CorsTakesOnlyOrigins(string origin)
    {
        var result = CliProcess.Run("serve", SharedData.Stories260K, "--port", "0", "--cors", origin);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--cors takes * or an origin", result.Stderr);
    }

    /// <summary>Seeds of 64 bits, as OpenAI's clients send them, are taken: equal seeds draw alike, and a seed of 32
    /// bits draws exactly as before (as <c>generate --seed</c>); a seed that is not an integer is a 400.</summary>
    [Fact]
    public async Task SeedsOfSixtyFourBitsAreTaken()
    {
        await Start();
        async Task<string> Text(string seed)
        {
            var (status, json) = await Post("/v1/completions", $$"""{"prompt": "Once upon a time", "max_tokens": 12, "temperature": 1, "seed": {{seed}}}""");
            Assert.True(status == HttpStatusCode.OK, $"{seed}: {json}");
            return json.GetProperty("choices")[0].GetProperty("text").GetString()!;
        }
        Assert.Equal(await Text("12345678901"), await Text("12345678901"));
        Assert.Equal(await Text("18446744073709551615"), await Text("18446744073709551615"));
        Assert.Equal(await Text("-9223372036854775808"), await Text("-9223372036854775808"));
        using var model = LoadedModel.Open(SharedData.Stories260K);
        Assert.Equal(model.Generate("Once upon a time", 12, new SamplingOptions { Temperature = 1, Seed = -7 }, null).Text, "Once upon a time" + await Text("-7"));
        foreach (var bad in new[] { "1.5", "\"1\"", "18446744073709551616" })
            Assert.Equal(HttpStatusCode.BadRequest, (await Post("/v1/completions", $$"""{"prompt": "Once", "max_tokens": 2, "seed": {{bad}}}""")).Item1);
    }

    /// <summary>Chat fields that would change the answer and are not implemented — the deprecated functions, audio
    /// output, other modalities, web search — are 400s naming them, not ignored; text alone is served.</summary>
    [Fact]
    public async Task UnsupportedChatFieldsAreRefusedNotIgnored()
    {
        await Start();
        const string Chat = """{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, """;
        foreach (var (field, value) in new[] { ("functions", """[{"name": "f", "parameters": {"type": "object"}}]"""), ("function_call", "\"auto\""),
                     ("audio", """{"voice": "alloy", "format": "wav"}"""), ("modalities", """["text", "audio"]"""), ("modalities", "\"text\""),
                     ("web_search_options", "{}"), ("reasoning_effort", "\"extreme\""), ("reasoning_effort", "1") })
        {
            var (status, json) = await Post("/v1/chat/completions", Chat + $$"""
                "{{field}}": {{value}}}
                """);
            Assert.True(status == HttpStatusCode.BadRequest, $"{field}: {value} → {json}");
            Assert.Equal(field, json.GetProperty("error").GetProperty("param").GetString());
        }
        Assert.Equal(HttpStatusCode.OK, (await Post("/v1/chat/completions", Chat + """ "modalities": ["text"], "reasoning_effort": "low"}""")).Item1);
    }

    private static readonly string[] Fields =
    [
        "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "stream", "n", "seed", "logprobs",
        "top_logprobs", "frequency_penalty", "presence_penalty", "chat_template_kwargs", "tools", "response_format", "model", "user", "logit_bias",
        "tool_choice", "top_k", "min_p", "repetition_penalty", "guided_regex", "guided_choice", "guided_json", "json_schema", "structured_outputs",
        "grammar", "guided_grammar", "echo", "suffix", "best_of", "parallel_tool_calls", "stream_options", "reasoning_effort", "modalities",
    ];

    /// <summary>Any JSON value: scalars of every kind and edge (huge, negative, NaN-free floats, empty and non-ASCII
    /// strings), arrays and objects, nested.</summary>
    private static Gen<string> JsonValue(int depth)
    {
        var scalar = Gen.OneOf("null", "true", "false", "0", "1", "3", "-1", "2147483648", "99999999999999999999", "0.5", "-0.0", "1e308",
            "\"\"", "\"Once\"", "\"user\"", "\"stories260K\"", "\"text\"", "\"\\u00e9\\ud83c\\udf0d\"", "\"\\n\"");
        if (depth == 0) return scalar;
        var message = Gen.Select(JsonValue(depth - 1), JsonValue(depth - 1), Gen.OneOf("system", "user", "assistant", "developer", "tool", ""),
            (r, c, role) => $$"""{"role": {{(role.Length == 0 ? r : $"\"{role}\"")}}, "content": {{c}}}""");
        return Gen.Frequency(
            (6, scalar),
            (1, JsonValue(depth - 1).Array[0, 3].Select(items => "[" + string.Join(", ", items) + "]")),
            (1, message.Array[1, 3].Select(items => "[" + string.Join(", ", items) + "]")),
            (1, Gen.Select(Gen.OneOf<string>(Fields), JsonValue(depth - 1), (k, v) => $$"""{"{{k}}": {{v}}}""")));
    }

    /// <summary>Random bodies (known fields with values of any type, nesting and edge) on both routes: every answer is
    /// a success or an OpenAI error object with a 4xx status — never a 500 — and afterwards the server is idle and serves.</summary>
    [Fact]
    public async Task RandomBodiesGetAnAnswerOrAClearErrorNeverAFailure()
    {
        await Start();
        // Half the bodies start from a valid request, so the random fields are also met on the way to an answer.
        string[] others = [.. Fields.Except(["prompt", "messages", "max_tokens", "max_completion_tokens"])];
        var bodies = Gen.Select(Gen.Bool, Gen.Bool, Gen.Select(Gen.OneOf<string>(Fields), JsonValue(2), (k, v) => $"\"{k}\": {v}").Array[0, 6],
                Gen.Select(Gen.OneOf<string>(others), JsonValue(2), (k, v) => $"\"{k}\": {v}").Array[0, 3])
            .Array[300].Single();
        var seen = new HashSet<int>();
        foreach (var (chat, valid, anything, extra) in bodies)
        {
            string[] fields = !valid ? anything
                : chat ? ["\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]", "\"max_tokens\": 3", .. extra]
                : ["\"prompt\": \"Once\"", "\"max_tokens\": 3", .. extra];
            var body = "{" + string.Join(", ", fields) + "}";
            using var response = await _http.PostAsync(chat ? "/v1/chat/completions" : "/v1/completions", new StringContent(body, Encoding.UTF8, "application/json"));
            var text = await response.Content.ReadAsStringAsync();
            int status = (int)response.StatusCode;
            seen.Add(status);
            Assert.True(status is 200 or 400 or 404 or 413 or 429, $"{status} for {body}: {text}");
            if (status != 200) Assert.False(string.IsNullOrEmpty(JsonDocument.Parse(text).RootElement.GetProperty("error").GetProperty("message").GetString()), body);
            else if (response.Content.Headers.ContentType?.MediaType == "text/event-stream") Assert.EndsWith("data: [DONE]\n\n", text);
            else JsonDocument.Parse(text).RootElement.GetProperty("choices");
        }
        Assert.Contains(200, seen);
        Assert.Contains(400, seen);
        for (int wait = 0; wait < 100 && _service.InService > 0; wait++) await Task.Delay(20);
        Assert.Equal(0, _service.InService);
        var (ok, _) = await Post("/v1/completions", """{"prompt": "Once", "max_tokens": 2}""");
        Assert.Equal(HttpStatusCode.OK, ok);
    }

    /// <summary>The other POST routes (embeddings, responses, llama.cpp's utility routes and its /completion) with random bodies: an answer or an
    /// error object with a 4xx status, never a 500, and the server serves afterwards.</summary>
    [Fact]
    public async Task RandomBodiesOnTheOtherRoutesNeverFail()
    {
        await Start();
        string[] fields = ["input", "encoding_format", "dimensions", "model", "content", "add_special", "tokens", "messages", "tools", "chat_template_kwargs",
            "instructions", "max_output_tokens", "text", "tool_choice", "stream", "previous_response_id", "prompt", "n_predict", "n_probs", "grammar",
            "json_schema", "repeat_penalty", "top_k", "min_p", "stop", "seed"];
        string[] routes = ["/v1/embeddings", "/tokenize", "/detokenize", "/apply-template", "/v1/responses", "/completion"];
        var bodies = Gen.Select(Gen.OneOf<string>(routes), Gen.Select(Gen.OneOf<string>(fields), JsonValue(2), (k, v) => $"\"{k}\": {v}").Array[0, 4])
            .Array[200].Single();
        var seen = new HashSet<int>();
        foreach (var (route, members) in bodies)
        {
            var body = "{" + string.Join(", ", members) + "}";
            using var response = await _http.PostAsync(route, new StringContent(body, Encoding.UTF8, "application/json"));
            var text = await response.Content.ReadAsStringAsync();
            int status = (int)response.StatusCode;
            seen.Add(status);
            Assert.True(status is 200 or 400 or 404 or 413, $"{status} for {route} {body}: {text}");
            if (response.Content.Headers.ContentType?.MediaType == "text/event-stream") continue;
            var json = JsonDocument.Parse(text).RootElement;
            if (status != 200) Assert.False(string.IsNullOrEmpty(json.GetProperty("error").GetProperty("message").GetString()), body);
        }
        Assert.Contains(400, seen);
        var (ok, _) = await Post("/tokenize", """{"content": "Once"}""");
        Assert.Equal(HttpStatusCode.OK, ok);
        Assert.Equal(0, _service.ReservedKvBytes);
    }

    [Fact]
    public async Task StreamedChatNamesTheRoleInEachChoicesFirstDeltaOnly()
    {
        await Start();
        const string body = """{"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 10, "temperature": 0.9, "seed": 3, "n": 2, "stream": true}""";
        using var response = await _http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        var choices = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.Clone().GetProperty("choices")[0]).ToList();
        var (_, whole) = await Post("/v1/chat/completions", body.Replace(", \"stream\": true", ""));
        for (int index = 0; index < 2; index++)
        {
            var deltas = choices.Where(c => c.GetProperty("index").GetInt32() == index).Select(c => c.GetProperty("delta")).ToList();
            Assert.Equal("assistant", deltas[0].GetProperty("role").GetString());
            Assert.All(deltas.Skip(1), d => Assert.False(d.TryGetProperty("role", out _)));
            var text = string.Concat(deltas.Select(d => d.TryGetProperty("content", out var c) ? c.GetString() : ""));
            Assert.Equal(whole.GetProperty("choices")[index].GetProperty("message").GetProperty("content").GetString(), text);
        }
    }

    [Fact]
    public async Task ChatCompletionsRenderTheConversationAndAnswerAsTheAssistant()
    {
        await Start();
        var (status, json) = await Post("/v1/chat/completions",
            """{"messages": [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "Tell me a story"}], "max_tokens": 12, "temperature": 0.8, "seed": 7}""");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("chat.completion", json.GetProperty("object").GetString());
        var message = json.GetProperty("choices")[0].GetProperty("message");
        Assert.Equal("assistant", message.GetProperty("role").GetString());
        Assert.False(string.IsNullOrEmpty(message.GetProperty("content").GetString()));
        Assert.Equal("plain", _service.ChatTemplateName);
        // Same seed, same answer.
        var (_, again) = await Post("/v1/chat/completions",
            """{"messages": [{"role": "system", "content": "You tell stories."}, {"role": "user", "content": "Tell me a story"}], "max_tokens": 12, "temperature": 0.8, "seed": 7}""");
        Assert.Equal(message.GetProperty("content").GetString(), again.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
    }

    [Theory]
    [InlineData("/v1/completions", "{oops", 400, "body")]
    [InlineData("/v1/completions", "[1, 2]", 400, "body")]
    [InlineData("/v1/completions", """{"prompt": 5}""", 400, "prompt")]
    [InlineData("/v1/completions", """{"prompt": "x", "temperature": "hot"}""", 400, "temperature")]
    [InlineData("/v1/completions", """{"prompt": "x", "max_tokens": 100000}""", 400, "max_tokens")]
    [InlineData("/v1/completions", """{"prompt": "x", "max_tokens": 0}""", 400, "max_tokens")]
    [InlineData("/v1/completions", """{"prompt": "x", "stop": [1]}""", 400, "stop")]
    [InlineData("/v1/completions", """{"prompt": "x", "model": "gpt-4"}""", 404, "model")]
    [InlineData("/v1/chat/completions", """{"messages": []}""", 400, "messages")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "robot", "content": "hi"}]}""", 400, "messages")]
    [InlineData("/v1/audio/speech", """{}""", 404, null)]
    [InlineData("/v1/embeddings", """{}""", 400, "input")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": {"name": "f"}}]}""", 400, "tools")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "yaml"}}""", 400, "response_format")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}}}""", 400, "response_format")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema"}}""", 400, "response_format")]
    [InlineData("/v1/completions", """{"prompt": "x", "response_format": "json"}""", 400, "response_format")]
    [InlineData("/v1/completions", """{"prompt": "x", "n": 0}""", 400, "n")]
    [InlineData("/v1/completions", """{"prompt": "x", "n": 99}""", 400, "n")]
    [InlineData("/v1/completions", """{"prompt": "x", "frequency_penalty": 3}""", 400, "frequency_penalty")]
    [InlineData("/v1/completions", """{"prompt": "x", "presence_penalty": "high"}""", 400, "presence_penalty")]
    [InlineData("/v1/completions", """{"prompt": "x", "logprobs": 6}""", 400, "logprobs")]
    [InlineData("/v1/completions", """{"prompt": "x", "top_p": 0}""", 400, "top_p")]
    [InlineData("/v1/completions", """{"prompt": "x", "suffix": "end"}""", 400, "suffix")]
    [InlineData("/v1/completions", """{"prompt": "x", "best_of": 3}""", 400, "best_of")]
    [InlineData("/v1/completions", """{"prompt": "x", "min_p": 1.5}""", 400, "min_p")]
    [InlineData("/v1/completions", """{"prompt": "x", "repetition_penalty": 0}""", 400, "repetition_penalty")]
    [InlineData("/v1/completions", """{"prompt": "x", "top_k": "all"}""", 400, "top_k")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}""", 400, "top_logprobs")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 21}""", 400, "top_logprobs")]
    public async Task BadRequestsGetAnErrorObjectAndTheServerKeepsServing(string path, string body, int status, string? param)
    {
        await Start();
        var (code, json) = await Post(path, body);
        Assert.Equal(status, (int)code);
        var error = json.GetProperty("error");
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        if (param is not null) Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync("/health")).StatusCode);
    }

    [Fact]
    public async Task APromptLongerThanTheContextIs413()
    {
        await Start();
        var prompt = string.Concat(Enumerable.Repeat("Once upon a time there was a cat. ", 200));
        var (code, json) = await Post("/v1/completions", JsonSerializer.Serialize(new { prompt, max_tokens = 4 }));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, code);
        Assert.Equal("context_length_exceeded", json.GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task WithAnApiKeyRequestsWithoutTheBearerKeyAre401()
    {
        await Start(apiKey: "s3cret");
        Assert.Equal(HttpStatusCode.Unauthorized, (await _http.GetAsync("/v1/models")).StatusCode);
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/models");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "s3cret");
        using var response = await _http.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var models = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("stories260K", models.GetProperty("data")[0].GetProperty("id").GetString());
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync("/health")).StatusCode); // health needs no key
    }

    [Fact]
    public async Task BeyondTheBatchAndTheQueueRequestsAre429()
    {
        await Start(maxWaiting: 0, maxBatch: 1);
        // A request holds the one place in the batch: its text callback blocks the factory until released.
        using var gate = new ManualResetEventSlim(false);
        using var running = new ManualResetEventSlim(false);
        var holder = _service.CompleteAsync(new CompletionRequest { Prompt = "Once", MaxTokens = 5 }, _ => { running.Set(); gate.Wait(); });
        Assert.True(running.Wait(TimeSpan.FromSeconds(30)), "the first request started");

        var (code, json) = await Post("/v1/completions", """{"prompt": "x", "max_tokens": 2}""");
        Assert.Equal((HttpStatusCode)429, code);
        Assert.Equal("queue_full", json.GetProperty("error").GetProperty("code").GetString());

        gate.Set();
        await holder;
        Assert.Equal(HttpStatusCode.OK, (await Post("/v1/completions", """{"prompt": "x", "max_tokens": 2}""")).Status);
    }

    [Fact]
    public async Task ADisconnectedStreamLeavesTheBatch()
    {
        await Start(maxWaiting: 0, maxBatch: 1);
        using var cancel = new CancellationTokenSource();
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent("""{"prompt": "Once", "max_tokens": 500, "temperature": 0, "stream": true}""", Encoding.UTF8, "application/json"),
        };
        using (var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancel.Token))
        {
            var stream = await response.Content.ReadAsStreamAsync(cancel.Token);
            Assert.True(await stream.ReadAsync(new byte[256], cancel.Token) > 0);
            cancel.Cancel(); // the client goes away
        }
        var clock = Stopwatch.StartNew();
        HttpStatusCode last;
        do
        {
            (last, _) = await Post("/v1/completions", """{"prompt": "x", "max_tokens": 2}""");
            if (last == HttpStatusCode.OK) break;
            await Task.Delay(50);
        } while (clock.Elapsed < TimeSpan.FromSeconds(20));
        Assert.Equal(HttpStatusCode.OK, last); // its place in the batch is free again
        using var health = JsonDocument.Parse(await _http.GetStringAsync("/health"));
        Assert.Equal(0, health.RootElement.GetProperty("in_service").GetInt32()); // nothing left running or reserved
        Assert.Equal(0, health.RootElement.GetProperty("kv_reserved_bytes").GetInt64());
        Assert.Equal("f32", health.RootElement.GetProperty("kv_cache").GetString());
    }

    /// <summary>n choices are n sequences of the batch, seeded seed, seed + 1, …: each equals a request of its own with
    /// that seed; usage counts the prompt once and every choice's tokens. Streamed, the chunks of each index add up to
    /// its choice.</summary>
    [Fact]
    public async Task NChoicesAreSequencesWithConsecutiveSeeds()
    {
        await Start();
        var (status, json) = await Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 20, "temperature": 1, "seed": 40, "n": 3}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var choices = json.GetProperty("choices").EnumerateArray().ToList();
        Assert.Equal([0, 1, 2], choices.Select(c => c.GetProperty("index").GetInt32()));
        int completion = 0;
        for (int i = 0; i < 3; i++)
        {
            var (_, alone) = await Post("/v1/completions", JsonSerializer.Serialize(new { prompt = "Once upon a time", max_tokens = 20, temperature = 1, seed = 40 + i }));
            Assert.Equal(alone.GetProperty("choices")[0].GetProperty("text").GetString(), choices[i].GetProperty("text").GetString());
            completion += alone.GetProperty("usage").GetProperty("completion_tokens").GetInt32();
        }
        Assert.True(choices.Select(c => c.GetProperty("text").GetString()).Distinct().Count() > 1, "different seeds, different stories");
        Assert.Equal(completion, json.GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        const string body = """{"prompt": "Once upon a time", "max_tokens": 20, "temperature": 1, "seed": 40, "n": 3, "stream": true}""";
        using var response = await _http.PostAsync("/v1/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.Clone()).ToList();
        for (int i = 0; i < 3; i++)
        {
            var mine = chunks.Select(c => c.GetProperty("choices")[0]).Where(c => c.GetProperty("index").GetInt32() == i).ToList();
            Assert.Equal(choices[i].GetProperty("text").GetString(), string.Concat(mine.Select(c => c.GetProperty("text").GetString())));
            Assert.Single(mine, c => c.GetProperty("finish_reason").ValueKind == JsonValueKind.String);
        }
    }

    /// <summary>Penalties lower the logits of generated tokens (vLLM's convention, over the generated tokens): a strong
    /// presence penalty makes greedy generation avoid repeating a token, which plain greedy does.</summary>
    [Fact]
    public async Task PresenceAndFrequencyPenaltiesDiscourageRepeats()
    {
        await Start();
        using var model = LoadedModel.Open(SharedData.Stories260K);
        static int Repeats(int[] tokens, int from) => tokens.Length - from - tokens.Skip(from).Distinct().Count();
        var plain = model.Generate("Once upon a time", 60, new SamplingOptions(), null);
        Assert.True(Repeats(plain.Tokens, plain.PromptTokens) > 0, "greedy stories repeat words");
        foreach (var field in new[] { "presence_penalty", "frequency_penalty" })
        {
            var (status, json) = await Post("/v1/completions", $$"""{"prompt": "Once upon a time", "max_tokens": 60, "temperature": 0, "{{field}}": 2}""");
            Assert.Equal(HttpStatusCode.OK, status);
            var text = json.GetProperty("choices")[0].GetProperty("text").GetString()!;
            var tokens = model.Tokenizer.Encode("Once upon a time" + text, addBos: true);
            var prompt = model.Tokenizer.Encode("Once upon a time", addBos: true).Length;
            Assert.True(Repeats(tokens, prompt) < Repeats(plain.Tokens, plain.PromptTokens), $"{field}: {text}");
        }
    }

    /// <summary><c>echo</c> with <c>logprobs</c> and <c>max_tokens: 0</c> — how lm-evaluation-harness scores a
    /// continuation on a completions server: the prompt's text back, each of its tokens' log-probability after the ones
    /// before it (null for the first), equal to the model's log-softmax from a session run here; token-id prompts;
    /// echo with generation appends the completion; streamed echo sends the prompt first (with its scores when asked).</summary>
    [Fact]
    public async Task EchoScoresThePromptAsLmEvalAsks()
    {
        await Start();
        using var model = LoadedModel.Open(SharedData.Stories260K);
        var tokens = model.Tokenizer.Encode("Once upon a time there was a cat", addBos: true);
        var (status, json) = await Post("/v1/completions", "{\"prompt\": [" + string.Join(", ", tokens) + "], \"max_tokens\": 0, \"echo\": true, \"logprobs\": 1, \"temperature\": 0}");
        Assert.Equal(HttpStatusCode.OK, status);
        var choice = json.GetProperty("choices")[0];
        Assert.Equal(model.Tokenizer.Decode(tokens), choice.GetProperty("text").GetString());
        var logprobs = choice.GetProperty("logprobs").GetProperty("token_logprobs");
        Assert.Equal(tokens.Length, logprobs.GetArrayLength());
        Assert.Equal(JsonValueKind.Null, logprobs[0].ValueKind);
        var session = model.Model.CreateSession(tokens.Length);
        var all = new float[tokens.Length * model.Config.VocabSize];
        session.Forward(tokens, all);
        for (int i = 1; i < tokens.Length; i++)
        {
            var row = all.AsSpan((i - 1) * model.Config.VocabSize, model.Config.VocabSize);
            double max = row.ToArray().Max(), logZ = max + Math.Log(row.ToArray().Sum(v => Math.Exp(v - max)));
            Assert.Equal(row[tokens[i]] - logZ, logprobs[i].GetDouble(), 4);
        }
        Assert.Equal(0, json.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        // Text prompts, and generation after the echo: the prompt's entries, then the completion's.
        var (_, plain) = await Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "logprobs": 0}""");
        var (_, echoed) = await Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "logprobs": 0, "echo": true}""");
        var completion = plain.GetProperty("choices")[0].GetProperty("text").GetString();
        Assert.Equal("Once upon a time" + completion, echoed.GetProperty("choices")[0].GetProperty("text").GetString());
        int promptTokens = model.Tokenizer.Encode("Once upon a time", addBos: true).Length;
        Assert.Equal(promptTokens + 5, echoed.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("tokens").GetArrayLength());
        using var streamed = await _http.PostAsync("/v1/completions", new StringContent("""{"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "echo": true, "stream": true}""", Encoding.UTF8, "application/json"));
        var chunks = (await streamed.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[..^1]
            .Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()).ToList();
        Assert.Equal("Once upon a time", chunks[0]);
        Assert.Equal("Once upon a time" + completion, string.Concat(chunks));
        Assert.Equal(HttpStatusCode.BadRequest, (await Post("/v1/completions", """{"prompt": "x", "max_tokens": 0}""")).Status);
        // Streamed with logprobs: the prompt's chunk carries its scores; all chunks together are the whole answer's.
        using var scored = await _http.PostAsync("/v1/completions", new StringContent("""{"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0, "logprobs": 0, "echo": true, "stream": true}""", Encoding.UTF8, "application/json"));
        var parts = (await scored.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[..^1]
            .Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0]).ToList();
        Assert.Equal("Once upon a time", parts[0].GetProperty("text").GetString());
        Assert.Equal(promptTokens, parts[0].GetProperty("logprobs").GetProperty("tokens").GetArrayLength());
        Assert.Equal(echoed.GetProperty("choices")[0].GetProperty("text").GetString(), string.Concat(parts.Select(p => p.GetProperty("text").GetString())));
        string Scores(IEnumerable<JsonElement> lists) => string.Join(",", lists.SelectMany(l => l.EnumerateArray()).Select(v => v.ValueKind == JsonValueKind.Null ? "null" : v.GetDouble().ToString("0.0000")));
        Assert.Equal(Scores([echoed.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("token_logprobs")]),
            Scores(parts.Where(p => p.GetProperty("logprobs").ValueKind == JsonValueKind.Object).Select(p => p.GetProperty("logprobs").GetProperty("token_logprobs"))));
        Assert.Equal(HttpStatusCode.BadRequest, (await Post("/v1/completions", """{"prompt": [1, 99999], "max_tokens": 1}""")).Status);
    }

    /// <summary>Several prompts in one request (strings or token-id lists), n choices each: answered in order, each
    /// equal to a request of its own, usage counting each prompt once.</summary>
    [Fact]
    public async Task SeveralPromptsAreAnsweredInOrder()
    {
        await Start();
        string Text(JsonElement json, int i) => json.GetProperty("choices")[i].GetProperty("text").GetString()!;
        var (_, once) = await Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0}""");
        var (_, dog) = await Post("/v1/completions", """{"prompt": "The dog", "max_tokens": 6, "temperature": 0}""");
        var (status, both) = await Post("/v1/completions", """{"prompt": ["Once upon a time", "The dog"], "n": 2, "max_tokens": 6, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(4, both.GetProperty("choices").GetArrayLength());
        Assert.Equal([Text(once, 0), Text(once, 0), Text(dog, 0), Text(dog, 0)], Enumerable.Range(0, 4).Select(i => Text(both, i)));
        Assert.Equal(once.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() + dog.GetProperty("usage").GetProperty("prompt_tokens").GetInt32(),
            both.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        using var model = LoadedModel.Open(SharedData.Stories260K);
        var ids = string.Join(", ", model.Tokenizer.Encode("The dog", addBos: true));
        var (_, tokenized) = await Post("/v1/completions", "{\"prompt\": [[" + ids + "], [" + ids + "]], \"max_tokens\": 6, \"temperature\": 0}");
        Assert.Equal([Text(dog, 0), Text(dog, 0)], Enumerable.Range(0, 2).Select(i => Text(tokenized, i)));
        Assert.Equal(HttpStatusCode.BadRequest, (await Post("/v1/completions", "{\"prompt\": [" + string.Join(", ", Enumerable.Repeat("\"x\"", 40)) + "], \"n\": 2}")).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await Post("/v1/completions", """{"prompt": ["x", 3]}""")).Status);
    }

    /// <summary>vLLM's and llama.cpp's sampling extensions: <c>top_k: 1</c> and <c>min_p: 1</c> leave only the most likely
    /// token, so a sampled request answers as a greedy one; <c>top_k: -1</c> is off (vLLM's spelling); a strong
    /// <c>repetition_penalty</c> makes greedy text repeat less.</summary>
    [Fact]
    public async Task TopKMinPAndRepetitionPenaltyAreApplied()
    {
        await Start();
        string Text(JsonElement json) => json.GetProperty("choices")[0].GetProperty("text").GetString()!;
        var (_, greedy) = await Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0}""");
        foreach (var cut in new[] { "\"top_k\": 1", "\"min_p\": 1" })
        {
            var (status, json) = await Post("/v1/completions", "{\"prompt\": \"Once upon a time\", \"max_tokens\": 40, \"temperature\": 1.5, \"seed\": 9, " + cut + "}");
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal(Text(greedy), Text(json));
        }
        var (_, free) = await Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 40, "temperature": 1.5, "seed": 9, "top_k": -1}""");
        Assert.NotEqual(Text(greedy), Text(free));
        using var model = LoadedModel.Open(SharedData.Stories260K);
        static int Repeats(int[] tokens, int from) => tokens.Length - from - tokens.Skip(from).Distinct().Count();
        var (_, penalised) = await Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0, "repetition_penalty": 3}""");
        int prompt = model.Tokenizer.Encode("Once upon a time", addBos: true).Length;
        Assert.True(Repeats(model.Tokenizer.Encode("Once upon a time" + Text(penalised), addBos: true), prompt)
            < Repeats(model.Tokenizer.Encode("Once upon a time" + Text(greedy), addBos: true), prompt), Text(penalised));
    }

    /// <summary>logprobs: each token's log-probability is the log-softmax of the model's own logits at its position
    /// (checked against a session run here), alternatives most likely first; greedy's choice is the top alternative.</summary>
    [Fact]
    public async Task LogProbsAreTheModelsLogSoftmax()
    {
        await Start();
        var (status, json) = await Post("/v1/completions", """{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "logprobs": 3}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var logprobs = json.GetProperty("choices")[0].GetProperty("logprobs");
        var tokens = logprobs.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!).ToList();
        var values = logprobs.GetProperty("token_logprobs").EnumerateArray().Select(t => t.GetDouble()).ToList();
        Assert.Equal(6, tokens.Count);
        Assert.Equal(json.GetProperty("choices")[0].GetProperty("text").GetString(), string.Concat(tokens));

        using var model = LoadedModel.Open(SharedData.Stories260K);
        var expected = model.Generate("Once upon a time", 6, new SamplingOptions(), null);
        var session = model.Model.CreateSession(32);
        var logits = new float[model.Config.VocabSize];
        var prompt = expected.Tokens[..expected.PromptTokens];
        var all = new float[prompt.Length * model.Config.VocabSize];
        session.Forward(prompt, all);
        all.AsSpan((prompt.Length - 1) * model.Config.VocabSize).CopyTo(logits);
        for (int i = 0; i < 6; i++)
        {
            int id = expected.Tokens[expected.PromptTokens + i];
            double max = logits.Max(), logZ = max + Math.Log(logits.Sum(v => Math.Exp(v - max)));
            Assert.Equal(logits[id] - logZ, values[i], 4);
            var top = logprobs.GetProperty("top_logprobs")[i].EnumerateObject().Select(p => p.Value.GetDouble()).ToList();
            Assert.Equal(top.OrderByDescending(v => v), top);
            Assert.Equal(values[i], top[0], 9); // greedy took the most likely token
            logits = session.Step(id);
        }

        // Streamed, each chunk carries the log-probabilities of the tokens behind its text: together, the same list.
        const string body = """{"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "logprobs": 3, "stream": true}""";
        using (var response = await _http.PostAsync("/v1/completions", new StringContent(body, Encoding.UTF8, "application/json")))
        {
            var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            var streamed = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.Clone())
                .Select(c => c.GetProperty("choices")[0].GetProperty("logprobs"))
                .Where(l => l.ValueKind == JsonValueKind.Object)
                .SelectMany(l => l.GetProperty("token_logprobs").EnumerateArray().Select(v => v.GetDouble())).ToList();
            // The same list; not to the last bit: this request's prompt came from the first one's kept cache but for its
            // last token, which ran alone (prompt caching: float summation order).
            Assert.Equal(values.Count, streamed.Count);
            for (int i = 0; i < values.Count; i++) Assert.Equal(values[i], streamed[i], 6);
        }

        var (_, chat) = await Post("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 4, "temperature": 0, "logprobs": true, "top_logprobs": 2}""");
        var content = chat.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("content");
        Assert.Equal(4, content.GetArrayLength());
        Assert.Equal(2, content[0].GetProperty("top_logprobs").GetArrayLength());
        Assert.True(content[0].GetProperty("logprob").GetDouble() <= 0);
    }

    [Fact]
    public async Task ConcurrentRequestsShareStepsAndEachGetsItsOwnAnswer()
    {
        await Start(maxBatch: 4);
        string[] prompts = ["Once upon a time", "The dog", "Lily went", "One day, Tom"];
        var answers = await Task.WhenAll(prompts.Select(p =>
            Post("/v1/completions", JsonSerializer.Serialize(new { prompt = p, max_tokens = 150, temperature = 0 }))));
        using var model = LoadedModel.Open(SharedData.Stories260K);
        for (int i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(HttpStatusCode.OK, answers[i].Status);
            var solo = model.Generate(prompts[i], 150, new SamplingOptions(), null);
            Assert.Equal(solo.Text, prompts[i] + answers[i].Json.GetProperty("choices")[0].GetProperty("text").GetString());
        }
        Assert.InRange(_service.LargestBatch, 2, 4);
    }

    [Fact]
    public async Task ARequestWhoseKvCacheExceedsTheBudgetIsRefused()
    {
        var model = LoadedModel.Open(SharedData.Stories260K);
        _service = new CompletionService(model, "stories260K", kvBudgetBytes: 100_000);
        _app = OpenAiServer.Build(_service, new ServeOptions("127.0.0.1", 0));
        await _app.StartAsync();
        _http = new HttpClient { BaseAddress = new Uri(_app.Urls.Single()) };
        // stories260K: 5 layers × 32 kv dims × 2 × 4 bytes = 1280 bytes per position; 100 000 bytes hold 78 positions.
        var (small, _) = await Post("/v1/completions", """{"prompt": "Once", "max_tokens": 20, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, small);
        var (large, json) = await Post("/v1/completions", """{"prompt": "Once", "max_tokens": 200}""");
        Assert.Equal(HttpStatusCode.BadRequest, large);
        Assert.Contains("KV cache", json.GetProperty("error").GetProperty("message").GetString());
    }
}

/// <summary>The KV budget counts the caches finished requests leave for the next ones.</summary>
public sealed class KvPoolBudgetTests
{
    /// <summary>stories260K holds 1280 bytes a position; a budget of 100 000 bytes, 78 positions. A first request of 61
    /// positions (BOS, "Once", 59 new) leaves its cache kept; a second of 32 reserves 40 960 bytes, so only 59 040 are
    /// left for kept caches and the first one's 78 080 are dropped: while it runs, the caches in use and kept never
    /// exceed the budget. After it, its own cache is kept, and answers equal the solo generations.</summary>
    [Fact]
    public async Task KeptCachesAndRunningRequestsStayWithinTheBudget()
    {
        const long Budget = 100_000;
        using var service = new CompletionService(LoadedModel.Open(SharedData.Stories260K), "s", kvBudgetBytes: Budget);
        var first = await service.CompleteAsync(new CompletionRequest { Prompt = "Once", MaxTokens = 59, Sampling = new SamplingOptions { StopTokenIds = [] } });
        int prompt = service.PromptTokens(new CompletionRequest { Prompt = "Once" }).Length;
        await WaitUntil(() => service.InService == 0 && service.PooledKvBytes > 0);
        Assert.Equal(service.KvBytes(prompt + 59), service.PooledKvBytes);
        Assert.Equal(0, service.ReservedKvBytes);

        long worst = 0;
        var second = await service.CompleteAsync(new CompletionRequest { Prompt = "Once", MaxTokens = 30, Sampling = new SamplingOptions { StopTokenIds = [] } },
            _ => worst = Math.Max(worst, service.ReservedKvBytes + service.PooledKvBytes));
        Assert.InRange(worst, service.KvBytes(prompt + 30), Budget);
        await WaitUntil(() => service.InService == 0 && service.ReservedKvBytes == 0);
        Assert.Equal(service.KvBytes(prompt + 30), service.PooledKvBytes);

        using var model = LoadedModel.Open(SharedData.Stories260K);
        Assert.Equal(model.Generate("Once", 59, new SamplingOptions { StopTokenIds = [] }, null).Text, "Once" + first.Text);
        Assert.Equal(model.Generate("Once", 30, new SamplingOptions { StopTokenIds = [] }, null).Text, "Once" + second.Text);
    }

    /// <summary>The start-up warm-up (<c>serve</c> runs it before listening; one generation alone, then a batch) holds
    /// no KV cache afterwards, running or kept, and changes no answer: a completion after it is the solo generation.
    /// With a batch of one the batch part is one more solo generation.</summary>
    [Theory]
    [InlineData(8)]
    [InlineData(1)]
    public async Task AWarmUpLeavesNothingBehindAndChangesNoAnswer(int maxBatch)
    {
        using var service = new CompletionService(LoadedModel.Open(SharedData.Stories260K), "s", maxBatch: maxBatch);
        Assert.True(service.WarmUp() > TimeSpan.Zero);
        Assert.Equal(0, service.InService);
        Assert.Equal(0, service.Running);
        Assert.Equal(0, service.ReservedKvBytes);
        Assert.Equal(0, service.PooledKvBytes);
        var sampling = new SamplingOptions { StopTokenIds = [] };
        var answer = await service.CompleteAsync(new CompletionRequest { Prompt = "Once", MaxTokens = 20, Sampling = sampling });
        using var model = LoadedModel.Open(SharedData.Stories260K);
        Assert.Equal(model.Generate("Once", 20, sampling, null).Text, "Once" + answer.Text);
    }

    /// <summary>A context too short for the warm-up's prompt still warms up (a shorter prompt), and one of a single
    /// position has no room for it: the warm-up does nothing rather than fail the server's start.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void AWarmUpFitsAShortContext(int context)
    {
        using var service = new CompletionService(LoadedModel.Open(SharedData.Stories260K), "s", contextLength: context);
        service.WarmUp();
        Assert.Equal(0, service.InService);
        Assert.Equal(0, service.PooledKvBytes);
    }

    private static async Task WaitUntil(Func<bool> condition)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!condition() && clock.Elapsed < TimeSpan.FromSeconds(10)) await Task.Delay(10);
        Assert.True(condition());
    }
}

/// <summary>The official OpenAI .NET client (the README's example) pointed at the server.</summary>
public sealed class OfficialClientTests
{
    [Fact]
    public async Task TheOpenAIPackageTalksToTheServer()
    {
        using var service = new CompletionService(LoadedModel.Open(SharedData.Stories260K), "stories260K");
        await using var app = OpenAiServer.Build(service, new ServeOptions("127.0.0.1", 0, "key"));
        await app.StartAsync();
        var client = new OpenAI.Chat.ChatClient("stories260K", new System.ClientModel.ApiKeyCredential("key"),
            new OpenAI.OpenAIClientOptions { Endpoint = new Uri(app.Urls.Single() + "/v1") });
        var completion = await client.CompleteChatAsync(
            [new OpenAI.Chat.UserChatMessage("Tell me a story")],
            new OpenAI.Chat.ChatCompletionOptions { MaxOutputTokenCount = 10, Temperature = 0 });
        Assert.False(string.IsNullOrEmpty(completion.Value.Content[0].Text));
        Assert.Equal(10, completion.Value.Usage.OutputTokenCount);

        var streamed = new StringBuilder();
        OpenAI.Chat.ChatMessageRole? role = null;
        OpenAI.Chat.ChatTokenUsage? usage = null;
        await foreach (var update in client.CompleteChatStreamingAsync(
            [new OpenAI.Chat.UserChatMessage("Tell me a story")],
            new OpenAI.Chat.ChatCompletionOptions { MaxOutputTokenCount = 10, Temperature = 0 }))
        {
            role ??= update.Role;
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
            usage ??= update.Usage;
        }
        Assert.Equal(completion.Value.Content[0].Text, streamed.ToString());
        Assert.Equal(10, usage?.OutputTokenCount); // the client asks stream_options.include_usage
        Assert.Equal(OpenAI.Chat.ChatMessageRole.Assistant, role);

        // The model list and a model by name, as the client reads them; another name is 404.
        var models = new OpenAI.Models.OpenAIModelClient(new System.ClientModel.ApiKeyCredential("key"),
            new OpenAI.OpenAIClientOptions { Endpoint = new Uri(app.Urls.Single() + "/v1") });
        var listed = Assert.Single((await models.GetModelsAsync()).Value);
        Assert.Equal("stories260K", listed.Id);
        // created: when the model's file was written.
        Assert.Equal(new DateTimeOffset(File.GetLastWriteTimeUtc(SharedData.Stories260K), TimeSpan.Zero).ToUnixTimeSeconds(), listed.CreatedAt.ToUnixTimeSeconds());
        Assert.Equal("stories260K", (await models.GetModelAsync("stories260K")).Value.Id);
        var missing = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() => models.GetModelAsync("gpt-4"));
        Assert.Equal(404, missing.Status);
        await app.StopAsync();
    }
}

/// <summary>Tools on a generated Qwen2.5-shaped model with its real template: offered tools reach the prompt (as
/// Qwen's template describes them), tool turns in the history are accepted, and what is not supported is refused.</summary>
public sealed class ToolUseTests
{
    private const string Tool = """{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}""";

    /// <summary>A reply of two calls (made so by a guided choice, as a random model would not write them) is answered
    /// as both, and with <c>parallel_tool_calls: false</c> as the first alone, whole and streamed.</summary>
    [Fact]
    public async Task ParallelToolCallsFalseAnswersTheFirstCallAlone()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(folder), "qwen"));
        const string Reply = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}\n</tool_call>";
        string Body(bool parallel, bool stream) => JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["messages"] = new[] { new { role = "user", content = "Weather in Paris and Rome?" } },
            ["tools"] = new[] { JsonDocument.Parse(Tool).RootElement }, ["guided_choice"] = new[] { Reply },
            // Room for the reply however it is split into tokens (sampled, the constraint allows any split), and greedy.
            ["max_tokens"] = 400, ["temperature"] = 0, ["parallel_tool_calls"] = parallel, ["stream"] = stream,
        });
        foreach (bool parallel in new[] { true, false })
        {
            var (status, text) = await served.Post("/v1/chat/completions", Body(parallel, stream: false));
            Assert.True(status == HttpStatusCode.OK, text);
            var calls = JsonDocument.Parse(text).RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("tool_calls");
            Assert.Equal(parallel ? 2 : 1, calls.GetArrayLength());
            Assert.Contains("Paris", calls[0].GetProperty("function").GetProperty("arguments").GetString());
            var (_, streamed) = await served.Post("/v1/chat/completions", Body(parallel, stream: true));
            var started = streamed.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[..^1]
                .Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0].GetProperty("delta"))
                .Count(d => d.TryGetProperty("tool_calls", out var t) && t[0].TryGetProperty("id", out _));
            Assert.Equal(parallel ? 2 : 1, started);
        }
    }

    /// <summary>A Mistral-style model, whose call markers <c>[TOOL_CALLS]</c> and <c>[ARGS]</c> are special tokens that
    /// decoding drops: the server keeps them in the reply's text, so a reply written as
    /// <c>[TOOL_CALLS]get_weather[ARGS]{…}</c> (made so by a grammar's token references, as a random model would not
    /// write it) is answered as that call, whole and streamed, with nothing of it as content.</summary>
    [Fact]
    public async Task SpecialTokenMarkersAreReadAsCalls()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        var tokenizerFile = Path.Combine(folder, "tokenizer.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(tokenizerFile))!;
        foreach (var (id, content) in new[] { (151665, "[TOOL_CALLS]"), (151666, "[ARGS]") })
            json["added_tokens"]!.AsArray().Add(new System.Text.Json.Nodes.JsonObject
            {
                ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
            });
        File.WriteAllText(tokenizerFile, json.ToJsonString());
        var template = dir.File("mistral.jinja");
        File.WriteAllText(template, "{% if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}{% for m in messages %}[INST]{{ m.content }}[/INST]{% endfor %}");
        var loaded = LoadedModel.Open(folder);
        Assert.Equal("", loaded.Tokenizer.Decode([151665])); // dropped by plain decoding
        await using var served = await ServedModel.Start(new CompletionService(loaded, "mistral", chatTemplateFile: template));
        string Body(bool stream) => JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["messages"] = new[] { new { role = "user", content = "Weather in Paris?" } },
            ["tools"] = new[] { JsonDocument.Parse(Tool).RootElement },
            ["grammar"] = "root ::= <[151665]> \"get_weather\" <[151666]> \"{\\\"city\\\": \\\"Paris\\\"}\"",
            ["max_tokens"] = 60, ["temperature"] = 0, ["stream"] = stream,
        });
        var (status, text) = await served.Post("/v1/chat/completions", Body(stream: false));
        Assert.True(status == HttpStatusCode.OK, text);
        var choice = JsonDocument.Parse(text).RootElement.GetProperty("choices")[0];
        Assert.Equal("tool_calls", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("message").GetProperty("content").ValueKind);
        var call = Assert.Single(choice.GetProperty("message").GetProperty("tool_calls").EnumerateArray()).GetProperty("function");
        Assert.Equal(("get_weather", "{\"city\": \"Paris\"}"), (call.GetProperty("name").GetString(), call.GetProperty("arguments").GetString()));

        var (_, streamed) = await served.Post("/v1/chat/completions", Body(stream: true));
        var deltas = streamed.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[..^1]
            .Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")).Where(c => c.GetArrayLength() > 0)
            .Select(c => c[0].GetProperty("delta")).ToList();
        Assert.DoesNotContain(deltas, d => d.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String && c.GetString()!.Length > 0);
        var streamedCall = Assert.Single(deltas, d => d.TryGetProperty("tool_calls", out _)).GetProperty("tool_calls")[0].GetProperty("function");
        Assert.Equal("get_weather", streamedCall.GetProperty("name").GetString());
        Assert.Equal("{\"city\": \"Paris\"}", streamedCall.GetProperty("arguments").GetString());
    }

    [Fact]
    public async Task ToolsReachThePromptAndToolTurnsAreAccepted()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        var loaded = LoadedModel.Open(folder);
        await using var served = await ServedModel.Start(new CompletionService(loaded, "qwen"));
        var (service, http) = (served.Service, served.Http);
        async Task<(HttpStatusCode, string)> Chat(string extra, string messages = """[{"role": "user", "content": "Weather in Paris?"}]""")
        {
            using var r = await http.PostAsync("/v1/chat/completions",
                new StringContent($$"""{"messages": {{messages}}, "max_tokens": 3, "temperature": 0{{extra}}}""", Encoding.UTF8, "application/json"));
            return (r.StatusCode, await r.Content.ReadAsStringAsync());
        }
        int PromptTokens(string body) => JsonDocument.Parse(body).RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt32();

        var (plainStatus, plain) = await Chat("");
        var (withStatus, with) = await Chat($$""", "tools": [{{Tool}}]""");
        var (_, none) = await Chat(", \"tools\": [" + Tool + "], \"tool_choice\": \"none\"");
        Assert.Equal((HttpStatusCode.OK, HttpStatusCode.OK), (plainStatus, withStatus));
        var expected = ChatTemplate.Find(folder).Render([("user", "Weather in Paris?")], tools: [JsonDocument.Parse(Tool).RootElement]);
        Assert.Equal(loaded.Tokenizer.Encode(expected, addBos: false).Length, PromptTokens(with));
        Assert.True(PromptTokens(with) > PromptTokens(plain) + 50, "the tool's description is in the prompt");
        Assert.Equal(PromptTokens(plain), PromptTokens(none));

        // Streamed with tools, a reply of text still comes as it is produced, and adds up to the same content.
        const string streamed = """{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12, "temperature": 0, "stream": true, "tools": [TOOL]}""";
        using (var r = await http.PostAsync("/v1/chat/completions", new StringContent(streamed.Replace("TOOL", Tool), Encoding.UTF8, "application/json")))
        {
            var events = (await r.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("data: [DONE]", events[^1]);
            var deltas = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0].GetProperty("delta").Clone()).ToList();
            Assert.Equal("assistant", deltas[0].GetProperty("role").GetString());
            var text = string.Concat(deltas.Select(d => d.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : ""));
            using var whole = await http.PostAsync("/v1/chat/completions", new StringContent(streamed.Replace("TOOL", Tool).Replace(", \"stream\": true", ""), Encoding.UTF8, "application/json"));
            var message = JsonDocument.Parse(await whole.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("message");
            Assert.Equal(message.GetProperty("content").GetString(), text);
            Assert.True(deltas.Count(d => d.TryGetProperty("content", out var c) && c.GetString() is { Length: > 0 }) > 2, "the text came in pieces");
        }

        const string history = """
            [{"role": "user", "content": "Weather in Paris?"},
             {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
             {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees"}]
            """;
        var (historyStatus, answered) = await Chat($$""", "tools": [{{Tool}}]""", history);
        Assert.Equal(HttpStatusCode.OK, historyStatus);
        Assert.True(PromptTokens(answered) > PromptTokens(with), answered);

        Assert.Equal(HttpStatusCode.BadRequest, (await Chat(""", "tools": [{"type": "function"}]""")).Item1);
        Assert.Equal(HttpStatusCode.BadRequest, (await Chat("", """[{"role": "tool", "content": "21"}]""")).Item1);
        Assert.Equal(HttpStatusCode.BadRequest, (await Chat("", """[{"role": "assistant", "content": null}]""")).Item1);

        // The official client's wire format for tools, an assistant's calls and a tool's result is what the server reads.
        var client = new OpenAI.Chat.ChatClient("qwen", new System.ClientModel.ApiKeyCredential("unused"),
            new OpenAI.OpenAIClientOptions { Endpoint = new Uri(served.App.Urls.Single() + "/v1") });
        var options = new OpenAI.Chat.ChatCompletionOptions { MaxOutputTokenCount = 3, Temperature = 0 };
        options.Tools.Add(OpenAI.Chat.ChatTool.CreateFunctionTool("get_weather", "Weather of a city",
            BinaryData.FromString("""{"type": "object", "properties": {"city": {"type": "string"}}}""")));
        OpenAI.Chat.ChatMessage[] messages =
        [
            new OpenAI.Chat.UserChatMessage("Weather in Paris?"),
            new OpenAI.Chat.AssistantChatMessage([OpenAI.Chat.ChatToolCall.CreateFunctionToolCall("call_1", "get_weather", BinaryData.FromString("""{"city": "Paris"}"""))]),
            new OpenAI.Chat.ToolChatMessage("call_1", "21 degrees"),
        ];
        var completion = await client.CompleteChatAsync(messages, options);
        // Accepted, with the calls and the result in the prompt (the client's tool also carries a description).
        Assert.InRange(completion.Value.Usage.InputTokenCount, PromptTokens(answered), PromptTokens(answered) + 20);
    }

    private const string NoArguments = """{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}""";

    /// <summary><c>tool_choice</c> <c>required</c> or a named function forces a call: the reply is made to begin one in
    /// the template's form and decoding is held to an offered name and a JSON object of arguments (<c>{}</c> for a
    /// function without parameters), so even this random model answers with a call, whole or streamed; a name not
    /// offered, or forcing without tools, is a 400.</summary>
    [Fact]
    public async Task ACallCanBeForced()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(folder), "qwen"));
        var (service, http) = (served.Service, served.Http);
        async Task<(HttpStatusCode Status, JsonElement Json)> Chat(string tools, string choice, bool stream = false)
        {
            using var r = await http.PostAsync("/v1/chat/completions", new StringContent(
                $$"""{"messages": [{"role": "user", "content": "What time is it?"}], "max_tokens": 40, "temperature": 0, "tools": [{{tools}}], "tool_choice": {{choice}}, "stream": {{(stream ? "true" : "false")}}}""",
                Encoding.UTF8, "application/json"));
            var body = await r.Content.ReadAsStringAsync();
            if (!stream) return (r.StatusCode, JsonDocument.Parse(body).RootElement.Clone());
            var events = body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("data: [DONE]", events[^1]);
            return (r.StatusCode, JsonSerializer.SerializeToElement(events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.Clone()).ToList()));
        }

        const string Named = """{"type": "function", "function": {"name": "get_time"}}""";
        foreach (var (tools, choice) in new[] { (Tool + ", " + NoArguments, Named), (NoArguments, "\"required\"") })
        {
            var (status, json) = await Chat(tools, choice);
            Assert.Equal(HttpStatusCode.OK, status);
            var answer = json.GetProperty("choices")[0];
            Assert.Equal("tool_calls", answer.GetProperty("finish_reason").GetString());
            Assert.Equal(JsonValueKind.Null, answer.GetProperty("message").GetProperty("content").ValueKind);
            var call = Assert.Single(answer.GetProperty("message").GetProperty("tool_calls").EnumerateArray().ToList());
            Assert.Equal("get_time", call.GetProperty("function").GetProperty("name").GetString());
            // No parameters: an empty object (as the model spaced it).
            Assert.Empty(JsonDocument.Parse(call.GetProperty("function").GetProperty("arguments").GetString()!).RootElement.EnumerateObject());
        }

        // Streamed: no text; the call's id and name, then its arguments as they are written; finish_reason tool_calls.
        var (_, chunks) = await Chat(Tool + ", " + NoArguments, Named, stream: true);
        var deltas = chunks.EnumerateArray().Select(c => c.GetProperty("choices")[0]).ToList();
        Assert.DoesNotContain(deltas, d => d.GetProperty("delta").TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String && c.GetString()!.Length > 0);
        var calls = deltas.Where(d => d.GetProperty("delta").TryGetProperty("tool_calls", out _)).Select(d => d.GetProperty("delta").GetProperty("tool_calls")[0]).ToList();
        Assert.True(calls.Count >= 2, "a start, then the arguments");
        Assert.Equal(("get_time", "function", ""), (calls[0].GetProperty("function").GetProperty("name").GetString(), calls[0].GetProperty("type").GetString(),
            calls[0].GetProperty("function").GetProperty("arguments").GetString()));
        Assert.All(calls, c => Assert.Equal(0, c.GetProperty("index").GetInt32()));
        Assert.All(calls.Skip(1), c => Assert.False(c.TryGetProperty("id", out _)));
        Assert.Empty(JsonDocument.Parse(string.Concat(calls.Select(c => c.GetProperty("function").GetProperty("arguments").GetString()))).RootElement.EnumerateObject());
        Assert.Equal("tool_calls", deltas[^1].GetProperty("finish_reason").GetString());

        // Any of two: the name is one of them, whatever this random model writes as arguments within its tokens.
        var (anyStatus, any) = await Chat(Tool + ", " + NoArguments, "\"required\"");
        Assert.Equal(HttpStatusCode.OK, anyStatus);
        var first = any.GetProperty("choices")[0];
        if (first.GetProperty("finish_reason").GetString() == "tool_calls")
            Assert.Contains(first.GetProperty("message").GetProperty("tool_calls")[0].GetProperty("function").GetProperty("name").GetString(), new[] { "get_weather", "get_time" });
        else
            Assert.Matches("^<tool_call>\n\\{\"name\": \"get_(weather|time)\", \"arguments\": ", first.GetProperty("message").GetProperty("content").GetString());

        Assert.Equal(HttpStatusCode.BadRequest, (await Chat(Tool, """{"type": "function", "function": {"name": "get_time"}}""")).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await Chat(Tool, "\"always\"")).Status);
        using var noTools = await http.PostAsync("/v1/chat/completions", new StringContent(
            """{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "tool_choice": "required"}""", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, noTools.StatusCode);
    }

    /// <summary><c>response_format</c> JSON: the reply is one object, following the schema when one is given (keys,
    /// enums, booleans, required keys: even this random model writes a conforming object and stops there), whole and
    /// streamed alike; with a forced call as well it is a 400.</summary>
    [Fact]
    public async Task AJsonReplyFollowsItsSchema()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(folder), "qwen"));
        var (service, http) = (served.Service, served.Http);
        const string Format = """
            {"type": "json_schema", "json_schema": {"name": "forecast", "strict": true, "schema": {"type": "object",
             "properties": {"sunny": {"type": "boolean"}, "unit": {"enum": ["celsius", "fahrenheit"]}, "level": {"enum": [1, 2, 3]}},
             "required": ["sunny", "unit", "level"], "additionalProperties": false}}}
            """;
        async Task<string> Reply(string route, string body, bool stream = false)
        {
            using var r = await http.PostAsync(route, new StringContent(body.Replace("STREAM", stream ? "true" : "false"), Encoding.UTF8, "application/json"));
            var text = await r.Content.ReadAsStringAsync();
            Assert.True(r.StatusCode == HttpStatusCode.OK, text);
            if (!stream)
            {
                var choice = JsonDocument.Parse(text).RootElement.GetProperty("choices")[0];
                Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
                return choice.TryGetProperty("message", out var m) ? m.GetProperty("content").GetString()! : choice.GetProperty("text").GetString()!;
            }
            var events = text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0].Clone());
            return string.Concat(events.Select(c => c.TryGetProperty("delta", out var d) ? (d.TryGetProperty("content", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : "")
                : c.GetProperty("text").GetString()));
        }
        string chat = """{"messages": [{"role": "user", "content": "Weather?"}], "max_tokens": 60, "temperature": 0, "stream": STREAM, "response_format": """ + Format + "}";
        var whole = await Reply("/v1/chat/completions", chat);
        var json = JsonDocument.Parse(whole).RootElement;
        Assert.Equal(["level", "sunny", "unit"], json.EnumerateObject().Select(p => p.Name).Order());
        Assert.Contains(json.GetProperty("unit").GetString(), new[] { "celsius", "fahrenheit" });
        Assert.InRange(json.GetProperty("level").GetInt32(), 1, 3);
        Assert.True(json.GetProperty("sunny").ValueKind is JsonValueKind.True or JsonValueKind.False);
        Assert.Equal(whole, await Reply("/v1/chat/completions", chat, stream: true));
        // The legacy completions route takes it too; json_object is any object.
        var completion = await Reply("/v1/completions", """{"prompt": "Weather:", "max_tokens": 60, "temperature": 0, "stream": STREAM, "response_format": """ + Format + "}");
        Assert.Equal(JsonValueKind.Object, JsonDocument.Parse(completion).RootElement.ValueKind);
        using var forced = await http.PostAsync("/v1/chat/completions", new StringContent(
            """{"messages": [{"role": "user", "content": "Hi"}], "tools": [""" + NoArguments + """], "tool_choice": "required", "response_format": {"type": "json_object"}}""",
            Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, forced.StatusCode);
    }

    /// <summary>A schema with value rules (a pattern, a format, bounds and a step, lengths, counts, a nullable branch),
    /// sampled: every reply of a random-weight model is valid per JsonSchema.Net with format validation on.</summary>
    [Fact]
    public async Task SampledJsonRepliesKeepTheSchemasValueRules()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(folder), "qwen"));
        const string Schema = """
            {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-\\d{3}$"}, "when": {"type": "string", "format": "date"},
             "score": {"type": "number", "minimum": 0, "maximum": 10, "multipleOf": 0.5}, "count": {"type": "integer", "minimum": 1, "maximum": 20},
             "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 2}, "note": {"anyOf": [{"type": "string", "maxLength": 6}, {"type": "null"}]}},
             "required": ["code", "when", "score", "count", "tags", "note"], "additionalProperties": false}
            """;
        var validator = Json.Schema.JsonSchema.FromText(Schema);
        using var r = await served.Http.PostAsync("/v1/chat/completions", new StringContent(
            """{"messages": [{"role": "user", "content": "A record, please"}], "max_tokens": 400, "temperature": 1, "seed": 5, "n": 4, """
            + """ "response_format": {"type": "json_schema", "json_schema": {"name": "record", "strict": true, "schema": """ + Schema + "}}}",
            Encoding.UTF8, "application/json"));
        var text = await r.Content.ReadAsStringAsync();
        Assert.True(r.StatusCode == HttpStatusCode.OK, text);
        foreach (var choice in JsonDocument.Parse(text).RootElement.GetProperty("choices").EnumerateArray())
        {
            Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
            var reply = choice.GetProperty("message").GetProperty("content").GetString()!;
            var result = validator.Evaluate(JsonDocument.Parse(reply).RootElement, new Json.Schema.EvaluationOptions { RequireFormatValidation = true });
            Assert.True(result.IsValid, reply);
        }
    }

    /// <summary>vLLM's and llama.cpp's structured-output fields: <c>guided_regex</c>, <c>guided_choice</c>,
    /// <c>structured_outputs</c>, <c>guided_json</c> / <c>json_schema</c> and <c>grammar</c> / <c>guided_grammar</c>
    /// (GBNF) hold the reply as asked, on both routes and streamed alike; two shapes at once, a bad expression, grammar
    /// or choice list are 400s.</summary>
    [Fact]
    public async Task VllmAndLlamaCppStructuredOutputFieldsHoldTheReply()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(folder), "qwen"));
        string Reply(string text, bool chat) =>
            JsonDocument.Parse(text).RootElement.GetProperty("choices")[0] is var c && chat ? c.GetProperty("message").GetProperty("content").GetString()! : c.GetProperty("text").GetString()!;
        const string Chat = """{"messages": [{"role": "user", "content": "Answer"}], "max_tokens": 60, "temperature": 1, "seed": 3, """;
        const string Completion = """{"prompt": "Answer:", "max_tokens": 60, "temperature": 1, "seed": 3, """;
        foreach (var (route, start, chat) in new[] { ("/v1/chat/completions", Chat, true), ("/v1/completions", Completion, false) })
        {
            var (status, text) = await served.Post(route, start + "\"guided_regex\": \"[A-Z]{2}-\\\\d{3}\"}");
            Assert.True(status == HttpStatusCode.OK, text);
            Assert.Matches("^[A-Z]{2}-\\d{3}$", Reply(text, chat));
            Assert.Equal("stop", JsonDocument.Parse(text).RootElement.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
            (status, text) = await served.Post(route, start + "\"guided_choice\": [\"red.\", \"green?\", \"blue (dark)\"]}");
            Assert.True(status == HttpStatusCode.OK, text);
            Assert.Contains(Reply(text, chat), new[] { "red.", "green?", "blue (dark)" });
            (status, text) = await served.Post(route, start + "\"structured_outputs\": {\"choice\": [\"yes\", \"no\"]}}");
            Assert.Contains(Reply(text, chat), new[] { "yes", "no" });
            (status, text) = await served.Post(route, start + "\"guided_json\": \"{\\\"type\\\": \\\"object\\\", \\\"properties\\\": {\\\"ok\\\": {\\\"type\\\": \\\"boolean\\\"}}, \\\"required\\\": [\\\"ok\\\"]}\"}");
            Assert.True(status == HttpStatusCode.OK, text);
            Assert.True(JsonDocument.Parse(Reply(text, chat)).RootElement.GetProperty("ok").ValueKind is JsonValueKind.True or JsonValueKind.False);
            foreach (var field in new[] { "grammar", "guided_grammar" })
            {
                (status, text) = await served.Post(route, start + "\"" + field + "\": \"root ::= \\\"#\\\" [0-9]{2} (\\\" or \\\" [a-z]{1,4})?\"}");
                Assert.True(status == HttpStatusCode.OK, text);
                Assert.Matches("^#[0-9]{2}( or [a-z]{1,4})?$", Reply(text, chat));
            }
            (status, text) = await served.Post(route, start + "\"structured_outputs\": {\"grammar\": \"root ::= [xy]{3}\"}}");
            Assert.Matches("^[xy]{3}$", Reply(text, chat));
            (status, text) = await served.Post(route, start + "\"json_schema\": {\"type\": \"object\", \"properties\": {\"n\": {\"type\": \"integer\", \"minimum\": 7, \"maximum\": 9}}, \"required\": [\"n\"]}}");
            Assert.InRange(JsonDocument.Parse(Reply(text, chat)).RootElement.GetProperty("n").GetInt32(), 7, 9);
            // Streamed: the same text in pieces.
            var whole = Reply((await served.Post(route, start + "\"guided_regex\": \"(ab|cd)+e\"}")).Text, chat);
            var streamed = (await served.Post(route, start + "\"stream\": true, \"guided_regex\": \"(ab|cd)+e\"}")).Text;
            var pieces = streamed.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0])
                .Select(c => chat ? (c.GetProperty("delta").TryGetProperty("content", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : "") : c.GetProperty("text").GetString());
            Assert.Equal(whole, string.Concat(pieces));
        }
        foreach (var (body, field) in new[]
                 {
                     ("\"grammar\": \"root ::= missing\"", "grammar"), ("\"grammar\": \"x\"", "grammar"), ("\"guided_grammar\": 3", "guided_grammar"),
                     ("\"grammar\": \"root ::= root \\\"a\\\"\"", "grammar"), ("\"grammar\": \"root ::= \\\"a\\\"\", \"guided_regex\": \"a\"", "guided_regex"),
                     ("\"guided_regex\": \"a\", \"guided_choice\": [\"b\"]", "guided_choice"),
                     ("\"guided_regex\": \"a\", \"response_format\": {\"type\": \"json_object\"}", "guided_regex"),
                     ("\"guided_regex\": \"(?<=a)b\"", "guided_regex"), ("\"guided_regex\": \"(a\"", "guided_regex"), ("\"guided_regex\": 5", "guided_regex"),
                     ("\"guided_choice\": []", "guided_choice"), ("\"guided_choice\": [\"\"]", "guided_choice"), ("\"guided_json\": \"{nope\"", "guided_json"),
                     ("\"guided_json\": {\"type\": \"string\"}", "guided_json"),
                 })
        {
            var (status, text) = await served.Post("/v1/chat/completions", Chat + body + "}");
            Assert.True(status == HttpStatusCode.BadRequest, body + " → " + text);
            Assert.Equal(field, JsonDocument.Parse(text).RootElement.GetProperty("error").GetProperty("param").GetString());
        }
    }

    /// <summary>A template that describes tools without Hermes' tags gets Llama 3.x's form forced:
    /// <c>{"name": …, "parameters": …}</c>, answered as a call; a template without tools refuses forcing.</summary>
    [Fact]
    public async Task ALlamaStyleTemplateGetsItsOwnForm()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        var template = dir.File("llama31.jinja");
        File.WriteAllText(template, "{% if tools %}Tools: {{ tools | tojson }}\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n");
        using var service = new CompletionService(LoadedModel.Open(folder), "qwen", chatTemplateFile: template);
        var request = new CompletionRequest
        {
            Messages = [("user", "What time is it?")], MaxTokens = 30, Tools = [JsonDocument.Parse(NoArguments).RootElement], RequiredTool = CompletionRequest.AnyTool,
        };
        var outcome = await service.CompleteAsync(request);
        Assert.Equal("tool_calls", outcome.FinishReason);
        Assert.Equal("", outcome.Text); // the whole reply is the call
        Assert.True(outcome.PromptTokens > service.PromptTokens(request with { RequiredTool = null }).Length, "the call's start is in the prompt");
        Assert.Equal("get_time", outcome.ToolCalls![0].Name);
        Assert.Empty(JsonDocument.Parse(outcome.ToolCalls[0].Arguments).RootElement.EnumerateObject());

        var plainFile = dir.File("plain.jinja");
        File.WriteAllText(plainFile, "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant:");
        using var plain = new CompletionService(LoadedModel.Open(folder), "qwen", chatTemplateFile: plainFile);
        var e = await Assert.ThrowsAsync<Nanoscale.Tensors.InvalidOptionException>(() => plain.CompleteAsync(request));
        Assert.Equal("tool_choice", e.Option);
        Assert.Contains("does not describe tools", e.Message);
    }

    /// <summary>Templates that describe Mistral's and Phi-4-mini's calls get a forced call in that form —
    /// <c>[TOOL_CALLS][{"name": …, "arguments": …}]</c>, <c>&lt;|tool_call|&gt;{"name": …, "arguments": …}</c> — made by the
    /// reply's beginning and the constraint, and answered as the call.</summary>
    [Theory]
    [InlineData("{% if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}{% for m in messages %}[INST]{{ m.content }}[/INST]{% endfor %}{# calls: [TOOL_CALLS] #}",
        "[TOOL_CALLS][{\"name\": \"")]
    [InlineData("{% for t in tools %}<|tool|>{{ t | tojson }}<|/tool|>{% endfor %}{# calls: <|tool_call|> #}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}<|assistant|>",
        "<|tool_call|>{\"name\": \"")]
    public async Task MistralAndPhiTemplatesGetTheirOwnForm(string templateText, string start)
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        var template = dir.File("template.jinja");
        File.WriteAllText(template, templateText);
        using var service = new CompletionService(LoadedModel.Open(folder), "qwen", chatTemplateFile: template);
        var request = new CompletionRequest
        {
            Messages = [("user", "What time is it?")], MaxTokens = 30, Tools = [JsonDocument.Parse(NoArguments).RootElement, JsonDocument.Parse(Tool).RootElement],
            RequiredTool = CompletionRequest.AnyTool,
        };
        var streamed = new StringBuilder();
        var outcome = await service.CompleteAsync(request, piece => streamed.Append(piece));
        Assert.StartsWith(start, streamed.ToString());
        Assert.Equal("tool_calls", outcome.FinishReason);
        Assert.Equal("", outcome.Text);
        var call = Assert.Single(outcome.ToolCalls!);
        Assert.Contains(call.Name, new[] { "get_time", "get_weather" });
        JsonDocument.Parse(call.Arguments).Dispose();
    }

    /// <summary>A thinking template (reasoning blocks) on the same model: replies pass through the reasoning splitter, and
    /// streamed content still adds up to the non-streamed content (this random model never opens a block).</summary>
    [Fact]
    public async Task AThinkingTemplatesRepliesStreamAsTheyAnswer()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        var template = Path.Combine(Architecture.ArchitectureRules.RepositoryRoot(), "tests", "Nanoscale.Tests", "Serve", "ChatTemplates", "reasoning-chatml.jinja");
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(folder), "qwen", chatTemplateFile: template));
        var (service, http) = (served.Service, served.Http);
        Assert.True(service.ChatTemplateThinks);
        const string body = """{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10, "temperature": 0}""";
        using var whole = await http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
        var message = JsonDocument.Parse(await whole.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("message");
        Assert.False(message.TryGetProperty("reasoning_content", out _));
        const string streamedBody = """{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10, "temperature": 0, "stream": true}""";
        using var streamed = await http.PostAsync("/v1/chat/completions", new StringContent(streamedBody, Encoding.UTF8, "application/json"));
        var events = (await streamed.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        var text = string.Concat(events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0].GetProperty("delta"))
            .Select(d => d.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : ""));
        Assert.Equal(message.GetProperty("content").GetString(), text);
    }

    /// <summary>A template that opens the reasoning block in the prompt (DeepSeek-R1's way): the reply begins as
    /// reasoning, whole and streamed alike (this random model never closes the block, so all of it is reasoning), and
    /// with the block closed in the prompt by the request's arguments it is all content.</summary>
    [Fact]
    public async Task ATemplateThatOpensTheBlockGivesTheReplyAsReasoning()
    {
        using var dir = new TempDir();
        await using var served = await ServedModel.WithTemplate(dir, "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% if thinking is not defined or thinking %}<think>\n{% endif %}{% endif %}");
        var (service, http) = (served.Service, served.Http);
        async Task<JsonElement> Message(string extra)
        {
            using var r = await http.PostAsync("/v1/chat/completions", new StringContent(
                $$"""{"messages": [{"role": "user", "content": "Is 7 prime?"}], "max_tokens": 10, "temperature": 0{{extra}}}""", Encoding.UTF8, "application/json"));
            return JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("message").Clone();
        }
        var whole = await Message("");
        var reasoning = whole.GetProperty("reasoning_content").GetString()!;
        Assert.NotEmpty(reasoning);
        Assert.Equal("", whole.GetProperty("content").GetString());
        using (var streamed = await http.PostAsync("/v1/chat/completions", new StringContent(
            """{"messages": [{"role": "user", "content": "Is 7 prime?"}], "max_tokens": 10, "temperature": 0, "stream": true}""", Encoding.UTF8, "application/json")))
        {
            var events = (await streamed.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            var deltas = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0].GetProperty("delta").Clone()).ToList();
            string Sum(string field) => string.Concat(deltas.Select(d => d.TryGetProperty(field, out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : ""));
            Assert.Equal(reasoning, Sum("reasoning_content"));
            Assert.Equal("", Sum("content"));
        }
        var closed = await Message(""", "chat_template_kwargs": {"thinking": false}""");
        Assert.False(closed.TryGetProperty("reasoning_content", out _));
        Assert.NotEmpty(closed.GetProperty("content").GetString()!);
    }

    /// <summary>A reply held to a JSON object under a template that opens the reasoning block in the prompt: the reasoning
    /// is free and the shape holds from the block's close on (<c>AfterText</c>), so the object is the content, not the
    /// reasoning. This random model never closes the block: its reasoning is its own text, where holding the whole reply
    /// made it write the object inside the block.</summary>
    [Fact]
    public async Task AThinkingReplyHeldToJsonReasonsFreely()
    {
        using var dir = new TempDir();
        await using var served = await ServedModel.WithTemplate(dir, "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
            "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}");
        using var r = await served.Http.PostAsync("/v1/chat/completions", new StringContent(
            """{"messages": [{"role": "user", "content": "Is 7 prime?"}], "max_tokens": 12, "temperature": 0, "response_format": {"type": "json_object"}}""",
            Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var message = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.GetProperty("choices")[0].GetProperty("message");
        var reasoning = message.GetProperty("reasoning_content").GetString()!;
        Assert.NotEmpty(reasoning);
        Assert.False(reasoning.TrimStart().StartsWith('{'), $"the object was written inside the reasoning block: {reasoning}");
    }

    /// <summary>The Responses API with a thinking template: the reasoning block is a <c>reasoning</c> output item before
    /// the message (its text the chat route's <c>reasoning_content</c>), streamed as <c>response.reasoning_text.delta</c>
    /// events that add up to it; a reasoning item sent back in <c>input</c> is accepted.</summary>
    [Fact]
    public async Task ResponsesGiveReasoningAsItsOwnItem()
    {
        using var dir = new TempDir();
        await using var served = await ServedModel.WithTemplate(dir, "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
            "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}");
        var (_, chatText) = await served.Post("/v1/chat/completions", """{"messages": [{"role": "user", "content": "Is 7 prime?"}], "max_tokens": 10, "temperature": 0}""");
        var reasoning = JsonDocument.Parse(chatText).RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("reasoning_content").GetString()!;
        Assert.NotEmpty(reasoning);

        var (status, text) = await served.Post("/v1/responses", """{"input": "Is 7 prime?", "max_output_tokens": 10, "temperature": 0}""");
        Assert.True(status == HttpStatusCode.OK, text);
        var output = JsonDocument.Parse(text).RootElement.GetProperty("output");
        Assert.Equal("reasoning", output[0].GetProperty("type").GetString());
        Assert.StartsWith("rs_", output[0].GetProperty("id").GetString());
        Assert.Equal(("reasoning_text", reasoning), (output[0].GetProperty("content")[0].GetProperty("type").GetString(), output[0].GetProperty("content")[0].GetProperty("text").GetString()));
        Assert.Equal("message", output[1].GetProperty("type").GetString());
        Assert.Equal("", output[1].GetProperty("content")[0].GetProperty("text").GetString());

        var (_, streamed) = await served.Post("/v1/responses", """{"input": "Is 7 prime?", "max_output_tokens": 10, "temperature": 0, "stream": true}""");
        var events = streamed.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => JsonDocument.Parse(e[(e.IndexOf("data: ", StringComparison.Ordinal) + 6)..]).RootElement.Clone()).ToList();
        Assert.Equal(reasoning, string.Concat(events.Where(e => e.GetProperty("type").GetString() == "response.reasoning_text.delta").Select(e => e.GetProperty("delta").GetString())));
        var done = events.Single(e => e.GetProperty("type").GetString() == "response.reasoning_text.done");
        Assert.Equal((reasoning, 0), (done.GetProperty("text").GetString(), done.GetProperty("output_index").GetInt32()));
        Assert.Equal("reasoning", events[^1].GetProperty("response").GetProperty("output")[0].GetProperty("type").GetString());

        var (again, _) = await served.Post("/v1/responses", """
            {"input": [{"role": "user", "content": "Is 7 prime?"}, {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "hmm"}]},
                       {"role": "assistant", "content": "Yes."}, {"role": "user", "content": "And 9?"}], "max_output_tokens": 4}
            """);
        Assert.Equal(HttpStatusCode.OK, again);
    }

    /// <summary>A reply cut off by max_tokens inside a call (tools offered) answers the call as far as it was written,
    /// with finish_reason length and the text before it as content — what the streamed answer sent, and what OpenAI
    /// answers; without tools, or finished, the text stays text.</summary>
    [Fact]
    public void AReplyCutOffInsideACallAnswersTheCallAsFarAsItWent()
    {
        const string Reply = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par";
        JsonElement Message(string text, string finish, bool tools) =>
            JsonSerializer.SerializeToElement(OpenAiServer.Response("id", 0, "m", chat: true, [new CompletionOutcome(text, 10, 30, finish)], tools: tools))
                .GetProperty("choices")[0].GetProperty("message");
        var cut = Message(Reply, "length", tools: true);
        Assert.Equal("Let me check.", cut.GetProperty("content").GetString());
        var call = cut.GetProperty("tool_calls")[0].GetProperty("function");
        Assert.Equal("get_weather", call.GetProperty("name").GetString());
        // The arguments as the stream sent them (the same class reads both).
        var stream = new ToolCallDeltas();
        var streamed = string.Concat(stream.Accept(Reply).Select(d => d.Arguments));
        Assert.Equal(streamed, call.GetProperty("arguments").GetString());
        Assert.StartsWith("{\"city\": \"Par", streamed);
        Assert.False(Message(Reply, "length", tools: false).TryGetProperty("tool_calls", out _));
        Assert.Equal(Reply, Message(Reply, "stop", tools: true).GetProperty("content").GetString());
        Assert.False(Message("Just text, cut", "length", tools: true).TryGetProperty("tool_calls", out _));
        var llama = Message("{\"name\": \"f\", \"parameters\": {\"x\": 1", "length", tools: true);
        Assert.Equal(JsonValueKind.Null, llama.GetProperty("content").ValueKind);
        Assert.Equal("f", llama.GetProperty("tool_calls")[0].GetProperty("function").GetProperty("name").GetString());
    }

    [Fact]
    public void AReplyOfCallsIsAnsweredAsToolCalls()
    {
        var outcome = new CompletionOutcome("", 10, 7, "tool_calls") { ToolCalls = [new ToolCall("call_1", "get_weather", """{"city": "Paris"}""")] };
        var json = JsonSerializer.SerializeToElement(OpenAiServer.Response("id", 0, "m", chat: true, [outcome]));
        var choice = json.GetProperty("choices")[0];
        Assert.Equal("tool_calls", choice.GetProperty("finish_reason").GetString());
        var message = choice.GetProperty("message");
        Assert.Equal(JsonValueKind.Null, message.GetProperty("content").ValueKind);
        var call = message.GetProperty("tool_calls")[0];
        Assert.Equal(("call_1", "function", "get_weather", """{"city": "Paris"}"""), (call.GetProperty("id").GetString(), call.GetProperty("type").GetString(),
            call.GetProperty("function").GetProperty("name").GetString(), call.GetProperty("function").GetProperty("arguments").GetString()));
    }

    [Fact]
    public async Task AModelWithoutATemplateRefusesTools()
    {
        using var service = new CompletionService(LoadedModel.Open(SharedData.Stories260K), "s");
        var request = new CompletionRequest { Messages = [("user", "Hi")], Tools = [JsonDocument.Parse(Tool).RootElement], MaxTokens = 2 };
        var e = await Assert.ThrowsAsync<Nanoscale.Tensors.InvalidOptionException>(() => service.CompleteAsync(request));
        Assert.Equal("tools", e.Option);
    }
}

/// <summary>Chat on a generated Llama-3-shaped model with Llama-3's real tokenizer and chat template.</summary>
public sealed class Llama3ChatTests
{
    [Fact]
    public async Task ChatUsesTheLlama3TemplateAndItsSpecialTokens()
    {
        using var dir = new TempDir();
        var folder = SampleCheckpoint.Write(dir.File("llama3"), new SampleOptions
        {
            Dim = 64, HiddenDim = 128, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 128256, MaxSeqLen = 512,
            RopeTheta = 500000f, TiedEmbeddings = true, TokenizerFrom = SharedData.Path("tokenizers", "llama3"),
        });
        using var service = new CompletionService(LoadedModel.Open(folder), "llama3");
        Assert.Equal("tokenizer_config.json", service.ChatTemplateName);
        var request = new CompletionRequest { Messages = [("user", "Hi!")], MaxTokens = 8, Sampling = new SamplingOptions() };
        // The rendered prompt's special tokens are single tokens of the vocabulary, BOS first.
        var prompt = service.PromptTokens(request);
        Assert.Equal(128000, prompt[0]);                                          // <|begin_of_text|>
        Assert.Contains(128006, prompt);                                          // <|start_header_id|>
        Assert.Contains(128009, prompt);                                          // <|eot_id|>
        Assert.Equal([128006, 78191, 128007, 271], prompt[^4..]);                 // <|start_header_id|>assistant<|end_header_id|>\n\n

        await using var app = OpenAiServer.Build(service, new ServeOptions("127.0.0.1", 0));
        await app.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri(app.Urls.Single()) };
        using var response = await http.PostAsync("/v1/chat/completions",
            new StringContent("""{"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 8, "temperature": 0}""", Encoding.UTF8, "application/json"));
        var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(prompt.Length, json.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        await app.StopAsync();

        // Another template from a file (serve --chat-template): the request's chat_template_kwargs reach it, and its own
        // refusal comes back as a 400 with its words.
        var file = dir.File("chat.jinja");
        File.WriteAllText(file, """
            {%- if messages[-1].role != 'user' %}{{ raise_exception('The last message must be the user\'s') }}{% endif %}
            {%- for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>{{ m.content }}<|eot_id|>{% endfor %}
            {%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>{% endif %}
            {%- if think is defined and not think %}<|eot_id|>{% endif %}
            """);
        using var other = new CompletionService(LoadedModel.Open(folder), "llama3", chatTemplateFile: file);
        Assert.Equal(file, other.ChatTemplateName);
        await using var server = OpenAiServer.Build(other, new ServeOptions("127.0.0.1", 0));
        await server.StartAsync();
        using var client = new HttpClient { BaseAddress = new Uri(server.Urls.Single()) };
        async Task<(HttpStatusCode, JsonElement)> Chat(string body)
        {
            using var r = await client.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
            return (r.StatusCode, JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.Clone());
        }
        var (status, plain) = await Chat("""{"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 1}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var (_, noThinking) = await Chat("""{"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 1, "chat_template_kwargs": {"think": false}}""");
        Assert.Equal(plain.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() + 1, noThinking.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        var (refused, error) = await Chat("""{"messages": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Yo"}], "max_tokens": 1}""");
        Assert.Equal(HttpStatusCode.BadRequest, refused);
        Assert.Contains("The last message must be the user's", error.GetProperty("error").GetProperty("message").GetString());
        var (badType, _) = await Chat("""{"messages": [{"role": "user", "content": "Hi!"}], "chat_template_kwargs": [1]}""");
        Assert.Equal(HttpStatusCode.BadRequest, badType);
        await server.StopAsync();
    }
}

/// <summary>Prompt caching over HTTP on a generated Qwen2.5-shaped model with its real template: a chat client sends the
/// whole conversation every turn, and the next turn runs only what the last one did not (reported as OpenAI reports it,
/// <c>usage.prompt_tokens_details.cached_tokens</c>, and counted in <c>/health</c>), answering as a server without the
/// cache does.</summary>
public sealed class PromptCacheServeTests
{
    [Fact]
    public async Task AChatsNextTurnRunsOnlyItsNewTokens()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(folder), "qwen"));
        using var plain = new CompletionService(LoadedModel.Open(folder), "qwen", promptCache: false);
        var (service, http) = (served.Service, served.Http);
        Assert.True(service.PromptCache);
        Assert.False(plain.PromptCache);
        var system = new ChatMessage("system", "You are a helpful assistant who answers in short, friendly sentences about the weather.");
        async Task<(string Content, int Prompt, int Cached)> Turn(IReadOnlyList<ChatMessage> messages)
        {
            var body = JsonSerializer.Serialize(new { messages = messages.Select(m => new { role = m.Role, content = m.Content }), max_tokens = 12, temperature = 0 });
            using var r = await http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
            var json = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            var usage = json.GetProperty("usage");
            return (json.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString()!, usage.GetProperty("prompt_tokens").GetInt32(),
                usage.GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());
        }

        List<ChatMessage> conversation = [system, new("user", "Is it sunny in Paris?")];
        var reply = await Turn(conversation);
        Assert.Equal(0, reply.Cached);
        long cached = 0;
        foreach (var next in new[] { "And in Rome?", "Thanks! What about tomorrow?" })
        {
            int before = service.PromptTokens(new CompletionRequest { Messages = conversation }).Length;
            conversation.Add(new("assistant", reply.Content));
            conversation.Add(new("user", next));
            reply = await Turn(conversation);
            // The last turn's prompt came from the cache (and its answer, as far as it reads back as the same tokens).
            Assert.InRange(reply.Cached, before, reply.Prompt - 1);
            cached += reply.Cached;
            var alone = await plain.CompleteAsync(new CompletionRequest { Messages = conversation, MaxTokens = 12 });
            Assert.Equal(0, alone.CachedPromptTokens);
            Assert.Equal(alone.Text, reply.Content);
        }
        var health = JsonDocument.Parse(await http.GetStringAsync("/health")).RootElement;
        Assert.True(health.GetProperty("prompt_cache").GetBoolean());
        Assert.True(health.GetProperty("cached_prompt_tokens").GetInt64() >= cached);
    }

    /// <summary>Two users of one application (the same long system message, different questions): the second reads the
    /// first's system message as a shared beginning instead of copying it — <c>/health</c> and <c>/metrics</c> show one,
    /// held once — and answers as a server without the cache does.</summary>
    [Fact]
    public async Task UsersOfOneSystemMessageReadItOnce()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(folder), "qwen"));
        using var plain = new CompletionService(LoadedModel.Open(folder), "qwen", promptCache: false);
        var system = new ChatMessage("system", "You are the weather desk of a small seaside town. Answer in two short, friendly sentences, "
            + "name the temperature in degrees Celsius, say whether to take an umbrella, and never talk about anything but the weather.");
        var sizes = new List<long>();
        foreach (var question in new[] { "Is it going to rain in the harbour this afternoon?", "Should I wear a coat to the market tomorrow morning?" })
        {
            List<ChatMessage> messages = [system, new("user", question)];
            var body = JsonSerializer.Serialize(new { messages = messages.Select(m => new { role = m.Role, content = m.Content }), max_tokens = 12, temperature = 0 });
            using var r = await served.Http.PostAsync("/v1/chat/completions", new StringContent(body, Encoding.UTF8, "application/json"));
            Assert.Equal(HttpStatusCode.OK, r.StatusCode);
            var json = JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement;
            var alone = await plain.CompleteAsync(new CompletionRequest { Messages = messages, MaxTokens = 12 });
            Assert.Equal(alone.Text, json.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
            var health = JsonDocument.Parse(await served.Http.GetStringAsync("/health")).RootElement;
            sizes.Add(health.GetProperty("shared_prefixes").GetInt32());
            sizes.Add(health.GetProperty("kv_shared_bytes").GetInt64());
        }
        int systemTokens = KvPrefix.Whole(served.Service.PromptTokens(new CompletionRequest { Messages = [system, new("user", "A")] }).Length - 4);
        Assert.Equal(0, sizes[0]); // the first user ran it
        Assert.Equal(1, sizes[2]); // the second reads it, shared with the first's kept cache
        Assert.InRange(sizes[3], served.Service.KvBytes(systemTokens - 8), served.Service.KvBytes(systemTokens + 8));
        Assert.Contains($"nanoscale_kv_shared_bytes {sizes[3]}", await served.Http.GetStringAsync("/metrics"));
    }
}

/// <summary>A model served in-process on a free loopback port: its service (owned), the app and a client for it.</summary>
internal sealed class ServedModel : IAsyncDisposable
{
    private ServedModel(CompletionService service, WebApplication app) =>
        (Service, App, Http) = (service, app, new HttpClient { BaseAddress = new Uri(app.Urls.Single()) });

    public CompletionService Service { get; }

    public WebApplication App { get; }

    public HttpClient Http { get; }

    /// <summary>POSTs a JSON body: the status and the answer's text.</summary>
    public async Task<(HttpStatusCode Status, string Text)> Post(string route, string body)
    {
        using var r = await Http.PostAsync(route, new StringContent(body, Encoding.UTF8, "application/json"));
        return (r.StatusCode, await r.Content.ReadAsStringAsync());
    }

    /// <summary>A generated Qwen2.5-shaped model (its real tokenizer) served with the chat template
    /// <paramref name="template"/> (Jinja text), written in <paramref name="dir"/>.</summary>
    public static Task<ServedModel> WithTemplate(TempDir dir, string template)
    {
        var folder = SampleModels.Qwen25(dir, 1024);
        var file = dir.File("template.jinja");
        File.WriteAllText(file, template);
        return Start(new CompletionService(LoadedModel.Open(folder), "qwen", chatTemplateFile: file));
    }

    public static async Task<ServedModel> Start(CompletionService service, ServeOptions? options = null)
    {
        var app = OpenAiServer.Build(service, options ?? new ServeOptions("127.0.0.1", 0));
        await app.StartAsync();
        return new ServedModel(service, app);
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
        Service.Dispose();
    }
}

/// <summary><c>/metrics</c>: Prometheus' text format, and numbers that add up — requests finished and cancelled,
/// their prompt and generated tokens as the answers' usage says, one first-text observation per answered request.</summary>
public sealed class MetricsTests
{
    [Fact]
    public async Task MetricsCountWhatTheServiceDid()
    {
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(SharedData.Stories260K), "s"));
        int prompt = 0, generated = 0;
        foreach (var body in new[] { """{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}""", """{"prompt": "The dog", "max_tokens": 5, "stream": true}""" })
        {
            using var r = await served.Http.PostAsync("/v1/completions", new StringContent(body, Encoding.UTF8, "application/json"));
            var text = await r.Content.ReadAsStringAsync();
            var usage = text.StartsWith("data: ")
                ? JsonDocument.Parse(text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[^2]["data: ".Length..]).RootElement.GetProperty("usage")
                : JsonDocument.Parse(text).RootElement.GetProperty("usage");
            prompt += usage.GetProperty("prompt_tokens").GetInt32();
            generated += usage.GetProperty("completion_tokens").GetInt32();
        }
        using var cancel = new CancellationTokenSource();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => served.Service.CompleteAsync(
            new CompletionRequest { Prompt = "Once", MaxTokens = 200 }, _ => cancel.Cancel(), cancel.Token));
        await served.Service.EmbedAsync(["Once upon a time"]);

        using var response = await served.Http.GetAsync("/metrics");
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        var lines = (await response.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.All(lines, l => Assert.Matches(@"^(# (HELP|TYPE) nanoscale_\w+ .+|nanoscale_\w+(\{le=""[^""]+""\})? [0-9.eE+-]+)$", l));
        double Value(string name) => double.Parse(lines.Single(l => l.StartsWith(name + " ")).Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(3, Value("nanoscale_requests_admitted_total"));
        Assert.Equal(2, Value("nanoscale_requests_finished_total"));
        Assert.Equal(1, Value("nanoscale_requests_cancelled_total"));
        Assert.Equal(prompt, Value("nanoscale_prompt_tokens_total"));
        Assert.Equal(generated, Value("nanoscale_generated_tokens_total"));
        Assert.Equal(1, Value("nanoscale_embedding_inputs_total"));
        Assert.Equal(3, Value("nanoscale_time_to_first_text_seconds_count")); // the cancelled one had its first text too
        Assert.Equal(3, Value("nanoscale_time_to_first_text_seconds_bucket{le=\"+Inf\"}"));
        Assert.True(Value("nanoscale_steps_total") >= 8);
        Assert.Equal(0, Value("nanoscale_requests_in_service"));
    }
}

/// <summary>llama.cpp's utility routes on a generated Qwen2.5-shaped model with its real tokenizer and template:
/// <c>/tokenize</c> is the tokenizer's encoding, <c>/detokenize</c> its decoding, <c>/apply-template</c> the chat
/// template's rendering; bad bodies are 400s, and with an API key they need it like the API does.</summary>
public sealed class UtilityRouteTests
{
    [Fact]
    public async Task TokenizeDetokenizeAndApplyTemplate()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 256);
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(folder), "qwen"), new ServeOptions("127.0.0.1", 0, ApiKey: "k"));
        served.Http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "k");
        async Task<(HttpStatusCode Status, JsonElement Json)> Post(string route, string body)
        {
            using var r = await served.Http.PostAsync(route, new StringContent(body, Encoding.UTF8, "application/json"));
            return (r.StatusCode, JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.Clone());
        }
        var tokenizer = TokenizerLoader.Open(folder);
        var (status, tokens) = await Post("/tokenize", """{"content": "Hello wörld, 123!"}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var ids = tokens.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()).ToArray();
        Assert.Equal(tokenizer.Encode("Hello wörld, 123!", addBos: false), ids);
        var (_, text) = await Post("/detokenize", $$"""{"tokens": [{{string.Join(", ", ids)}}]}""");
        Assert.Equal("Hello wörld, 123!", text.GetProperty("content").GetString());
        var (_, prompt) = await Post("/apply-template", """{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}""");
        Assert.Equal(ChatTemplate.Find(folder).Render([("system", "Be brief."), ("user", "Hi")]), prompt.GetProperty("prompt").GetString());

        foreach (var (route, body) in new[] { ("/tokenize", "{}"), ("/tokenize", """{"content": 5}"""), ("/detokenize", """{"tokens": [999999]}"""),
                     ("/detokenize", """{"tokens": "x"}"""), ("/apply-template", """{"messages": []}"""), ("/tokenize", "[1]") })
            Assert.True((await Post(route, body)).Status == HttpStatusCode.BadRequest, $"{route} {body}");
        served.Http.DefaultRequestHeaders.Authorization = null;
        Assert.Equal(HttpStatusCode.Unauthorized, (await Post("/tokenize", """{"content": "x"}""")).Status);
        Assert.Equal(HttpStatusCode.OK, (await served.Http.GetAsync("/health")).StatusCode);
    }
}

/// <summary><c>reasoning_effort</c> (chat) and <c>reasoning.effort</c> (Responses) reach the chat template as its
/// <c>reasoning_effort</c> variable, as vLLM passes them (gpt-oss's template reads it); <c>chat_template_kwargs</c> set it first.</summary>
public sealed class ReasoningEffortTests
{
    [Fact]
    public async Task ReasoningEffortIsTheTemplatesVariable()
    {
        using var dir = new TempDir();
        await using var served = await ServedModel.WithTemplate(dir,
            "{% if reasoning_effort is defined %}Reasoning: {{ reasoning_effort }}\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n");
        async Task<string> Prompt(string extra)
        {
            var (status, text) = await served.Post("/apply-template", $$"""{"messages": [{"role": "user", "content": "Hi"}]{{extra}}}""");
            Assert.Equal(HttpStatusCode.OK, status);
            return JsonDocument.Parse(text).RootElement.GetProperty("prompt").GetString()!;
        }
        Assert.StartsWith("<|im_start|>user", await Prompt(""));
        Assert.StartsWith("Reasoning: high\n<|im_start|>user", await Prompt(""", "reasoning_effort": "high" """));
        Assert.StartsWith("Reasoning: low\n", await Prompt(""", "reasoning_effort": "high", "chat_template_kwargs": {"reasoning_effort": "low"}"""));

        // The prompt the generation reads: three more tokens or so with the line, in chat and in the Responses API.
        async Task<int> Tokens(string route, string body)
        {
            var (status, text) = await served.Post(route, body);
            Assert.True(status == HttpStatusCode.OK, text);
            var usage = JsonDocument.Parse(text).RootElement.GetProperty("usage");
            return usage.TryGetProperty("prompt_tokens", out var p) ? p.GetInt32() : usage.GetProperty("input_tokens").GetInt32();
        }
        const string Chat = """{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1""";
        int plain = await Tokens("/v1/chat/completions", Chat + "}");
        int line = served.Service.PromptTokens(new CompletionRequest { Messages = [("user", "Hi")], ChatTemplateArguments = new Dictionary<string, object?> { ["reasoning_effort"] = "medium" } }).Length;
        Assert.True(line > plain);
        Assert.Equal(line, await Tokens("/v1/chat/completions", Chat + """, "reasoning_effort": "medium"}"""));
        const string Response = """{"input": "Hi", "max_output_tokens": 1""";
        Assert.Equal(plain, await Tokens("/v1/responses", Response + "}"));
        Assert.Equal(line, await Tokens("/v1/responses", Response + """, "reasoning": {"effort": "medium", "summary": "auto"}}"""));
        Assert.Equal(HttpStatusCode.BadRequest, (await served.Post("/v1/responses", Response + """, "reasoning": {"effort": "max"}}""")).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await served.Post("/v1/responses", Response + """, "reasoning": "high"}""")).Status);
    }
}

/// <summary><c>/v1/embeddings</c> on stories260K: each vector is the model's final hidden states pooled and scaled to
/// unit length (recomputed here from a session of the runtime), a list of inputs gives each its own, token ids give
/// what their text gives, base64 carries the same floats, the official client reads them; bad inputs are 400s and an
/// input longer than the context a 413.</summary>
public sealed class EmbeddingsTests
{
    private static float[] Expected(LoadedModel model, int[] tokens, EmbeddingPooling pooling)
    {
        int width = model.Config.Dim;
        var hidden = new float[tokens.Length * width];
        model.Model.CreateSession(tokens.Length).ForwardHidden(tokens, hidden);
        var sum = new double[width];
        for (int p = pooling == EmbeddingPooling.Last ? tokens.Length - 1 : 0; p < tokens.Length; p++)
            for (int d = 0; d < width; d++) sum[d] += hidden[p * width + d];
        double norm = Math.Sqrt(sum.Sum(v => v * v));
        return [.. sum.Select(v => (float)(v / norm))];
    }

    [Fact]
    public async Task EmbeddingsArePooledHiddenStates()
    {
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(SharedData.Stories260K), "stories260K", contextLength: 64));
        async Task<(HttpStatusCode Status, JsonElement Json)> Post(string body)
        {
            using var r = await served.Http.PostAsync("/v1/embeddings", new StringContent(body, Encoding.UTF8, "application/json"));
            return (r.StatusCode, JsonDocument.Parse(await r.Content.ReadAsStringAsync()).RootElement.Clone());
        }
        using var model = LoadedModel.Open(SharedData.Stories260K);
        string[] texts = ["Once upon a time", "The dog ran to the park"];
        var (status, json) = await Post("""{"input": ["Once upon a time", "The dog ran to the park"], "model": "stories260K"}""");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("list", json.GetProperty("object").GetString());
        var data = json.GetProperty("data").EnumerateArray().ToList();
        Assert.Equal(2, data.Count);
        int tokens = 0;
        for (int i = 0; i < texts.Length; i++)
        {
            var ids = model.Tokenizer.Encode(texts[i], addBos: true);
            tokens += ids.Length;
            Assert.Equal(i, data[i].GetProperty("index").GetInt32());
            var vector = data[i].GetProperty("embedding").EnumerateArray().Select(v => v.GetSingle()).ToArray();
            var expected = Expected(model, ids, EmbeddingPooling.Mean);
            Assert.Equal(model.Config.Dim, vector.Length);
            for (int d = 0; d < vector.Length; d++) Assert.Equal(expected[d], vector[d], 1e-5f);
            Assert.Equal(1.0, Math.Sqrt(vector.Sum(v => (double)v * v)), 5);
        }
        Assert.Equal(tokens, json.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());

        // One string, token ids, base64: the same vector.
        var first = data[0].GetProperty("embedding").EnumerateArray().Select(v => v.GetSingle()).ToArray();
        var (_, single) = await Post("""{"input": "Once upon a time"}""");
        Assert.Equal(first, single.GetProperty("data")[0].GetProperty("embedding").EnumerateArray().Select(v => v.GetSingle()));
        var ids0 = string.Join(", ", model.Tokenizer.Encode(texts[0], addBos: true));
        var (_, byIds) = await Post($$"""{"input": [{{ids0}}]}""");
        Assert.Equal(first, byIds.GetProperty("data")[0].GetProperty("embedding").EnumerateArray().Select(v => v.GetSingle()));
        var (_, packed) = await Post("""{"input": ["Once upon a time"], "encoding_format": "base64"}""");
        var bytes = Convert.FromBase64String(packed.GetProperty("data")[0].GetProperty("embedding").GetString()!);
        Assert.Equal(first, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray());

        // The official client.
        var client = new OpenAI.Embeddings.EmbeddingClient("stories260K", new System.ClientModel.ApiKeyCredential("unused"),
            new OpenAI.OpenAIClientOptions { Endpoint = new Uri(served.App.Urls.Single() + "/v1") });
        var embedding = await client.GenerateEmbeddingAsync("Once upon a time");
        Assert.Equal(first, embedding.Value.ToFloats().ToArray());

        foreach (var bad in new[] { """{"input": []}""", """{"input": [[]]}""", """{"input": [3.5]}""", """{"input": {"a": 1}}""", """{}""",
                     """{"input": "x", "encoding_format": "hex"}""", """{"input": "x", "dimensions": 5}""", """{"input": [[99999]]}""" })
        {
            var (code, error) = await Post(bad);
            Assert.True(code == HttpStatusCode.BadRequest, bad);
            Assert.Equal("invalid_request_error", error.GetProperty("error").GetProperty("type").GetString());
        }
        var (tooLong, longError) = await Post(JsonSerializer.Serialize(new { input = string.Concat(Enumerable.Repeat("Once upon a time. ", 40)) }));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, tooLong);
        Assert.Equal("context_length_exceeded", longError.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal(HttpStatusCode.NotFound, (await Post("""{"input": "x", "model": "other"}""")).Status);
        Assert.Equal(0, served.Service.ReservedKvBytes);
    }

    [Fact]
    public async Task LastPoolingIsTheLastPosition()
    {
        using var service = new CompletionService(LoadedModel.Open(SharedData.Stories260K), "s");
        using var model = LoadedModel.Open(SharedData.Stories260K);
        var (vectors, tokens) = await service.EmbedAsync(["Once upon a time"], EmbeddingPooling.Last);
        var ids = model.Tokenizer.Encode("Once upon a time", addBos: true);
        Assert.Equal(ids.Length, tokens);
        var expected = Expected(model, ids, EmbeddingPooling.Last);
        for (int d = 0; d < expected.Length; d++) Assert.Equal(expected[d], vectors[0][d], 1e-5f);
    }
}

/// <summary>The Responses API on a generated Qwen2.5-shaped model: the same generation as chat completions (instructions
/// as the system message), its events when streamed adding up to the same text, function calls forced and answered as
/// <c>function_call</c> items, earlier calls and their outputs accepted as input, and the official client reads it.</summary>
public sealed class ResponsesApiTests
{
    private const string Tool = """{"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}""";

    [Fact]
    public async Task ResponsesAreChatCompletionsInTheirOwnShape()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(folder), "qwen"));
        var (status, text) = await served.Post("/v1/responses", """{"instructions": "Be brief.", "input": "Hi there", "max_output_tokens": 8, "temperature": 0}""");
        Assert.Equal(HttpStatusCode.OK, status);
        var response = JsonDocument.Parse(text).RootElement;
        Assert.Equal(("response", "incomplete", "max_output_tokens"), (response.GetProperty("object").GetString(), response.GetProperty("status").GetString(),
            response.GetProperty("incomplete_details").GetProperty("reason").GetString()));
        var message = response.GetProperty("output")[0];
        Assert.Equal(("message", "assistant"), (message.GetProperty("type").GetString(), message.GetProperty("role").GetString()));
        var output = message.GetProperty("content")[0].GetProperty("text").GetString();
        var (_, chatText) = await served.Post("/v1/chat/completions",
            """{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}], "max_tokens": 8, "temperature": 0}""");
        var chat = JsonDocument.Parse(chatText).RootElement;
        Assert.Equal(chat.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString(), output);
        Assert.Equal(chat.GetProperty("usage").GetProperty("prompt_tokens").GetInt32(), response.GetProperty("usage").GetProperty("input_tokens").GetInt32());
        Assert.Equal(8, response.GetProperty("usage").GetProperty("output_tokens").GetInt32());

        // Streamed: the API's events in order, numbered, the deltas adding up to the same text.
        var (_, events) = await served.Post("/v1/responses", """{"instructions": "Be brief.", "input": "Hi there", "max_output_tokens": 8, "temperature": 0, "stream": true}""");
        var parsed = events.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e =>
        {
            var lines = e.Split('\n');
            var data = JsonDocument.Parse(lines[1]["data: ".Length..]).RootElement.Clone();
            Assert.Equal(lines[0]["event: ".Length..], data.GetProperty("type").GetString());
            return data;
        }).ToList();
        var types = parsed.Select(p => p.GetProperty("type").GetString()).ToList();
        Assert.Equal(["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"], types[..4]);
        Assert.Equal(["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.incomplete"], types[^4..]);
        Assert.Equal(Enumerable.Range(0, parsed.Count), parsed.Select(p => p.GetProperty("sequence_number").GetInt32()));
        Assert.Equal(output, string.Concat(parsed.Where(p => p.GetProperty("type").GetString() == "response.output_text.delta").Select(p => p.GetProperty("delta").GetString())));

        // A forced function call, and a conversation that carries it and its output.
        var (_, called) = await served.Post("/v1/responses", $$"""{"input": [{"role": "user", "content": "Time?"}], "tools": [{{Tool}}], "tool_choice": "required", "max_output_tokens": 40, "temperature": 0}""");
        var call = JsonDocument.Parse(called).RootElement.GetProperty("output")[0];
        Assert.Equal(("function_call", "get_time"), (call.GetProperty("type").GetString(), call.GetProperty("name").GetString()));
        Assert.Matches("^call_[0-9a-f]{24}$", call.GetProperty("call_id").GetString());
        Assert.Empty(JsonDocument.Parse(call.GetProperty("arguments").GetString()!).RootElement.EnumerateObject());
        // Streamed, the call goes out as it is written: added with its name, its arguments in deltas, then done.
        var (_, callEvents) = await served.Post("/v1/responses", $$"""{"input": "Time?", "tools": [{{Tool}}], "tool_choice": "required", "max_output_tokens": 40, "temperature": 0, "stream": true}""");
        var streamed = callEvents.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(e => JsonDocument.Parse(e.Split('\n')[1]["data: ".Length..]).RootElement.Clone()).ToList();
        var added = streamed.Single(e => e.GetProperty("type").GetString() == "response.output_item.added").GetProperty("item");
        Assert.Equal(("function_call", "get_time", "in_progress"), (added.GetProperty("type").GetString(), added.GetProperty("name").GetString(), added.GetProperty("status").GetString()));
        var argumentDeltas = string.Concat(streamed.Where(e => e.GetProperty("type").GetString() == "response.function_call_arguments.delta").Select(e => e.GetProperty("delta").GetString()));
        var argumentsDone = streamed.Single(e => e.GetProperty("type").GetString() == "response.function_call_arguments.done").GetProperty("arguments").GetString();
        Assert.Equal(argumentsDone, argumentDeltas);
        var completed = streamed[^1];
        Assert.Equal("response.completed", completed.GetProperty("type").GetString());
        var finalCall = completed.GetProperty("response").GetProperty("output")[0];
        Assert.Equal((added.GetProperty("call_id").GetString(), added.GetProperty("id").GetString(), argumentsDone),
            (finalCall.GetProperty("call_id").GetString(), finalCall.GetProperty("id").GetString(), finalCall.GetProperty("arguments").GetString()));
        Assert.DoesNotContain(streamed, e => e.GetProperty("type").GetString() == "response.output_text.delta");

        string history = $$"""[{"role": "user", "content": [{"type": "input_text", "text": "Time?"}]}, {{call.GetRawText()}}, {"type": "function_call_output", "call_id": "{{call.GetProperty("call_id").GetString()}}", "output": "12:00"}]""";
        var (answeredStatus, answered) = await served.Post("/v1/responses", $$"""{"input": {{history}}, "tools": [{{Tool}}], "max_output_tokens": 3}""");
        Assert.Equal(HttpStatusCode.OK, answeredStatus);
        Assert.True(JsonDocument.Parse(answered).RootElement.GetProperty("usage").GetProperty("input_tokens").GetInt32() > 150, answered);

        // Going on from a stored response is sending the whole conversation (instructions are not carried over).
        string Id(string body) => JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
        string Output(string body) => JsonDocument.Parse(body).RootElement.GetProperty("output")[0].GetProperty("content")[0].GetProperty("text").GetString()!;
        JsonElement Usage(string body) => JsonDocument.Parse(body).RootElement.GetProperty("usage").Clone();
        var (_, second) = await served.Post("/v1/responses", $$"""{"instructions": "Be brief.", "previous_response_id": "{{Id(text)}}", "input": "And then?", "max_output_tokens": 6, "temperature": 0}""");
        var (_, whole) = await served.Post("/v1/responses", JsonSerializer.Serialize(new
        {
            instructions = "Be brief.", max_output_tokens = 6, temperature = 0,
            input = new object[] { new { role = "user", content = "Hi there" }, new { role = "assistant", content = output }, new { role = "user", content = "And then?" } },
        }));
        Assert.Equal(Output(whole), Output(second));
        Assert.Equal(Usage(whole).GetProperty("input_tokens").GetInt32(), Usage(second).GetProperty("input_tokens").GetInt32());
        Assert.True(Usage(second).GetProperty("input_tokens_details").GetProperty("cached_tokens").GetInt32() > 0, "the first turn came from the cache");
        var (_, unstored) = await served.Post("/v1/responses", """{"input": "x", "store": false, "max_output_tokens": 2}""");
        Assert.Equal(HttpStatusCode.BadRequest, (await served.Post("/v1/responses", $$"""{"previous_response_id": "{{Id(unstored)}}", "input": "y"}""")).Status);

        foreach (var bad in new[] { """{"input": "x", "previous_response_id": "resp_1"}""", """{}""", """{"input": []}""", """{"input": [{"role": "robot", "content": "x"}]}""",
                     """{"input": "x", "tools": [{"type": "web_search"}]}""", """{"input": "x", "text": {"format": {"type": "json_schema", "schema": {"type": "array"}}}}""" })
            Assert.True((await served.Post("/v1/responses", bad)).Status == HttpStatusCode.BadRequest, bad);
        // Refused before any text (here a prompt over the context), a streamed request gets its error status, not a
        // stream that stops.
        var tooLong = JsonSerializer.Serialize(new { input = string.Concat(Enumerable.Repeat("Once upon a time. ", 400)), stream = true });
        var (longStatus, longBody) = await served.Post("/v1/responses", tooLong);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, longStatus);
        Assert.Equal("context_length_exceeded", JsonDocument.Parse(longBody).RootElement.GetProperty("error").GetProperty("code").GetString());

        // The official client (its Responses client is marked for evaluation).
#pragma warning disable OPENAI001
        var client = new OpenAI.Responses.ResponsesClient(new System.ClientModel.ApiKeyCredential("unused"),
            new OpenAI.Responses.ResponsesClientOptions { Endpoint = new Uri(served.App.Urls.Single() + "/v1") });
        var result = await client.CreateResponseAsync("qwen", "Hi there");
        Assert.False(string.IsNullOrEmpty(result.Value.GetOutputText()));
#pragma warning restore OPENAI001
    }
}

/// <summary>Fill in the middle on a generated Qwen2.5-shaped model with its real tokenizer (which holds Qwen2.5-Coder's
/// <c>&lt;|fim_prefix|&gt;</c> tokens): OpenAI's <c>suffix</c> and llama.cpp's <c>/infill</c> make the prompt
/// <c>PRE prefix SUF suffix MID start</c> (other files first, in the repository-level form), and the middle is what
/// generation on those ids gives, ending at the family's end tokens too; a tokenizer without such tokens is a 400.</summary>
public sealed class FillInTheMiddleTests
{
    [Fact]
    public void PromptsAreTheFamilysTokensAroundTheText()
    {
        var qwen = TokenizerLoader.Open(SharedData.Path("tokenizers", "qwen2_5"));
        var fim = FillInTheMiddle.Of(qwen)!;
        int Id(string text) => Assert.Single(qwen.Encode(text, addBos: false));
        int[] Text(string text) => qwen.Encode(text, addBos: false);
        Assert.Equal([Id("<|fim_prefix|>"), .. Text("def f(x):\n    "), Id("<|fim_suffix|>"), .. Text("\nprint(f(2))"), Id("<|fim_middle|>"), .. Text("return")],
            fim.Prompt("def f(x):\n    ", "\nprint(f(2))", start: "return"));
        Assert.Equal([Id("<|repo_name|>"), .. Text("myproject\n"), Id("<|file_sep|>"), .. Text("util.py\nX = 1\n"), Id("<|file_sep|>"), .. Text("filename\n"),
                Id("<|fim_prefix|>"), .. Text("a"), Id("<|fim_suffix|>"), Id("<|fim_middle|>")],
            fim.Prompt("a", "", [("util.py", "X = 1\n")]));
        Assert.Superset(new HashSet<int> { Id("<|fim_pad|>"), Id("<|file_sep|>"), Id("<|repo_name|>"), Id("<|endoftext|>") }, fim.EndTokens.ToHashSet());
        Assert.Null(FillInTheMiddle.Of(TokenizerLoader.Open(SharedData.Path("tokenizers", "llama3"))));
        Assert.Null(FillInTheMiddle.Of(LoadedModel.Open(SharedData.Stories260K).Tokenizer));
    }

    /// <summary>Codestral's order (<c>[SUFFIX] suffix [PREFIX] prefix</c>, no middle marker) where the tokenizer has
    /// those tokens, and the tokenizer's BOS first where it has one (a Llama-3 tokenizer given Qwen's FIM tokens).</summary>
    [Fact]
    public void CodestralsOrderAndBosFirst()
    {
        ITokenizer Edited(string source, Func<System.Text.Json.Nodes.JsonObject, bool> keep, params (int Id, string Content)[] added)
        {
            var dir = new TempDir();
            foreach (var file in Directory.GetFiles(SharedData.Path("tokenizers", source))) File.Copy(file, Path.Combine(dir.Path, Path.GetFileName(file)));
            var path = Path.Combine(dir.Path, "tokenizer.json");
            var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!;
            var tokens = json["added_tokens"]!.AsArray();
            foreach (var token in tokens.Where(t => !keep(t!.AsObject())).ToList()) tokens.Remove(token);
            foreach (var (id, content) in added)
                tokens.Add(new System.Text.Json.Nodes.JsonObject
                {
                    ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
                });
            File.WriteAllText(path, json.ToJsonString());
            return TokenizerLoader.Open(dir.Path);
        }
        var codestral = Edited("qwen2_5", t => !t["content"]!.GetValue<string>().StartsWith("<|fim", StringComparison.Ordinal), (151665, "[SUFFIX]"), (151666, "[PREFIX]"));
        var spm = FillInTheMiddle.Of(codestral)!;
        int[] Text(ITokenizer t, string text) => t.Encode(text, addBos: false);
        int Id(ITokenizer t, string marker) => Assert.Single(t.Encode(marker, addBos: false));
        Assert.Equal([Id(codestral, "[SUFFIX]"), .. Text(codestral, "\nprint(f(2))"), Id(codestral, "[PREFIX]"), .. Text(codestral, "def f(x):\n    "),
                .. Text(codestral, "return")],
            spm.Prompt("def f(x):\n    ", "\nprint(f(2))", start: "return"));

        var llama = Edited("llama3", _ => true, (128256, "<|fim_prefix|>"), (128257, "<|fim_suffix|>"), (128258, "<|fim_middle|>"));
        int bos = llama.BosId!.Value;
        Assert.Equal([bos, Id(llama, "<|fim_prefix|>"), .. Text(llama, "a = "), Id(llama, "<|fim_suffix|>"), .. Text(llama, "\n"), Id(llama, "<|fim_middle|>")],
            FillInTheMiddle.Of(llama)!.Prompt("a = ", "\n"));
    }

    [Fact]
    public async Task SuffixAndInfillFillTheGap()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        var loaded = LoadedModel.Open(folder);
        await using var served = await ServedModel.Start(new CompletionService(loaded, "qwen"));
        var fim = FillInTheMiddle.Of(loaded.Tokenizer)!;
        const string Prefix = "def add(a, b):\n    ", Suffix = "\n\nprint(add(1, 2))\n";
        var expected = loaded.Generate(fim.Prompt(Prefix, Suffix), 8, new SamplingOptions { StopTokenIds = [.. fim.EndTokens] }, null);

        var (status, text) = await served.Post("/v1/completions", JsonSerializer.Serialize(new { prompt = Prefix, suffix = Suffix, max_tokens = 8, temperature = 0 }));
        Assert.True(status == HttpStatusCode.OK, text);
        var json = JsonDocument.Parse(text).RootElement;
        Assert.Equal(expected.NewText, json.GetProperty("choices")[0].GetProperty("text").GetString());
        Assert.Equal(fim.Prompt(Prefix, Suffix).Length, json.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());

        var files = new[] { new { filename = "util.py", text = "X = 1\n" } };
        (status, text) = await served.Post("/infill", JsonSerializer.Serialize(new
        {
            input_prefix = Prefix, input_suffix = Suffix, input_extra = files, prompt = "return", n_predict = 6, temperature = 0,
        }));
        Assert.True(status == HttpStatusCode.OK, text);
        json = JsonDocument.Parse(text).RootElement;
        var ids = fim.Prompt(Prefix, Suffix, [("util.py", "X = 1\n")], "return");
        Assert.Equal(ids.Length, json.GetProperty("tokens_evaluated").GetInt32());
        Assert.Equal(loaded.Generate(ids, 6, new SamplingOptions { StopTokenIds = [.. fim.EndTokens] }, null).NewText, json.GetProperty("content").GetString());

        foreach (var (route, body, field) in new[]
                 {
                     ("/v1/completions", """{"prompt": "a", "suffix": "b", "echo": true, "max_tokens": 2}""", "suffix"),
                     ("/v1/completions", """{"prompt": [1, 2], "suffix": "b", "max_tokens": 2}""", "suffix"),
                     ("/infill", """{"input_prefix": "a", "input_extra": [{"filename": "x"}]}""", "input_extra"),
                     ("/infill", """{"input_prefix": 5}""", "input_prefix"),
                 })
        {
            var (bad, answer) = await served.Post(route, body);
            Assert.True(bad == HttpStatusCode.BadRequest, $"{route} {body} → {answer}");
            Assert.Equal(field, JsonDocument.Parse(answer).RootElement.GetProperty("error").GetProperty("param").GetString());
        }
    }

    /// <summary><c>generate --suffix</c>: the same prompt as the server's, the middle between the two texts.</summary>
    [Fact]
    public void GenerateFillsTheGapToo()
    {
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 1024);
        const string Prefix = "def add(a, b):\n    ", Suffix = "\n\nprint(add(1, 2))\n";
        var result = CliProcess.Run("generate", folder, "--prompt", Prefix, "--suffix", Suffix, "-n", "6", "--json");
        Assert.True(result.ExitCode == 0, result.Stderr);
        var json = result.Json();
        using var loaded = LoadedModel.Open(folder);
        var middle = loaded.Infill(Prefix, Suffix, 6, new SamplingOptions(), null).NewText;
        Assert.Equal(middle, json.GetProperty("middle").GetString());
        Assert.Equal(Prefix + middle + Suffix, json.GetProperty("text").GetString());
        Assert.Equal(FillInTheMiddle.Of(loaded.Tokenizer)!.Prompt(Prefix, Suffix).Length, json.GetProperty("prompt_tokens").GetInt32());
        var refused = CliProcess.Run("generate", SharedData.Stories260K, "--prompt", "Once", "--suffix", "end", "-n", "3");
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("--suffix: the model's tokenizer has no fill-in-the-middle tokens", refused.Stderr);
    }

    [Fact]
    public async Task AModelWithoutFimTokensRefusesASuffix()
    {
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(SharedData.Stories260K), "stories260K"));
        var (status, text) = await served.Post("/v1/completions", """{"prompt": "Once", "suffix": "end", "max_tokens": 3}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("no fill-in-the-middle tokens", text);
        Assert.Equal(HttpStatusCode.OK, (await served.Post("/v1/completions", """{"prompt": "Once", "suffix": "", "max_tokens": 3}""")).Status);
    }
}
