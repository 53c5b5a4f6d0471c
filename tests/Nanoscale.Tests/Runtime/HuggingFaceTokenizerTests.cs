using System.Text;
using System.Text.Json;
using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// tokenizer.json against golden ids from an independent implementation (a fork of transformers.js's tokenizers,
/// ../shared/data/tokenizers/golden): every tokenizer × text, with and without special tokens, token for token.
/// </summary>
public class HuggingFaceTokenizerTests
{
    public static TheoryData<string, string, int> Golden()
    {
        var data = new TheoryData<string, string, int>();
        foreach (var tokenizer in new[] { "gpt2", "llama2", "llama3", "qwen2_5" })
            foreach (var text in new[] { "tinystories-sample", "unicode-stress" })
                foreach (int special in new[] { 0, 1 })
                    data.Add(tokenizer, text, special);
        return data;
    }

    private static HuggingFaceTokenizer Open(string name) =>
        HuggingFaceTokenizer.Load(SharedData.Path("tokenizers", name, "tokenizer.json"));

    [Theory]
    [MemberData(nameof(Golden))]
    public void IdsEqualTheGoldenIds(string tokenizer, string text, int special)
    {
        using var golden = JsonDocument.Parse(File.ReadAllText(SharedData.Path("tokenizers", "golden", $"{tokenizer}.{text}.{special}.json")));
        var expected = golden.RootElement.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(golden.RootElement.GetProperty("count").GetInt32(), expected.Length);
        // The texts are read as raw UTF-8, CRLF kept, as the golden ids were made.
        string input = Encoding.UTF8.GetString(File.ReadAllBytes(SharedData.Path("text", $"{text}.txt")));
        using var t = Open(tokenizer);
        var actual = special == 1 ? t.EncodeWithSpecialTokens(input) : t.Encode(input, addBos: false);
        Assert.Equal(expected, actual);

        // decode(encode(text)) = text exactly where the reference says it is (special tokens are skipped on decode).
        bool roundTrips = golden.RootElement.GetProperty("roundtrip_equal").GetBoolean();
        Assert.Equal(roundTrips, t.Decode(actual) == input);
    }

    [Fact]
    public void BosAndEosComeFromTheTokenizerConfig()
    {
        using (var llama2 = Open("llama2"))
        {
            Assert.Equal(1, llama2.BosId);
            Assert.Equal(2, llama2.EosId);
            Assert.Equal(llama2.EncodeWithSpecialTokens("Hello"), llama2.Encode("Hello", addBos: true)); // its template adds BOS
        }
        using (var llama3 = Open("llama3"))
        {
            Assert.Equal(128000, llama3.BosId); // <|begin_of_text|>: added for scoring although this copy's template does not
            Assert.Equal(128000, llama3.Encode("Hello", addBos: true)[0]);
        }
        using var qwen = Open("qwen2_5");
        Assert.Null(qwen.BosId); // Qwen has none: nothing is added
        Assert.Equal(qwen.Encode("Hello", addBos: false), qwen.Encode("Hello", addBos: true));
    }

    /// <summary>A disposed tokenizer (eval frees it once its text is ids) refuses work with ObjectDisposedException
    /// instead of reaching freed native memory, and a second dispose is harmless; the library's allocator was told to
    /// give freed pages back at once.</summary>
    [Fact]
    public void ADisposedTokenizerRefusesWork()
    {
        var t = Open("gpt2");
        Assert.NotEmpty(t.Encode("Hello", addBos: false));
        t.Dispose();
        t.Dispose();
        Assert.Throws<ObjectDisposedException>(() => t.Encode("Hello", addBos: false));
        Assert.Throws<ObjectDisposedException>(() => t.Decode([15496]));
        Assert.NotNull(Environment.GetEnvironmentVariable("MIMALLOC_PURGE_DELAY") ?? NativeEnvironment("MIMALLOC_PURGE_DELAY"));
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "getenv")]
    private static extern nint GetEnv(string name);

    private static string? NativeEnvironment(string name) => System.Runtime.InteropServices.Marshal.PtrToStringUTF8(GetEnv(name));

    [Fact]
    public void TheLoaderFindsTokenizerJsonBesideAModelAndInAFolder()
    {
        var folder = SharedData.Path("tokenizers", "qwen2_5");
        Assert.Equal(Path.Combine(folder, "tokenizer.json"), TokenizerLoader.FindBeside(folder));
        Assert.IsType<HuggingFaceTokenizer>(TokenizerLoader.Open(folder));
        var e = Assert.Throws<CheckpointFormatException>(() => TokenizerLoader.Open(folder, vocabSize: 1000));
        Assert.Contains("does not fit the model's vocabulary of 1000", e.Message);
    }

    [Fact]
    public void BadTokenizerFilesAreLocatedErrors()
    {
        using var dir = new TempDir();
        var original = File.ReadAllText(SharedData.Path("tokenizers", "gpt2", "tokenizer.json"));

        var truncated = dir.File("truncated.json");
        File.WriteAllText(truncated, original[..(original.Length / 2)]);
        var cut = Assert.Throws<CheckpointFormatException>(() => HuggingFaceTokenizer.Load(truncated));
        Assert.Contains("not valid JSON", cut.Message);
        Assert.Equal(new FileInfo(truncated).Length, cut.Offset); // the byte where the text stops, not a position within a line

        var badMerge = dir.File("merge.json");
        int merges = original.IndexOf("\"merges\":", StringComparison.Ordinal);
        int first = original.IndexOf('"', original.IndexOf('[', merges) + 1);
        File.WriteAllText(badMerge, original[..(first + 1)] + "nosuchtoken anothermissing\", \"" + original[(first + 1)..]);
        var e = Assert.Throws<CheckpointFormatException>(() => HuggingFaceTokenizer.Load(badMerge));
        Assert.StartsWith(badMerge, e.Message);

        var hugeId = dir.File("id.json");
        File.WriteAllText(hugeId, original.Replace("\"id\": 50256", "\"id\": 2147483648"));
        Assert.Contains("non-negative 32-bit integer", Assert.Throws<CheckpointFormatException>(() => HuggingFaceTokenizer.Load(hugeId)).Message);
    }
}
