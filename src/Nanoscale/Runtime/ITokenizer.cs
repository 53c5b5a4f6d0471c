namespace Nanoscale.Runtime;

/// <summary>
/// Text ↔ token ids. Implemented by <see cref="Llama2cTokenizer"/>; SentencePiece <c>.model</c> and Hugging Face
/// <c>tokenizer.json</c> readers plug in behind the same interface (SPEC §12).
/// </summary>
public interface ITokenizer
{
    int VocabSize { get; }

    /// <summary>Beginning-of-sequence id, or null when the tokenizer has none (then perplexity adds nothing).</summary>
    int? BosId { get; }

    /// <summary>End-of-sequence id, or null when the tokenizer has none.</summary>
    int? EosId { get; }

    /// <summary>Token ids of <paramref name="text"/>, with <see cref="BosId"/> first when <paramref name="addBos"/>.</summary>
    int[] Encode(string text, bool addBos);

    /// <summary>The text of a token sequence; control tokens (BOS, EOS) produce nothing.</summary>
    string Decode(ReadOnlySpan<int> ids);
}
