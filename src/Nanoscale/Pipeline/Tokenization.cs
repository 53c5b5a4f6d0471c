using System.Text;
using Nanoscale.Runtime;

namespace Nanoscale.Pipeline;

/// <summary>What <see cref="Tokenization.Tokenize"/> produced.</summary>
public sealed record TokenizeResult(string Tokenizer, string Text, bool SpecialTokens, int[] Ids, int? BosId, int? EosId);

/// <summary>
/// The <c>tokenize</c> verb: the ids of a text file exactly as the tokenizer's reference implementation gives them,
/// from exactly the file's bytes (no line-ending or BOM normalisation, unlike the text <c>eval</c> reads), so the ids can
/// be checked against any other implementation.
/// </summary>
public static class Tokenization
{
    /// <param name="tokenizerPath">A <c>tokenizer.json</c> or its folder, a SentencePiece <c>.model</c>, or a llama2.c <c>tokenizer.bin</c>.</param>
    /// <param name="textPath">The text file (UTF-8).</param>
    /// <param name="specialTokens">Add the special tokens the tokenizer adds by default (a tokenizer.json's post-processor,
    /// BOS for the others); false gives the bare ids.</param>
    public static TokenizeResult Tokenize(string tokenizerPath, string textPath, bool specialTokens = true)
    {
        var tokenizer = TokenizerLoader.Open(tokenizerPath);
        try
        {
            string text = Encoding.UTF8.GetString(TextInput.ReadBytes(textPath, "TokenizeOptions.TextPath"));
            int[] ids = tokenizer switch
            {
                HuggingFaceTokenizer hf when specialTokens => hf.EncodeWithSpecialTokens(text),
                _ => tokenizer.Encode(text, addBos: specialTokens),
            };
            return new TokenizeResult(tokenizerPath, textPath, specialTokens, ids, tokenizer.BosId, tokenizer.EosId);
        }
        finally
        {
            (tokenizer as IDisposable)?.Dispose();
        }
    }
}
