using Nanoscale.Pipeline;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Serve;

/// <summary>Calls are found only where a reply spells them out, in one of the models' forms (Hermes/Qwen's tags and their
/// XML bodies, Mistral's, Phi's and Granite's markers, MiniMax's invokes, Llama 3.x's JSON).</summary>
public class ToolCallParserTests
{
    [Fact]
    public void HermesBlocksWithTextBefore()
    {
        var parsed = ToolCallParser.Parse("Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n" +
                                          "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>")!.Value;
        Assert.Equal("Let me check.", parsed.Content);
        Assert.Equal(["get_weather", "get_time"], parsed.Calls.Select(c => c.Name));
        Assert.Equal("{\"city\": \"Paris\"}", parsed.Calls[0].Arguments);
        Assert.Equal("{}", parsed.Calls[1].Arguments);
        Assert.All(parsed.Calls, c => Assert.Matches("^call_[0-9a-f]{24}$", c.Id));
        Assert.NotEqual(parsed.Calls[0].Id, parsed.Calls[1].Id);
    }

    [Fact]
    public void AnUnclosedLastBlockCountsWhenItsJsonIsWhole()
    {
        var parsed = ToolCallParser.Parse("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}\n")!.Value;
        Assert.Null(parsed.Content);
        Assert.Equal("{\"x\": 1}", Assert.Single(parsed.Calls).Arguments);
        Assert.Null(ToolCallParser.Parse("<tool_call>\n{\"name\": \"f\", \"argum"));
    }

    [Theory]
    [InlineData("{\"name\": \"f\", \"parameters\": {\"a\": \"b\"}}", "{\"a\": \"b\"}")]
    [InlineData("<|python_tag|>{\"name\": \"f\", \"parameters\": {}}", "{}")]
    [InlineData("  {\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}  ", "{\"a\": 1}")]
    public void Llama3JsonReplies(string reply, string arguments)
    {
        var parsed = ToolCallParser.Parse(reply)!.Value;
        Assert.Null(parsed.Content);
        var call = Assert.Single(parsed.Calls);
        Assert.Equal(("f", arguments), (call.Name, call.Arguments));
    }

    /// <summary>The offered function, whose parameter types decide how the XML forms' values are read.</summary>
    private static readonly System.Text.Json.JsonElement[] Weather =
    [
        System.Text.Json.JsonDocument.Parse("""
            {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
             "code": {"type": "string"}, "units": {"type": "object"}}}}
            """).RootElement,
    ];

