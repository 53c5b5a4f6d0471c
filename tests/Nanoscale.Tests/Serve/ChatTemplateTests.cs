using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Serve;

/// <summary>The real templates of Llama-3 and Qwen2.5 (their <c>tokenizer_config.json</c>) render a conversation as
/// those templates do with the generation prompt added; where a template is found, and what a broken or refusing
/// template does.</summary>
public class ChatTemplateTests
{
    private static readonly ChatMessage[] Conversation = [("system", "Be brief."), ("user", " Hi! "), ("assistant", "Hello."), ("user", "Bye")];

    private static string Written(string name) =>
        Path.Combine(Architecture.ArchitectureRules.RepositoryRoot(), "tests", "Nanoscale.Tests", "Serve", "ChatTemplates", name);

    [Fact]
    public void Llama3()
    {
        var template = ChatTemplate.Find(SharedData.Path("tokenizers", "llama3"));
        Assert.Equal("tokenizer_config.json", template.Name);
        Assert.False(template.IsPlain);
        Assert.Contains("<|eot_id|>", template.TurnEndings);
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n", template.Render(Conversation));
    }

    [Fact]
    public void Qwen25WithAndWithoutASystemMessage()
    {
        var template = ChatTemplate.Find(SharedData.Path("tokenizers", "qwen2_5"));
        Assert.Contains("<|im_end|>", template.TurnEndings);
        Assert.Equal(
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi! <|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n" +
            "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n", template.Render(Conversation));
        Assert.Equal(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
            "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n", template.Render([("user", "Bye")]));
    }

    [Fact]
    public void WithoutATemplateThePlainRendering()
    {
        var template = ChatTemplate.Find(SharedData.Path("tokenizers", "gpt2"));
        Assert.True(template.IsPlain);
        Assert.Equal("plain", template.Name);
        Assert.Equal("user: Bye\nassistant:", template.Render([("user", "Bye")]));
    }

