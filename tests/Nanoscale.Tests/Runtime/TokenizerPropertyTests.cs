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

    /// <summary>The token factory decodes its running sequences' text on every core at once: a tokenizer answers the
    /// same from two threads together as from one (every tokenizer kind in ../shared/data).</summary>
    [Theory]
    [InlineData("tokenizers/gpt2")]
    [InlineData("tokenizers/qwen2_5")]
    [InlineData("tokenizers/llama2")]
    [InlineData("models/stories260K/tok512.bin")]
    public void DecodingOnTwoThreadsAtOnceAnswersAsOneThreadDoes(string path)
    {
        var tokenizer = TokenizerLoader.Open(SharedData.Path(path.Split('/')));
        var random = new Random(8);
        var windows = Enumerable.Range(0, 4000).Select(_ => Enumerable.Range(0, random.Next(1, 8)).Select(_ => random.Next(tokenizer.VocabSize)).ToArray()).ToArray();
        var alone = windows.Select(w => tokenizer.Decode(w)).ToArray();
        var together = new string[windows.Length];
        Parallel.For(0, windows.Length, new ParallelOptions { MaxDegreeOfParallelism = 2 }, i => together[i] = tokenizer.Decode(windows[i]));
        Assert.Equal(alone, together);
    }
}
