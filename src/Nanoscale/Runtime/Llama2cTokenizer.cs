using System.Buffers.Binary;
using System.Text;
using Nanoscale.IO;

namespace Nanoscale.Runtime;

/// <summary>
/// The llama2.c <c>tokenizer.bin</c> (SPEC §12): a score-ordered BPE over UTF-8 pieces with byte fallback.
/// </summary>
/// <remarks>
/// File layout (little-endian): int32 <c>max_token_length</c>, then per token float32 score, int32 byte length,
/// that many bytes. The file does not store its vocabulary size; it ends after the last token.
/// Encoding follows llama2.c <c>run.c</c>: a dummy-prefix space token, one piece per UTF-8 code point (or one byte
/// token <c>id = byte + 3</c> per byte of a code point the vocabulary lacks), then repeatedly merge the adjacent pair
/// whose concatenation is in the vocabulary with the highest score, leftmost on ties. Byte-fallback tokens never
/// merge (as in SentencePiece; llama2.c would try their literal text "&lt;0xXX&gt;", which no real vocabulary pairs).
/// Pieces are held as Latin-1 strings (one char per byte), so concatenating two keys is concatenating their bytes.
/// </remarks>
internal sealed partial class Llama2cTokenizer : ITokenizer
{
    /// <summary>Upper bound on the token-length field; real files use at most a few dozen bytes.</summary>
    public const int MaxPieceBytes = 1 << 16;

    /// <summary>Largest tokenizer file read (real ones are a few MB; the whole file is read into memory).</summary>
    public const long MaxFileBytes = 256L << 20;

    public const int UnknownId = 0;
    public const int Bos = 1;
    public const int Eos = 2;

    /// <summary>Byte fallback: the token for byte b is id b + 3 (after &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt;).</summary>
    public const int ByteFallbackOffset = 3;

    private readonly byte[][] _pieces;
    private readonly float[] _scores;
    private readonly Dictionary<string, int> _ids;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private readonly bool _hasByteTokens;

    private Llama2cTokenizer(string path, int maxTokenLength, byte[][] pieces, float[] scores)
    {
        Path = path;
        MaxTokenLength = maxTokenLength;
        _pieces = pieces;
        _scores = scores;
        _ids = new Dictionary<string, int>(pieces.Length, StringComparer.Ordinal);
        for (int id = 0; id < pieces.Length; id++)
            _ids.TryAdd(Encoding.Latin1.GetString(pieces[id]), id); // first id wins on duplicates
        _lookup = _ids.GetAlternateLookup<ReadOnlySpan<char>>();
        _hasByteTokens = pieces.Length >= ByteFallbackOffset + 256;
        if (!_ids.TryGetValue(" ", out int space))
            space = -1;
        SpaceId = space;
    }

    public string Path { get; }

    public int MaxTokenLength { get; }

    public int VocabSize => _pieces.Length;

    public int? BosId => Bos;

    public int? EosId => Eos;

    /// <summary>Id of the " " piece used as the dummy prefix, or -1 when the vocabulary has none.</summary>
    public int SpaceId { get; }

    public ReadOnlySpan<byte> Piece(int id) => _pieces[id];

    public float Score(int id) => _scores[id];

    /// <summary>Reads a llama2.c tokenizer file.</summary>
    /// <param name="path">The <c>tokenizer.bin</c> file.</param>
    /// <param name="vocabSize">When given, the file must hold exactly this many tokens (the model's vocabulary).</param>
    /// <exception cref="CheckpointFormatException">The file is truncated or a field is out of range; the message names the offset.</exception>
    public static Llama2cTokenizer Load(string path, int? vocabSize = null)
    {
        long length = new FileInfo(path).Length;
        if (length > MaxFileBytes)
            throw new CheckpointFormatException(path, null, 0, $"file is {length} bytes; a llama2.c tokenizer is far smaller (at most {MaxFileBytes} read)");
        byte[] data = File.ReadAllBytes(path);
        return Parse(data, path, vocabSize);
    }

    /// <summary>Parses the bytes of a llama2.c tokenizer file; <paramref name="path"/> only names it in errors.</summary>
    public static Llama2cTokenizer Parse(ReadOnlySpan<byte> data, string path, int? vocabSize = null)
    {
        if (vocabSize is < 1)
            throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "a vocabulary has at least one token");
        if (data.Length < 4)
            throw new CheckpointFormatException(path, "max_token_length", 0, $"file is {data.Length} bytes; expected at least a 4-byte header");
        int maxTokenLength = BinaryPrimitives.ReadInt32LittleEndian(data);
        if (maxTokenLength < 1 || maxTokenLength > MaxPieceBytes)
            throw new CheckpointFormatException(path, "max_token_length", 0, $"expected 1..{MaxPieceBytes}, found {maxTokenLength}");

        // The vocabulary size comes from the model's config, which is untrusted: every token takes at least 8 bytes of
        // the file, so the file bounds how many there can be before anything is allocated for them.
        long fits = (data.Length - 4) / 8;
        if (vocabSize > fits)
            throw new CheckpointFormatException(path, null, 0,
                $"the model's vocabulary has {vocabSize} tokens but a file of {data.Length} bytes holds at most {fits}");
        int capacity = (int)Math.Min(vocabSize ?? 1024, fits);
        var pieces = new List<byte[]>(capacity);
        var scores = new List<float>(capacity);
        long offset = 4;
        while (offset < data.Length && (vocabSize is null || pieces.Count < vocabSize))
        {
            int id = pieces.Count;
            if (data.Length - offset < 8)
                throw new CheckpointFormatException(path, $"token {id}", offset, $"truncated: {data.Length - offset} bytes left, a token header needs 8");
            float score = BinaryPrimitives.ReadSingleLittleEndian(data[(int)offset..]);
            int length = BinaryPrimitives.ReadInt32LittleEndian(data[(int)(offset + 4)..]);
            if (!float.IsFinite(score))
                throw new CheckpointFormatException(path, $"token {id} score", offset, $"score is {score}; expected a finite number");
            if (length < 0 || length > maxTokenLength)
                throw new CheckpointFormatException(path, $"token {id} length", offset + 4, $"expected 0..{maxTokenLength} (max_token_length), found {length}");
            offset += 8;
            if (data.Length - offset < length)
                throw new CheckpointFormatException(path, $"token {id}", offset, $"truncated: piece of {length} bytes, {data.Length - offset} left in the file");
            pieces.Add(data.Slice((int)offset, length).ToArray());
            scores.Add(score);
            offset += length;
        }
        if (vocabSize is int expected && pieces.Count < expected)
            throw new CheckpointFormatException(path, $"token {pieces.Count}", offset, $"file ends after {pieces.Count} tokens; the model's vocabulary has {expected}");
        if (offset != data.Length)
            throw new CheckpointFormatException(path, null, offset, $"{data.Length - offset} bytes follow the last of {pieces.Count} tokens");
        if (pieces.Count <= Eos)
            throw new CheckpointFormatException(path, null, offset, $"{pieces.Count} tokens; expected at least <unk>, <s>, </s>");
        return new Llama2cTokenizer(path, maxTokenLength, [.. pieces], [.. scores]);
    }
}
