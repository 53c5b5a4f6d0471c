using Microsoft.ML.Tokenizers;
using Nanoscale.IO;

namespace Nanoscale.Runtime;

/// <summary>
/// A SentencePiece <c>.model</c> file (Llama, Mistral, …) through Microsoft.ML.Tokenizers' SentencePiece
/// implementation. BOS is added by <see cref="Encode"/> when asked, never by the library.
/// </summary>
internal sealed class SentencePieceModelTokenizer : ITokenizer
{
    private readonly SentencePieceTokenizer _tokenizer;

    private SentencePieceModelTokenizer(SentencePieceTokenizer tokenizer, int vocabSize)
    {
        _tokenizer = tokenizer;
        VocabSize = vocabSize;
    }

    public int VocabSize { get; }

    public int? BosId => _tokenizer.BeginningOfSentenceId >= 0 ? _tokenizer.BeginningOfSentenceId : null;

    public int? EosId => _tokenizer.EndOfSentenceId >= 0 ? _tokenizer.EndOfSentenceId : null;

    /// <summary>The largest <c>.model</c> file read (real ones are a few MB).</summary>
    internal const long MaxFileBytes = 256L << 20;

    /// <exception cref="CheckpointFormatException">The file is not a SentencePiece model the library can read.</exception>
    public static SentencePieceModelTokenizer Load(string path)
    {
        var info = new FileInfo(path);
        if (info.Length > MaxFileBytes)
            throw new CheckpointFormatException(path, null, 0, $"{info.Length} bytes is too large for a SentencePiece model");
        try
        {
            using var stream = File.OpenRead(path);
            var tokenizer = SentencePieceTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: false);
            return new SentencePieceModelTokenizer(tokenizer, tokenizer.Vocabulary.Count);
        }
        // The library's own failures on a damaged file (a missing trainer or normalizer spec dereferenced, an index
        // out of range) are the file's fault, not ours: they become the same located error (found by fuzzing).
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or NotSupportedException
                                       or IOException or Google.Protobuf.InvalidProtocolBufferException
                                       or NullReferenceException or IndexOutOfRangeException or KeyNotFoundException or OverflowException
                                       or InvalidCastException)
        {
            throw new CheckpointFormatException(path, null, null, $"not a readable SentencePiece model ({e.Message})", e);
        }
    }

    public int[] Encode(string text, bool addBos)
    {
        var ids = _tokenizer.EncodeToIds(text);
        if (!addBos || BosId is not { } bos) return [.. ids];
        var result = new int[ids.Count + 1];
        result[0] = bos;
        for (int i = 0; i < ids.Count; i++) result[i + 1] = ids[i];
        return result;
    }

    public string Decode(ReadOnlySpan<int> ids) => _tokenizer.Decode(ids.ToArray(), considerSpecialTokens: false) ?? "";
}