    [Fact]
    public void ChatTemplateJinjaWinsAndSpecialTokensComeFromTheConfig()
    {
        // transformers saves the template beside the tokenizer as chat_template.jinja; bos_token may be an AddedToken object.
        using var dir = new TempDir();
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer_config.json"),
            """{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>", "chat_template": "ignored {{ messages }}"}""");
        File.WriteAllText(Path.Combine(dir.Path, "chat_template.jinja"), "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}");
        var template = ChatTemplate.Find(dir.Path);
        Assert.Equal("chat_template.jinja", template.Name);
        Assert.Equal("<s>[user] Hi</s>", template.Render([("user", "Hi")]));
        Assert.Contains("</s>", template.TurnEndings);
    }

    [Fact]
    public void NamedTemplatesTakeTheDefault()
    {
        using var dir = new TempDir();
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer_config.json"),
            """{"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ messages[0].content }}!"}]}""");
        Assert.Equal("Hi!", ChatTemplate.Find(dir.Path).Render([("user", "Hi")]));
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer_config.json"), """{"chat_template": [{"name": "tool_use", "template": "tools"}]}""");
        var e = Assert.Throws<CheckpointFormatException>(() => ChatTemplate.Find(dir.Path));
        Assert.Contains("'default'", e.Message);
    }

    [Fact]
    public void ATemplateOutsideTheSubsetNamesTheFileAndPlace()
    {
        using var dir = new TempDir();
        File.WriteAllText(Path.Combine(dir.Path, "tokenizer_config.json"), """{"chat_template": "{% for m in messages %}\n{% include 'x' %}{% endfor %}"}""");
        var e = Assert.Throws<CheckpointFormatException>(() => ChatTemplate.Find(dir.Path));
        Assert.Contains("tokenizer_config.json", e.Message);
        Assert.Contains("chat_template", e.Message);
        Assert.Contains("'include' is not a statement", e.Message);
        Assert.Contains("line 2, column 4", e.Message);
    }

    [Fact]
    public void ARefusalIsTheTemplatesOwnMessage()
    {
        var template = ChatTemplate.FromFile(Written("dated-header.jinja"), SharedData.Path("tokenizers", "llama3"));
        var e = Assert.Throws<InvalidOptionException>(() => template.Render([("user", "Q"), ("critic", "no")]));
        Assert.Equal("messages", e.Option);
        Assert.Contains("Unsupported role: critic", e.Message);
        // The llama3 folder's bos_token reaches the file's template; strftime_now reads the clock given.
        Assert.StartsWith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 05 Dec 2026",
            template.Render([("user", "Q")], now: () => new DateTime(2026, 12, 5)));
    }

    /// <summary>A tool conversation in the API's shape (calls with JSON-text arguments, tool results with their call ids,
    /// tools as JSON) renders through Qwen2.5's real template exactly as Jinja2 renders the same conversation in
    /// Hugging Face's shape (golden.json's <c>tool-use</c> case).</summary>
    [Fact]
    public void ToolConversationsRenderAsJinja2RendersThem()
    {
        var golden = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(Written("golden.json"))).RootElement.EnumerateArray()
            .Single(c => c.GetProperty("template").GetString() == "shared:qwen2_5" && c.GetProperty("conversation").GetString() == "tool-use"
                && c.GetProperty("variables").GetProperty("tools").ValueKind == System.Text.Json.JsonValueKind.Array);
        var tool = golden.GetProperty("variables").GetProperty("tools")[0].Clone();
        ChatMessage[] conversation =
        [
            ("system", "Use tools."), ("user", "Weather in Paris and Rome?"),
            new ChatMessage("assistant", null)
            {
                ToolCalls = [new ToolCall("call_1", "get_weather", """{"city": "Paris"}"""), new ToolCall("call_2", "get_weather", """{"city":"Rome","days":2}""")],
            },
            new ChatMessage("tool", """{"temp": 21}""") { ToolCallId = "call_1" }, new ChatMessage("tool", "sunny, 25°") { ToolCallId = "call_2" },
            ("assistant", "Paris 21, Rome 25."), ("user", "Thanks"),
        ];
        var template = ChatTemplate.Find(SharedData.Path("tokenizers", "qwen2_5"));
        Assert.Equal(golden.GetProperty("expected").GetString(), template.Render(conversation, tools: [tool]));
    }

    /// <summary>A template that writes a call's arguments by string concatenation (as DeepSeek-R1's distills do:
    /// <c>'```json\n' + arguments</c>), which Jinja2 refuses for parsed arguments, gets them as their JSON text and
    /// renders; a template that reads them as an object still gets them parsed.</summary>
    [Fact]
    public void ArgumentsAreTextForTemplatesThatConcatenateThem()
    {
        using var dir = new TempDir();
        ChatMessage[] conversation =
        [
            ("user", "Weather in Paris?"),
            new ChatMessage("assistant", null) { ToolCalls = [new ToolCall("call_1", "get_weather", """{"city": "Paris"}""")] },
            new ChatMessage("tool", "sunny") { ToolCallId = "call_1" },
        ];
        var concatenating = dir.File("concat.jinja");
        File.WriteAllText(concatenating, "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ 'CALL ' + c.function.name + '\\n```json\\n' + c.function.arguments + '\\n```' }}{% endfor %}" +
            "{% if m.content %}[{{ m.role }}] {{ m.content }}\n{% endif %}{% endfor %}");
        var template = ChatTemplate.FromFile(concatenating, null);
        var expected = "[user] Weather in Paris?\nCALL get_weather\n```json\n{\"city\": \"Paris\"}\n```[tool] sunny\n";
        Assert.Equal(expected, template.Render(conversation));
        Assert.Equal(expected, template.Render(conversation)); // the template now takes text at once
        var reading = dir.File("read.jinja");
        File.WriteAllText(reading, "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.arguments.city }}{% endfor %}{% endfor %}");
        Assert.Equal("Paris", ChatTemplate.FromFile(reading, null).Render(conversation));
    }

    /// <summary><c>--chat-template</c> also takes another model's <c>tokenizer_config.json</c>: its <c>chat_template</c>,
    /// rendered as that folder's own template renders; the model folder's special tokens win, the file's own serve a
    /// model without them; a JSON file without a template is refused by name.</summary>
    [Fact]
    public void AJsonFileGivesItsChatTemplate()
    {
        var qwen = SharedData.Path("tokenizers", "qwen2_5");
        var fromJson = ChatTemplate.FromFile(Path.Combine(qwen, "tokenizer_config.json"), null);
        ChatMessage[] chat = [("system", "Be brief."), ("user", "Hi")];
        Assert.Equal(ChatTemplate.Find(qwen).Render(chat), fromJson.Render(chat));
        var llama = ChatTemplate.FromFile(Path.Combine(SharedData.Path("tokenizers", "llama3"), "tokenizer_config.json"), null);
        Assert.StartsWith("<|begin_of_text|>", llama.Render(chat)); // the file's own bos_token
        using var dir = new TempDir();
        var empty = Path.Combine(dir.Path, "config.json");
        File.WriteAllText(empty, """{"bos_token": "<s>"}""");
        var e = Assert.Throws<CheckpointFormatException>(() => ChatTemplate.FromFile(empty, null));
        Assert.Contains("config.json", e.Message);
        Assert.Contains("no chat template", e.Message);
    }

    /// <summary>Whether the reply begins inside a reasoning block is read from what the generation prompt adds: an
    /// opened <c>&lt;think&gt;</c> (DeepSeek-R1's way) yes; Qwen3's closed empty block, a template that never opens one,
    /// and a user's own "&lt;think&gt;" no.</summary>
    [Fact]
    public void ATemplateThatOpensTheBlockInThePromptIsSeen()
    {
        using var dir = new TempDir();
        var r1 = Path.Combine(dir.Path, "r1.jinja");
        File.WriteAllText(r1, "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}");
        ChatMessage[] chat = [("user", "Is 7 prime?")];
        Assert.True(ChatTemplate.FromFile(r1, null).OpensReasoning(chat));
        Assert.False(ChatTemplate.FromFile(r1, null).OpensReasoning(chat, new Dictionary<string, object?> { ["add_generation_prompt"] = false }));
        var qwen3 = ChatTemplate.FromFile(Written("reasoning-chatml.jinja"), null);
        Assert.True(qwen3.Thinks);
        Assert.False(qwen3.OpensReasoning(chat));
        Assert.False(qwen3.OpensReasoning(chat, new Dictionary<string, object?> { ["enable_thinking"] = false }));
        Assert.False(qwen3.OpensReasoning([("user", "What does <think> mean?")]));
        Assert.False(ChatTemplate.Find(SharedData.Path("tokenizers", "qwen2_5")).OpensReasoning(chat)); // no reasoning at all
    }

    [Fact]
    public void RequestArgumentsReachTheTemplate()
    {
        var template = ChatTemplate.FromFile(Written("reasoning-chatml.jinja"), null);
        Assert.EndsWith("<|im_start|>assistant\n", template.Render([("user", "Q")]));
        Assert.EndsWith("<|im_start|>assistant\n<think>\n\n</think>\n\n",
            template.Render([("user", "Q")], new Dictionary<string, object?> { ["enable_thinking"] = false }));
        // messages cannot be replaced by an argument.
        Assert.Contains("Q", template.Render([("user", "Q")], new Dictionary<string, object?> { ["messages"] = new List<object?>() }));
    }
}
