using System.Text.Json;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>The streamed text of a generation, decoded a few tokens at a time (<see cref="Generation.TextStream"/>),
/// against one decode of the whole sequence.</summary>
public class TextStreamTests
{
    public static TheoryData<string, string> Sequences => new()
    {
        { "gpt2", "unicode-stress.0" }, { "llama2", "unicode-stress.0" }, { "llama3", "unicode-stress.0" }, { "qwen2_5", "unicode-stress.0" },
        { "gpt2", "tinystories-sample.0" }, { "llama2", "tinystories-sample.1" }, { "llama3", "tinystories-sample.0" }, { "qwen2_5", "tinystories-sample.1" },
    };

    private static (ITokenizer Tokenizer, int[] Ids) Golden(string tokenizer, string text)
    {
        using var golden = JsonDocument.Parse(File.ReadAllBytes(SharedData.Path("tokenizers", "golden", $"{tokenizer}.{text}.json")));
        int[] ids = [.. golden.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32())];
        return (TokenizerLoader.Open(SharedData.Path("tokenizers", tokenizer)), ids[..Math.Min(ids.Length, 400)]);
    }

    /// <summary>Real token sequences (the golden ids: emoji, CJK, combining marks, byte-fallback pieces) fed one token at
    /// a time after a prompt of 1 or 7 tokens: the pieces handed out are the whole sequence's decode less the prompt's,
    /// and the full text is the whole decode, for every tokenizer in ../shared/data.</summary>
    [Theory]
    [MemberData(nameof(Sequences))]
    public void IncrementalTextEqualsDecodingTheWholeSequence(string tokenizerName, string text)
    {
        var (tokenizer, ids) = Golden(tokenizerName, text);
        using var _ = tokenizer as IDisposable;
        foreach (int promptLength in new[] { 1, 7 })
        {
            var pieces = new List<string>();
            var stream = new Generation.TextStream(tokenizer, ids[..promptLength], [], pieces.Add);
            var tokens = new List<int>(ids[..promptLength]);
            foreach (int id in ids[promptLength..])
            {
                tokens.Add(id);
                Assert.False(stream.Add(tokens));
            }
            stream.Finish();
            string whole = tokenizer.Decode(ids), prompt = tokenizer.Decode(ids[..promptLength]);
            Assert.Equal(whole, stream.FullText);
            Assert.StartsWith(prompt, whole);
            Assert.Equal(whole[prompt.Length..], string.Concat(pieces));
            Assert.True(pieces.Count > ids.Length / 4, "the text came in pieces as the tokens came");
        }
    }

    /// <summary>A stop string that spans several tokens, and one of two that appears first: the text ends right before
    /// it, and nothing of it was handed out.</summary>
    [Fact]
    public void AStopStringAcrossTokensCutsTheTextBeforeIt()
    {
        var (tokenizer, ids) = Golden("llama3", "tinystories-sample.0");
        using var _ = tokenizer as IDisposable;
        string whole = tokenizer.Decode(ids), prompt = tokenizer.Decode(ids[..3]);
        string generated = whole[prompt.Length..];
        string stop = generated.Substring(generated.Length / 2, 11); // a dozen characters: several tokens
        string later = generated.Substring(generated.Length * 3 / 4, 9);
        int expected = generated.IndexOf(stop, StringComparison.Ordinal);
        var pieces = new List<string>();
        var stream = new Generation.TextStream(tokenizer, ids[..3], [later, stop], pieces.Add);
        var tokens = new List<int>(ids[..3]);
        bool stopped = false;
        foreach (int id in ids[3..])
        {
            tokens.Add(id);
            if (stopped = stream.Add(tokens)) break;
        }
        Assert.True(stopped);
        stream.Finish();
        Assert.Equal(generated[..expected], string.Concat(pieces));
        Assert.Equal(prompt + generated[..expected], stream.FullText);
    }
}
