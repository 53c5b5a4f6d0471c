using Nanoscale.Pipeline;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Serve;

/// <summary>The real templates of Llama-3 and Qwen2.5 (their <c>tokenizer_config.json</c>) render a conversation as
/// those templates do with the generation prompt added.</summary>
public class ChatTemplateTests
{
    private static readonly (string, string)[] Conversation = [("system", "Be brief."), ("user", " Hi! "), ("assistant", "Hello."), ("user", "Bye")];

    [Fact]
    public void Llama3()
    {
        var template = ChatTemplate.Find(SharedData.Path("tokenizers", "llama3"));
        Assert.Equal(ChatTemplate.Family.Llama3, template.Kind);
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
        Assert.Equal(ChatTemplate.Family.ChatMl, template.Kind);
        Assert.Equal("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", template.DefaultSystem);
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
        Assert.Equal(ChatTemplate.Family.Plain, template.Kind);
        Assert.Equal("user: Bye\nassistant:", template.Render([("user", "Bye")]));
    }
}
