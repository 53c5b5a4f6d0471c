using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Nanoscale.Cli.Serve;

/// <summary>
/// A response as server-sent events, the one writer of the streaming routes (chat and text completions, the Responses
/// API, llama.cpp's <c>/completion</c>): the event-stream headers go out with the first event, so a request refused
/// before it still gets its error status (<see cref="Started"/> tells which), and every event is flushed at once.
/// </summary>
internal sealed class EventStream(HttpContext context, JsonSerializerOptions json)
{
    /// <summary>Whether an event went out (the status and headers are sent).</summary>
    public bool Started { get; private set; }

    /// <summary>A <c>data:</c> event of <paramref name="payload"/> as JSON.</summary>
    public Task Send(object payload) => Write("data: " + JsonSerializer.Serialize(payload, json) + "\n\n");

    /// <summary>Raw event text (an <c>event:</c> line and its data, or <c>data: [DONE]</c>), ending with a blank line.</summary>
    public async Task Write(string text)
    {
        if (!Started)
        {
            context.Response.ContentType = "text/event-stream";
            context.Response.Headers.CacheControl = "no-cache";
            Started = true;
        }
        await context.Response.WriteAsync(text, context.RequestAborted);
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }
}
