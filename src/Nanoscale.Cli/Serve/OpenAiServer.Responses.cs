using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Http;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Serve;

/// <summary>
/// OpenAI's Responses API (<c>POST /v1/responses</c>), which newer clients (the Agents SDK, the official libraries'
/// response clients) speak instead of chat completions — the same generation underneath: <c>input</c> (a string, or
/// items: messages with text content, the model's earlier <c>function_call</c>s and their <c>function_call_output</c>s),
/// <c>instructions</c> (a system message first), <c>max_output_tokens</c>, <c>temperature</c>, <c>top_p</c>,
/// <c>tools</c> (functions, in this API's flat shape) and <c>tool_choice</c>, <c>text.format</c> (<c>json_object</c>,
/// <c>json_schema</c>), <c>stream</c>. The answer's <c>output</c> holds a message with the reply's text, or
/// <c>function_call</c> items; streamed, the API's events from <c>response.created</c> to <c>response.completed</c> (or
/// <c>response.incomplete</c> when <c>max_output_tokens</c> cut it).
/// <c>previous_response_id</c> goes on from a stored response (<see cref="ResponseStore"/>: in memory, the most recent
/// ones; <c>store: false</c> keeps a response out of it).
/// </summary>
internal static partial class OpenAiServer
{
    private static async Task Respond(HttpContext context, CompletionService service, ResponseStore responses, bool split = false)
    {
        CompletionRequest request;
        bool stream, store;
        List<ChatMessage> conversation;
        try
        {
            if (await ReadBody(context, service) is not { } document) return;
            using (document)
            {
                var root = document.RootElement;
                // The conversation a stored response ended with, then this request's input (instructions apart: they are
                // not carried over).
                conversation = Str(root, "previous_response_id") is not { } previous ? []
                    : responses.TryGet(previous, out var earlier) ? [.. earlier]
                    : throw new BadField("previous_response_id",
                        $"no stored response '{previous}' (responses are kept in memory, the last {responses.Capacity}, while the server runs; or send the whole conversation as 'input')");
                conversation.AddRange(ResponseInput(root));
                store = Bool(root, "store") ?? true;
                stream = Bool(root, "stream") ?? false;
                var tools = ResponseTools(root);
                request = new CompletionRequest
                {
                    Messages = Str(root, "instructions") is { } instructions ? [new ChatMessage("system", instructions), .. conversation] : conversation,
                    Tools = tools,
                    ChatTemplateArguments = ResponseReasoningEffort(root) is { } effort ? new Dictionary<string, object?> { ["reasoning_effort"] = effort } : null,
                    RequiredTool = tools is null ? null : ResponseToolChoice(root),
                    ParallelToolCalls = Bool(root, "parallel_tool_calls") ?? true,
                    JsonReply = ResponseFormat(root),
                    MaxTokens = Int(root, "max_output_tokens") ?? Math.Min(256, service.MaxTokensLimit),
                    Sampling = new SamplingOptions
                    {
                        Temperature = Number(root, "temperature") ?? 1.0,
                        TopP = Number(root, "top_p") ?? 1.0,
                        Seed = Seed(root) ?? Environment.TickCount,
                    },
                };
            }
        }
        catch (BadField e)
        {
            await Error(context, 400, "invalid_request_error", e.Message, e.Field, null);
            return;
        }
        string id = "resp_" + Guid.NewGuid().ToString("N")[..24], messageId = "msg_" + Guid.NewGuid().ToString("N")[..24];
        string reasoningId = "rs_" + Guid.NewGuid().ToString("N")[..24];
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var events = new EventStream(context, Json);
        int sequence = 0;
        Task Event(string type, object payload)
        {
            var node = JsonSerializer.SerializeToNode(payload, Json)!.AsObject();
            node.Insert(0, "type", type);
            node["sequence_number"] = sequence++;
            return events.Write($"event: {type}\ndata: {node.ToJsonString(Json)}\n\n");
        }
        try
        {
            if (!stream)
            {
                var outcome = await service.CompleteAsync(request, null, context.RequestAborted);
                if (store) responses.Put(id, [.. conversation, Reply(outcome)]);
                await Results.Json(ResponseObject(id, messageId, created, service.ModelName, outcome, split ? reasoningId : null), Json).ExecuteAsync(context);
                return;
            }
            var pieces = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true });
            var work = service.CompleteAsync(request, piece => pieces.Writer.TryWrite(piece), context.RequestAborted);
            _ = work.ContinueWith(_ => pieces.Writer.TryComplete(), TaskScheduler.Default);
            // With tools, text goes out until it may begin a call, and calls go out as they are written (as in chat).
            var gate = request.Tools is not null ? new ToolCallStream() : null;
            var calling = request.Tools is not null ? new ToolCallDeltas() : null;
            // A thinking template's reply: its reasoning block goes out as a reasoning item, the rest as above.
            var thinking = split ? new ReasoningStream(service.StartsInReasoning(request)) : null;
            int nextIndex = 0, messageIndex = -1, reasoningIndex = -1;
            async Task Reasoning(string text)
            {
                if (reasoningIndex < 0)
                {
                    reasoningIndex = nextIndex++;
                    await Event("response.output_item.added", new { output_index = reasoningIndex, item = new { id = reasoningId, type = "reasoning", summary = Array.Empty<object>(), content = Array.Empty<object>() } });
                }
                await Event("response.reasoning_text.delta", new { item_id = reasoningId, output_index = reasoningIndex, content_index = 0, delta = text });
            }
            var callIndex = new List<int>(); // each streamed call's output index
            async Task OpenMessage()
            {
                if (messageIndex >= 0) return;
                messageIndex = nextIndex++;
                await Event("response.output_item.added", new { output_index = messageIndex, item = new { id = messageId, type = "message", status = "in_progress", role = "assistant", content = Array.Empty<object>() } });
                await Event("response.content_part.added", new { item_id = messageId, output_index = messageIndex, content_index = 0, part = new { type = "output_text", text = "", annotations = Array.Empty<object>() } });
            }
            async Task Text(string text)
            {
                await OpenMessage();
                await Event("response.output_text.delta", new { item_id = messageId, output_index = messageIndex, content_index = 0, delta = text });
            }
            // The stream opens with the first text (or the end): a request refused before it (a prompt over the context,
            // a full queue, a template's refusal) is answered with its error status instead.
            bool announced = false;
            async Task Announce()
            {
                if (announced) return;
                announced = true;
                await Event("response.created", new { response = ResponseShell(id, created, service.ModelName, "in_progress") });
                await Event("response.in_progress", new { response = ResponseShell(id, created, service.ModelName, "in_progress") });
            }
            async Task Answer(string piece)
            {
                if ((gate is null ? piece : gate.Accept(piece)) is { Length: > 0 } text) await Text(text);
                foreach (var delta in calling?.Accept(piece) ?? [])
                {
                    if (!request.ParallelToolCalls && delta.Index > 0) continue; // only the first call is answered
                    if (delta.Id is not null)
                    {
                        callIndex.Add(nextIndex++);
                        await Event("response.output_item.added", new { output_index = callIndex[^1], item = (object)new ResponseCall(CallItemId(delta.Id), "in_progress", delta.Id, delta.Name!, "") });
                    }
                    else await Event("response.function_call_arguments.delta", new { item_id = CallItemId(calling!.Calls.ElementAt(delta.Index).Id), output_index = callIndex[delta.Index], delta = delta.Arguments });
                }
            }
            async Task Piece(string piece, bool final = false)
            {
                if (thinking is null)
                {
                    await Answer(piece);
                    return;
                }
                var (reasoning, answer) = final ? thinking.Finish() : thinking.Accept(piece);
                if (reasoning.Length > 0) await Reasoning(reasoning);
                if (answer.Length > 0) await Answer(answer);
            }
            await foreach (var piece in pieces.Reader.ReadAllAsync(context.RequestAborted))
            {
                await Announce();
                await Piece(piece);
            }
            var done = await work;
            await Announce();
            await Piece("", final: true);
            // The calls streamed keep the ids they went out with.
            var streamed = calling?.Calls.ToList() ?? [];
            if (done.ToolCalls is { } parsed)
                done = done with { ToolCalls = [.. parsed.Select((c, i) => i < streamed.Count ? c with { Id = streamed[i].Id } : c)] };
            // The rest of a held reply that turned out to be text (unless it began a call that was cut off).
            else if (gate is not null && streamed.Count == 0 && gate.Rest() is { Length: > 0 } rest) await Text(rest);
            if (store) responses.Put(id, [.. conversation, Reply(done)]);
            var final = ResponseObject(id, messageId, created, service.ModelName, done, split ? reasoningId : null);
            int call = 0;
            foreach (var item in final.Output)
            {
                if (item is ResponseReasoning thought)
                {
                    if (reasoningIndex < 0) await Reasoning(""); // a block with nothing in it still opens its item
                    await Event("response.reasoning_text.done", new { item_id = reasoningId, output_index = reasoningIndex, content_index = 0, text = thought.Content[0].Text });
                    await Event("response.output_item.done", new { output_index = reasoningIndex, item });
                    continue;
                }
                if (item is ResponseMessage message)
                {
                    await OpenMessage();
                    await Event("response.output_text.done", new { item_id = messageId, output_index = messageIndex, content_index = 0, text = message.Content[0].Text });
                    await Event("response.content_part.done", new { item_id = messageId, output_index = messageIndex, content_index = 0, part = message.Content[0] });
                    await Event("response.output_item.done", new { output_index = messageIndex, item });
                    continue;
                }
                var function = (ResponseCall)item;
                int index = call < callIndex.Count ? callIndex[call] : nextIndex++;
                if (call++ >= callIndex.Count) await Event("response.output_item.added", new { output_index = index, item = (object)(function with { Status = "in_progress" }) });
                await Event("response.function_call_arguments.done", new { item_id = function.Id, output_index = index, arguments = function.Arguments });
                await Event("response.output_item.done", new { output_index = index, item });
            }
            await Event(final.Status == "incomplete" ? "response.incomplete" : "response.completed", new { response = final });
        }
        catch (Exception e) when (!events.Started && e is InvalidOptionException or ServiceBusyException)
        {
            await Refuse(context, e);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // the client went away
        }
        catch (Exception e) when (events.Started)
        {
            // After the stream opened: the API's failure event, then the end (a request that cannot be followed — a
            // grammar too costly — is the prompt's fault, anything else the server's).
            await Event("response.failed", new { response = ResponseShell(id, created, service.ModelName, "failed") with
            {
                Error = new { code = e is NanoscaleException and not InvalidOptionException ? "invalid_prompt" : "server_error", message = e.Message },
            } });
        }
    }

    /// <summary>A reply as the conversation's next turn: the assistant's text, or its calls.</summary>
    private static ChatMessage Reply(CompletionOutcome outcome) => outcome.ToolCalls is { } calls
        ? new ChatMessage("assistant", outcome.Text.Length > 0 ? outcome.Text : null) { ToolCalls = calls }
        : new ChatMessage("assistant", outcome.Text);

    /// <summary>An output item: a message or a function call.</summary>
    private abstract record ResponseItem(string Id, string Type, string Status);

    private sealed record ResponseText(string Type, string Text, object[] Annotations);

    private sealed record ResponseMessage(string Id, string Status, string Role, ResponseText[] Content) : ResponseItem(Id, "message", Status);

    private sealed record ResponseCall(string Id, string Status, string CallId, string Name, string Arguments) : ResponseItem(Id, "function_call", Status);

    private sealed record ReasoningText(string Type, string Text);

    /// <summary>A thinking model's reasoning block (what chat answers as <c>reasoning_content</c>): its text as
    /// <c>reasoning_text</c> content, no summary.</summary>
    private sealed record ResponseReasoning(string Id, string Status, object[] Summary, ReasoningText[] Content) : ResponseItem(Id, "reasoning", Status);

    /// <summary>The response object; <see cref="Output"/> holds <see cref="ResponseItem"/>s, typed as objects so each is
    /// written with its own fields.</summary>
    private sealed record ResponseBody(string Id, string Object, long CreatedAt, string Status, string Model, object? IncompleteDetails,
        object[] Output, object? Usage)
    {
        /// <summary>What failed, for a failed response (null otherwise).</summary>
        public object? Error { get; init; }
    }

    private static ResponseBody ResponseShell(string id, long created, string model, string status) =>
        new(id, "response", created, status, model, null, [], null);

    /// <summary>A function_call item's id for a call id (<c>call_…</c> → <c>fc_…</c>).</summary>
    private static string CallItemId(string callId) => "fc_" + (callId.StartsWith("call_", StringComparison.Ordinal) ? callId["call_".Length..] : callId);

    /// <summary>The response object for an outcome: its reasoning block as a reasoning item (with
    /// <paramref name="reasoningId"/>, a thinking template's reply), its text as a message, its calls as function_call items.</summary>
    private static ResponseBody ResponseObject(string id, string messageId, long created, string model, CompletionOutcome o, string? reasoningId = null)
    {
        var output = new List<ResponseItem>();
        var text = o.Text;
        if (reasoningId is not null)
        {
            var (reasoning, answer) = ReasoningStream.Split(o.Text, o.StartsInReasoning);
            if (reasoning is not null)
            {
                output.Add(new ResponseReasoning(reasoningId, "completed", [], [new ReasoningText("reasoning_text", reasoning)]));
                text = answer;
            }
        }
        if (text.Length > 0 || o.ToolCalls is null)
            output.Add(new ResponseMessage(messageId, "completed", "assistant", [new ResponseText("output_text", text, [])]));
        foreach (var call in o.ToolCalls ?? [])
            output.Add(new ResponseCall(CallItemId(call.Id), "completed", call.Id, call.Name, call.Arguments));
        bool cut = o.FinishReason == "length";
        return new ResponseBody(id, "response", created, cut ? "incomplete" : "completed", model, cut ? new { reason = "max_output_tokens" } : null, [.. output],
            new { input_tokens = o.PromptTokens, input_tokens_details = new { cached_tokens = o.CachedPromptTokens }, output_tokens = o.CompletionTokens,
                  total_tokens = o.PromptTokens + o.CompletionTokens });
    }

    /// <summary><c>input</c> as chat messages: a string is one user message; items are messages
    /// (<c>{role, content}</c>, content a string or <c>input_text</c>/<c>output_text</c> parts), the model's
    /// <c>function_call</c>s (an assistant turn's calls) and <c>function_call_output</c>s (tool messages).</summary>
    private static IReadOnlyList<ChatMessage> ResponseInput(JsonElement root)
    {
        var messages = new List<ChatMessage>();
        const string Expected = "'input' must be a string or a list of items: {role, content}, function_call, function_call_output";
        switch (Field(root, "input"))
        {
            case { ValueKind: JsonValueKind.String } text:
                messages.Add(new ChatMessage("user", text.GetString()));
                break;
            case { ValueKind: JsonValueKind.Array } items when items.GetArrayLength() > 0:
                foreach (var item in items.EnumerateArray())
                {
                    if (item.ValueKind != JsonValueKind.Object) throw new BadField("input", Expected);
                    switch (Str(item, "type") ?? "message")
                    {
                        case "message":
                            var role = Str(item, "role");
                            if (role is not ("system" or "developer" or "user" or "assistant")) throw new BadField("input", "a message's role is system, developer, user or assistant");
                            string content = Field(item, "content") switch
                            {
                                { ValueKind: JsonValueKind.String } s => s.GetString()!,
                                { ValueKind: JsonValueKind.Array } parts => string.Concat(parts.EnumerateArray().Select(p =>
                                    p.ValueKind == JsonValueKind.Object && Str(p, "type") is "input_text" or "output_text" or "text" && Str(p, "text") is { } t ? t
                                        : throw new BadField("input", "only text content parts are supported"))),
                                _ => throw new BadField("input", "a message needs content: a string or text parts"),
                            };
                            messages.Add(new ChatMessage(role == "developer" ? "system" : role, content));
                            break;
                        case "function_call":
                            var call = new ToolCall(Str(item, "call_id") ?? "", Str(item, "name") ?? throw new BadField("input", "a function_call needs its name"),
                                Str(item, "arguments") ?? "{}");
                            // Calls the model made together are one assistant turn.
                            if (messages.Count > 0 && messages[^1] is { Role: "assistant", Content: null, ToolCalls: { } earlier })
                                messages[^1] = messages[^1] with { ToolCalls = [.. earlier, call] };
                            else messages.Add(new ChatMessage("assistant", null) { ToolCalls = [call] });
                            break;
                        case "reasoning":
                            // An earlier reply's reasoning, sent back as clients keep a conversation: templates leave
                            // earlier reasoning out of the prompt, so it is not given to the template.
                            break;
                        case "function_call_output":
                            messages.Add(new ChatMessage("tool", Str(item, "output") ?? throw new BadField("input", "a function_call_output needs its output"))
                            {
                                ToolCallId = Str(item, "call_id") ?? throw new BadField("input", "a function_call_output needs the call_id it answers"),
                            });
                            break;
                        default:
                            throw new BadField("input", Expected);
                    }
                }
                break;
            default:
                throw new BadField("input", Expected);
        }
        return messages;
    }

    /// <summary>This API's flat function tools (<c>{"type": "function", "name", "description", "parameters"}</c>) in
    /// chat's shape, for the template; none when absent, empty, or <c>tool_choice</c> is <c>none</c>.</summary>
    private static IReadOnlyList<object>? ResponseTools(JsonElement root)
    {
        if (Field(root, "tools") is not { } tools) return null;
        if (tools.ValueKind != JsonValueKind.Array || tools.GetArrayLength() > 128) throw new BadField("tools", "'tools' must be a list of at most 128 functions");
        var list = new List<object>();
        foreach (var tool in tools.EnumerateArray())
        {
            if (tool.ValueKind != JsonValueKind.Object || Str(tool, "type") != "function" || Str(tool, "name") is not { Length: > 0 } name)
                throw new BadField("tools", "each tool must be {\"type\": \"function\", \"name\": …, \"parameters\": …} (other tool types are not supported)");
            var function = new Dictionary<string, object?> { ["name"] = name };
            if (Field(tool, "description") is { } description) function["description"] = description.Clone();
            if (Field(tool, "parameters") is { } parameters) function["parameters"] = parameters.Clone();
            list.Add(JsonSerializer.SerializeToElement(new Dictionary<string, object?> { ["type"] = "function", ["function"] = function }));
        }
        if (Field(root, "tool_choice") is { ValueKind: JsonValueKind.String } choice && choice.GetString() == "none" || list.Count == 0) return null;
        return list;
    }

    /// <summary><c>tool_choice</c>: <c>auto</c>/<c>none</c> (null), <c>required</c>, or <c>{"type": "function", "name"}</c>.</summary>
    /// <summary><c>reasoning.effort</c>: the chat template's <c>reasoning_effort</c> variable, as chat's
    /// <c>reasoning_effort</c> (<see cref="ReasoningEffort"/>); <c>reasoning.summary</c> is accepted and no summary is
    /// written.</summary>
    private static string? ResponseReasoningEffort(JsonElement root)
    {
        if (Field(root, "reasoning") is not { } reasoning) return null;
        if (reasoning.ValueKind != JsonValueKind.Object) throw new BadField("reasoning", "'reasoning' must be an object such as {\"effort\": \"low\"}");
        return Field(reasoning, "effort") switch
        {
            null => null,
            { ValueKind: JsonValueKind.String } e => Effort(e.GetString(), "reasoning", "reasoning.effort"),
            _ => throw new BadField("reasoning", $"'reasoning.effort' must be one of {string.Join(", ", ReasoningEfforts)}"),
        };
    }

    private static string? ResponseToolChoice(JsonElement root) => Field(root, "tool_choice") switch
    {
        null => null,
        { ValueKind: JsonValueKind.String } word => word.GetString() switch
        {
            "auto" or "none" => null,
            "required" => CompletionRequest.AnyTool,
            _ => throw new BadField("tool_choice", "'tool_choice' may be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": …}"),
        },
        { ValueKind: JsonValueKind.Object } named when Str(named, "type") == "function" && Str(named, "name") is { Length: > 0 } name => name,
        _ => throw new BadField("tool_choice", "'tool_choice' may be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": …}"),
    };

    /// <summary><c>text.format</c>: <c>text</c> (null), <c>json_object</c>, or <c>{"type": "json_schema", "name", "schema"}</c>.</summary>
    private static JsonSchema? ResponseFormat(JsonElement root)
    {
        if (Field(root, "text") is not { } text) return null;
        if (text.ValueKind != JsonValueKind.Object) throw new BadField("text", "'text' must be an object with a 'format'");
        return Field(text, "format") is { } format ? ReplyFormat(format, "text", "text.format", schemaNested: false) : null;
    }
}
