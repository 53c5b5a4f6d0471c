using System.Diagnostics;
using Nanoscale.Pipeline;

namespace Nanoscale.Benchmarks;

/// <summary>
/// What rendering a chat template costs a request: the template of the model folder (or tokenizer folder) given, over
/// conversations of 2 to 64 turns, parsed once (as <c>serve</c> does at startup) and rendered per request.
/// <code>dotnet bench/Nanoscale.Benchmarks/bin/Release/net10.0/Nanoscale.Benchmarks.dll chat-template FOLDER</code>
/// </summary>
internal static class ChatTemplateBenchmark
{
    public static int Run(string[] args)
    {
        var folder = args.Length > 0 ? args[0] : throw new ArgumentException("chat-template FOLDER (with tokenizer_config.json or chat_template.jinja)");
        var clock = Stopwatch.StartNew();
        var template = ChatTemplate.Find(folder);
        Console.WriteLine($"{template.Name}: parsed in {clock.Elapsed.TotalMilliseconds:0.00} ms (first, with the engine's own start-up)");
        foreach (int turns in (int[])[2, 8, 64])
        {
            ChatMessage[] conversation = [("system", "You are a helpful assistant."),
                .. Enumerable.Range(0, turns).Select(i => (ChatMessage)(i % 2 == 0 ? "user" : "assistant", $"Message {i}: " + new string('x', 200)))];
            int length = 0;
            for (int warm = 0; warm < 200; warm++) length = template.Render(conversation).Length;
            int calls = Math.Max(200, 20000 / turns);
            clock.Restart();
            for (int i = 0; i < calls; i++) template.Render(conversation);
            Console.WriteLine($"{turns,3} turns ({length} characters): {clock.Elapsed.TotalMilliseconds * 1000 / calls:0.0} us a render");
        }
        return 0;
    }
}
