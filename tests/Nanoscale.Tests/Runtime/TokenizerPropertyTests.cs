using CsCheck;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// Byte-level BPE tokenizers (GPT-2, Llama-3, Qwen2.5) map every byte to tokens, so decode(encode(text)) = text for any
/// Unicode text, with or without special tokens; every id fits the vocabulary. A failure shrinks to a short string.
/// </summary>
public class TokenizerPropertyTests
{
    private static readonly Gen<string> Text = Gen.Frequency(
        (4, Gen.String[Gen.Char.AlphaNumeric, 0, 40]),
        (3, Gen.String[Gen.Char[' ', '~'], 0, 40]),
        (2, Gen.String[Gen.Char, 0, 20].Where(s => !s.Any(char.IsSurrogate))),
        (1, Gen.Int[0, 4].Select(i => new[] { "héllo wörld", "日本語のテキスト", "emoji 🙂👍🏽", "tabs\tand\nnewlines\r\n", "  leading and trailing  " }[i])));

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama3")]
    [InlineData("qwen2_5")]
    public void DecodeOfEncodeIsTheTextForAnyText(string name)
    {
        var tokenizer = HuggingFaceTokenizer.Load(SharedData.Path("tokenizers", name));
        Text.Sample(text =>
        {
            foreach (bool special in new[] { false, true })
            {
                int[] ids = tokenizer.Encode(text, special);
                string decoded = tokenizer.Decode(ids);
                Assert.True(decoded == text, $"{name}: \"{text}\" decoded as \"{decoded}\" (special tokens {special})");
            }
        }, iter: 300);
    }
}