    /// <summary>Every form read: the calls' names and their arguments as JSON text (string parameters stay strings
    /// even when they look like numbers; untyped values are JSON when they spell it).</summary>
    [Theory]
    [InlineData("Sure.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n</parameter>\n<parameter=code>\n075\n</parameter>\n</function>\n</tool_call>",
        "Sure.", "get_weather {\"city\": \"Paris\", \"days\": 2, \"code\": \"075\"}")]
    [InlineData("<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>New York</arg_value>\n<arg_key>units</arg_key>\n<arg_value>{\"t\": \"C\"}</arg_value>\n</tool_call>",
        null, "get_weather {\"city\": \"New York\", \"units\": {\"t\": \"C\"}}")]
    [InlineData("[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abcdefghi\"}, {\"name\": \"get_time\", \"arguments\": {}}]",
        null, "get_weather {\"city\": \"Paris\"}|get_time {}")]
    [InlineData("Checking.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Rome\"}[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{}",
        "Checking.", "get_weather {\"city\": \"Rome\"}|get_time {}")]
    [InlineData("<|tool_call|>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}<|/tool_call|><|tool_call|>{\"name\": \"get_time\", \"arguments\": {}}<|/tool_call|>",
        null, "get_weather {\"city\": \"Oslo\"}|get_time {}")]
    [InlineData("<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lima\"}}]", null, "get_weather {\"city\": \"Lima\"}")]
    [InlineData("Let me look.\n<minimax:tool_call>\n<invoke name=\"get_weather\">\n<parameter name=\"city\">Kyiv</parameter>\n<parameter name=\"days\">3</parameter>\n</invoke>\n<invoke name=\"get_time\">\n</invoke>\n</minimax:tool_call>",
        "Let me look.", "get_weather {\"city\": \"Kyiv\", \"days\": 3}|get_time {}")]
    [InlineData("<tool_call>\n<function=lookup>\n<parameter=q>\ntrue\n</parameter>\n<parameter=note>\nhello world\n</parameter>\n</function>\n</tool_call>",
        null, "lookup {\"q\": true, \"note\": \"hello world\"}")]
    [InlineData("Let me see.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        "Let me see.", "get_weather {\"city\": \"Paris\"}|get_time {}")]
    [InlineData("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Rome\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        null, "get_weather {\"city\": \"Rome\"}")]
    [InlineData("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\": \"Oslo\"}<|tool_call_end|><|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>",
        null, "get_weather {\"city\": \"Oslo\"}|get_time {}")]
    [InlineData("I will look it up.<|START_ACTION|>[{\"tool_call_id\": \"0\", \"tool_name\": \"get_weather\", \"parameters\": {\"city\": \"Lima\"}}]<|END_ACTION|>",
        "I will look it up.", "get_weather {\"city\": \"Lima\"}")]
    public void EveryModelsForm(string reply, string? content, string calls)
    {
        var parsed = ToolCallParser.Parse(reply, Weather)!.Value;
        Assert.Equal(content, parsed.Content);
        Assert.Equal(calls, string.Join("|", parsed.Calls.Select(c => c.Name + " " + c.Arguments)));
        Assert.All(parsed.Calls, c => System.Text.Json.JsonDocument.Parse(c.Arguments).Dispose());
    }

    [Theory]
    [InlineData("The weather is fine.")]
    [InlineData("[TOOL_CALLS] not a list")]
    [InlineData("[TOOL_CALLS]get_weather{\"city\": \"Rome\"}")]
    [InlineData("[TOOL_CALLS]get_weather[ARGS]{\"city\": ")]
    [InlineData("<tool_call>\n<function=f>\n<parameter=x>\n1\n</function>")]
    [InlineData("<tool_call>get weather now\n</tool_call>")]
    [InlineData("<|tool_call|>[1, 2]")]
    [InlineData("<minimax:tool_call><invoke name=\"f\"><parameter name=\"x\">1</minimax:tool_call>")]
    [InlineData("<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather{\"city\": \"Paris\"}<｜tool▁call▁end｜>")]
    [InlineData("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>not json<|tool_call_end|>")]
    [InlineData("{\"city\": \"Paris\"}")]
    [InlineData("{\"name\": 3}")]
    [InlineData("{\"name\": \"f\"} and more")]
    [InlineData("<tool_call>not json</tool_call>")]
    [InlineData("<tool_call>{\"name\": \"f\", \"arguments\": 5}</tool_call>")]
    [InlineData("")]
    public void AnythingElseIsText(string reply) => Assert.Null(ToolCallParser.Parse(reply));
}

/// <summary>Streaming with tools: text goes out as it comes until it may start a call, and what went out is the content
/// the parser keeps.</summary>
public class ToolCallStreamTests
{
    private static (string Sent, string Held) Run(params string[] pieces)
    {
        var stream = new Nanoscale.Cli.Serve.ToolCallStream();
        var sent = string.Concat(pieces.Select(stream.Accept));
        return (sent, stream.Rest());
    }

    [Fact]
    public void TextBeforeACallGoesOutAndIsTheParsersContent()
    {
        string[] pieces = [" Let", " me ", "check.\n<tool", "_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>"];
        var stream = new Nanoscale.Cli.Serve.ToolCallStream();
        Assert.Equal([" Let", " me", " check.", ""], pieces.Select(stream.Accept));
        Assert.Equal(" Let me check.", ToolCallParser.Parse(string.Concat(pieces))!.Value.Content);
    }

    /// <summary>Mistral's marker (kept in the text, <see cref="Nanoscale.Runtime.MarkerKeepingTokenizer"/>) holds the rest of
    /// the reply as Hermes' tag does, split across pieces too.</summary>
    [Fact]
    public void AMistralMarkerHoldsTheCallsBack()
    {
        string[] pieces = ["Checking", " now.", "[TOOL", "_CALLS]get_weather[ARGS]{\"city\": \"Rome\"}"];
        var stream = new Nanoscale.Cli.Serve.ToolCallStream();
        Assert.Equal(["Checking", " now.", "", ""], pieces.Select(stream.Accept));
        Assert.Equal("Checking now.", ToolCallParser.Parse(string.Concat(pieces))!.Value.Content);
        Assert.Equal("", Run("[TOOL_CALLS]f[ARGS]{}").Sent);
    }

    [Fact]
    public void PlainTextGoesOutWholeAcrossPiecesAndRest()
    {
        var (sent, rest) = Run("Hello", " world", " <too", "ling> ok ", "\n");
        Assert.Equal("Hello world <tooling> ok \n", sent + rest);
        Assert.Equal("Hello world <tooling> ok", sent);
    }

    [Theory]
    [InlineData("{\"name\": \"f\", ", "\"parameters\": {}}")]
    [InlineData("<|python", "_tag|>{\"name\": \"f\"}")]
    [InlineData("  <tool_", "call>{}")]
    [InlineData("  ", "  ")]
    public void WhatMayBeACallIsHeldToTheEnd(string first, string second)
    {
        var (sent, rest) = Run(first, second);
        Assert.Equal("", sent);
        Assert.Equal(first + second, rest);
    }
}

/// <summary>Thinking replies split into reasoning and answer, whole or piece by piece, with the same result.</summary>
public class ReasoningStreamTests
{
    [Fact]
    public void PiecesSplitAsTheWholeReply()
    {
        string[] pieces = ["<th", "ink>\nplan", " A</thi", "nk>\n", "\nAns", "wer </", "think> here"];
        var stream = new Nanoscale.Cli.Serve.ReasoningStream();
        var parts = pieces.Select(stream.Accept).ToList();
        parts.Add(stream.Finish());
        Assert.Equal("\nplan A", string.Concat(parts.Select(p => p.Reasoning)));
        Assert.Equal("Answer </think> here", string.Concat(parts.Select(p => p.Answer)));
        Assert.Equal(("", ""), parts[0]); // "<th" could open the block: held
        Assert.Equal(("\nplan A", "Answer </think> here"), Nanoscale.Cli.Serve.ReasoningStream.Split(string.Concat(pieces)));
    }

    [Theory]
    [InlineData("Hello there", null, "Hello there")]
    [InlineData("  <think>cut off", "cut off", "")]
    [InlineData("<think></think>\n\nOnly the answer", "", "Only the answer")]
    [InlineData("<thinking>is not a tag", null, "<thinking>is not a tag")]
    public void WholeReplies(string reply, string? reasoning, string answer) =>
        Assert.Equal((reasoning, answer), Nanoscale.Cli.Serve.ReasoningStream.Split(reply));

    /// <summary>A reply to a prompt that opened the block (DeepSeek-R1's template) begins as reasoning, with no opening
    /// tag of its own; piece by piece as whole.</summary>
    [Fact]
    public void AReplyInsideABlockThePromptOpenedIsReasoningFirst()
    {
        string[] pieces = ["Weigh", " it.\n</th", "ink>\n\nYes", "."];
        var stream = new Nanoscale.Cli.Serve.ReasoningStream(insideReasoning: true);
        var parts = pieces.Select(stream.Accept).ToList();
        parts.Add(stream.Finish());
        Assert.Equal(("Weigh", ""), parts[0]);
        Assert.Equal("Weigh it.\n", string.Concat(parts.Select(p => p.Reasoning)));
        Assert.Equal("Yes.", string.Concat(parts.Select(p => p.Answer)));
        Assert.True(stream.Thought);
        Assert.Equal(("Weigh it.\n", "Yes."), Nanoscale.Cli.Serve.ReasoningStream.Split(string.Concat(pieces), insideReasoning: true));
        Assert.Equal(("never closed", ""), Nanoscale.Cli.Serve.ReasoningStream.Split("never closed", insideReasoning: true));
        Assert.Equal(("", "<think>x"), Nanoscale.Cli.Serve.ReasoningStream.Split("</think><think>x", insideReasoning: true));
        var outcome = new CompletionOutcome("plan\n</think>\n\nYes.", 5, 9, "stop") { StartsInReasoning = true };
        var message = System.Text.Json.JsonSerializer.SerializeToElement(Nanoscale.Cli.Serve.OpenAiServer.Response("id", 0, "m", chat: true, [outcome], split: true))
            .GetProperty("choices")[0].GetProperty("message");
        Assert.Equal(("Yes.", "plan\n"), (message.GetProperty("content").GetString(), message.GetProperty("reasoning_content").GetString()));
    }

    [Fact]
    public void TheChatAnswerCarriesReasoningApart()
    {
        var outcome = new CompletionOutcome("<think>\nweigh it\n</think>\n\nYes.", 5, 9, "stop");
        var message = System.Text.Json.JsonSerializer.SerializeToElement(Nanoscale.Cli.Serve.OpenAiServer.Response("id", 0, "m", chat: true, [outcome], split: true))
            .GetProperty("choices")[0].GetProperty("message");
        Assert.Equal(("Yes.", "\nweigh it\n"), (message.GetProperty("content").GetString(), message.GetProperty("reasoning_content").GetString()));
        var plain = System.Text.Json.JsonSerializer.SerializeToElement(Nanoscale.Cli.Serve.OpenAiServer.Response("id", 0, "m", chat: true, [outcome]))
            .GetProperty("choices")[0].GetProperty("message");
        Assert.Equal(outcome.Text, plain.GetProperty("content").GetString());
        Assert.False(plain.TryGetProperty("reasoning_content", out _));
    }
}

/// <summary>Calls streamed as they are written: however the reply is cut into pieces, the deltas give each call's name
/// once and its arguments that add up to exactly what the parser reads; a shape it cannot follow stops it before any
/// call is half sent.</summary>
public class ToolCallDeltasTests
{
    private static (List<Nanoscale.Cli.Serve.ToolCallDeltas.Delta> Deltas, Nanoscale.Cli.Serve.ToolCallDeltas Stream) Run(string reply, int seed)
    {
        var random = new Random(seed);
        var stream = new Nanoscale.Cli.Serve.ToolCallDeltas();
        var deltas = new List<Nanoscale.Cli.Serve.ToolCallDeltas.Delta>();
        for (int at = 0; at < reply.Length;)
        {
            int n = seed == 0 ? 1 : random.Next(1, 8);
            deltas.AddRange(stream.Accept(reply.Substring(at, Math.Min(n, reply.Length - at))));
            at += n;
        }
        return (deltas, stream);
    }

    [Theory]
    [InlineData("Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"n\": [1, {\"x\": \"}]\\\"\"}]}}\n</tool_call>\n<tool_call>{\"name\":\"get_time\",\"arguments\":{}}</tool_call>")]
    [InlineData("<|python_tag|>{\"name\": \"f\", \"parameters\": {\"a\": \"b\"}}")]
    [InlineData("  {\"name\": \"f\",\n \"arguments\" : { } }")]
    [InlineData("<tool_call>\n{\"name\": \"f\", \"arguments\": {\"q\": 1}}\n")]
    public void PiecesOfAnySizeGiveTheParsersCalls(string reply)
    {
        var parsed = ToolCallParser.Parse(reply)!.Value.Calls;
        for (int seed = 0; seed < 20; seed++)
        {
            var (deltas, stream) = Run(reply, seed);
            Assert.False(stream.Diverged);
            Assert.Equal(parsed.Select(c => (c.Name, c.Arguments)), stream.Calls.Select(c => (c.Name, c.Arguments)));
            for (int index = 0; index < parsed.Count; index++)
            {
                var mine = deltas.Where(d => d.Index == index).ToList();
                Assert.Equal(parsed[index].Name, mine[0].Name);
                Assert.Matches("^call_[0-9a-f]{24}$", mine[0].Id);
                Assert.Equal("", mine[0].Arguments);
                Assert.All(mine.Skip(1), d => Assert.Null(d.Id));
                Assert.Equal(parsed[index].Arguments, string.Concat(mine.Select(d => d.Arguments)));
            }
        }
    }

    [Theory]
    [InlineData("Just text, no calls.", false)]
    [InlineData("<tool_call>{\"arguments\": {}, \"name\": \"f\"}</tool_call>", true)]
    [InlineData("{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 1}\"}", true)]
    [InlineData("<tool_call>{\"name\": \"f\\u0041\", \"arguments\": {}}</tool_call>", true)]
    [InlineData("<tool_", false)]
    public void OtherShapesSendNoHalfCall(string reply, bool diverges)
    {
        var (deltas, stream) = Run(reply, 3);
        Assert.Empty(deltas);
        Assert.Equal(diverges, stream.Diverged);
    }
}

/// <summary>Decoding that keeps the tool-call markers a tokenizer holds as special tokens, and only those.</summary>
public class MarkerKeepingTokenizerTests
{
    [Fact]
    public void SpecialMarkersStayInTheTextAndTheRestDecodesAsBefore()
    {
        using var dir = new TempDir();
        var qwen = SharedData.Path("tokenizers", "qwen2_5");
        foreach (var file in Directory.GetFiles(qwen)) File.Copy(file, Path.Combine(dir.Path, Path.GetFileName(file)));
        var tokenizerFile = Path.Combine(dir.Path, "tokenizer.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(tokenizerFile))!;
        json["added_tokens"]!.AsArray().Add(new System.Text.Json.Nodes.JsonObject
        {
            ["id"] = 151665, ["content"] = "[TOOL_CALLS]", ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
        });
        File.WriteAllText(tokenizerFile, json.ToJsonString());
        var plain = Nanoscale.Runtime.TokenizerLoader.Open(dir.Path);
        var keeping = Nanoscale.Runtime.MarkerKeepingTokenizer.For(plain, ToolCallParser.SpecialMarkers);
        var ids = plain.Encode("Sure.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Rome\"}[TOOL_CALLS]", addBos: false);
        Assert.Equal(2, ids.Count(id => id == 151665));
        Assert.Equal("Sure.get_weather[ARGS]{\"city\": \"Rome\"}", plain.Decode(ids)); // [ARGS] is plain text in this tokenizer
        Assert.Equal("Sure.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Rome\"}[TOOL_CALLS]", keeping.Decode(ids));
        Assert.Equal(plain.Decode(ids[..3]), keeping.Decode(ids[..3].Where(id => id != 151665).ToArray()));
        Assert.Equal(ids, keeping.Encode("Sure.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Rome\"}[TOOL_CALLS]", addBos: false));
        // A tokenizer without such special tokens is used as it is.
        var unmodified = Nanoscale.Runtime.TokenizerLoader.Open(qwen);
        Assert.Same(unmodified, Nanoscale.Runtime.MarkerKeepingTokenizer.For(unmodified, ToolCallParser.SpecialMarkers));
    }
}
