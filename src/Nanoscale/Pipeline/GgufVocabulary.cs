using System.Text;
using System.Text.Json;
using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// A tokenizer as GGUF metadata, the way llama.cpp's loader reads it (<c>tokenizer.ggml.*</c>): a llama2.c
/// <c>tokenizer.bin</c> becomes the SentencePiece-style <c>llama</c> vocabulary (pieces with U+2581 for spaces, their
/// scores, token types unknown/control/byte/normal); a byte-level BPE <c>tokenizer.json</c> (GPT-2, Llama-3, Qwen2.5)
/// becomes the <c>gpt2</c> vocabulary with its merges and the pre-tokenizer name llama.cpp keys its splitting regex on.
/// The token list is padded to the embedding's rows (llama.cpp requires them equal), as <c>convert_hf_to_gguf.py</c>
/// pads, with unused <c>[PAD{i}]</c> tokens.
/// </summary>
internal sealed record GgufVocabulary(string Model, string? Pre, List<(string Key, object Value)> Metadata, string Source)
{
    // llama.cpp's llama_token_type (gguf TokenType).
    private const int Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6;

    /// <summary>Reads the tokenizer at <paramref name="path"/> for a model with <paramref name="rows"/> embedding rows.</summary>
    /// <exception cref="CheckpointFormatException">The file is malformed or holds more tokens than the embedding.</exception>
    /// <exception cref="InputException">A tokenizer kind GGUF export does not handle yet.</exception>
    public static GgufVocabulary Read(string path, int rows)
    {
        if (Directory.Exists(path)) path = Path.Combine(path, "tokenizer.json");
        if (path.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return FromTokenizerJson(path, rows);
        if (path.EndsWith(".model", StringComparison.OrdinalIgnoreCase))
            throw new InputException($"{path}: SentencePiece .model files are not exported to GGUF yet; a tokenizer.bin (llama2.c) or a byte-level BPE tokenizer.json is",
                ModelLoadOptions.TokenizerPathName);
        return FromLlama2c(Llama2cTokenizer.Load(path, rows), rows);
    }

    private static GgufVocabulary FromLlama2c(Llama2cTokenizer tokenizer, int rows)
    {
        if (tokenizer.VocabSize != rows)
            throw new CheckpointFormatException(tokenizer.Path, "vocab_size", null,
                $"the tokenizer has {tokenizer.VocabSize} tokens but the embedding has {rows} rows");
        var tokens = new string[rows];
        var scores = new float[rows];
        var types = new int[rows];
        for (int id = 0; id < rows; id++)
        {
            var piece = Encoding.UTF8.GetString(tokenizer.Piece(id));
            scores[id] = tokenizer.Score(id);
            (tokens[id], types[id]) = id switch
            {
                Llama2cTokenizer.UnknownId => ("<unk>", Unknown),
                Llama2cTokenizer.Bos => ("<s>", Control),   // llama2.c stores "\n<s>\n"
                Llama2cTokenizer.Eos => ("</s>", Control),
                _ when IsBytePiece(piece) => (piece, Byte),
                _ => (piece.Replace(' ', '\u2581'), Normal),
            };
        }
        return new GgufVocabulary("llama", null,
        [
            ("tokenizer.ggml.model", "llama"),
            ("tokenizer.ggml.tokens", tokens),
            ("tokenizer.ggml.scores", scores),
            ("tokenizer.ggml.token_type", types),
            ("tokenizer.ggml.bos_token_id", (uint)Llama2cTokenizer.Bos),
            ("tokenizer.ggml.eos_token_id", (uint)Llama2cTokenizer.Eos),
            ("tokenizer.ggml.unknown_token_id", (uint)Llama2cTokenizer.UnknownId),
            ("tokenizer.ggml.add_bos_token", true),
            ("tokenizer.ggml.add_eos_token", false),
        ], tokenizer.Path);
    }

    private static bool IsBytePiece(string piece) =>
        piece.Length == 6 && piece.StartsWith("<0x", StringComparison.Ordinal) && piece[5] == '>' && Uri.IsHexDigit(piece[3]) && Uri.IsHexDigit(piece[4]);

    private static GgufVocabulary FromTokenizerJson(string path, int rows)
    {
        using var tokenizer = HuggingFaceTokenizer.Load(path, rows); // validates the file and finds BOS/EOS
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { MaxDepth = 64 });
            var root = document.RootElement;
            var model = root.GetProperty("model");
            if (!model.TryGetProperty("type", out var type) || type.GetString() != "BPE")
                throw new InputException($"{path}: only BPE tokenizer.json files are exported to GGUF (this one is {(type.ValueKind == JsonValueKind.String ? type.GetString() : "untyped")})");
            if (model.TryGetProperty("byte_fallback", out var fallback) && fallback.ValueKind == JsonValueKind.True)
                throw new InputException($"{path}: a SentencePiece-style BPE with byte fallback (Llama-2's tokenizer.json) is not exported to GGUF yet; its llama2.c tokenizer.bin is");
            var pre = PreTokenizer(path, root);

            var tokens = new string?[rows];
            var types = new int[rows];
            foreach (var entry in model.GetProperty("vocab").EnumerateObject())
            {
                int id = entry.Value.GetInt32();
                if (id < 0 || id >= rows)
                    throw new CheckpointFormatException(path, $"model.vocab.{entry.Name}", null, $"id {id} is outside the embedding's {rows} rows");
                tokens[id] = entry.Name;
                types[id] = Normal;
            }
            if (root.TryGetProperty("added_tokens", out var added) && added.ValueKind == JsonValueKind.Array)
                foreach (var token in added.EnumerateArray())
                {
                    int id = token.GetProperty("id").GetInt32();
                    if (id < 0 || id >= rows)
                        throw new CheckpointFormatException(path, "added_tokens", null, $"id {id} is outside the embedding's {rows} rows");
                    tokens[id] = token.GetProperty("content").GetString() ?? "";
                    types[id] = token.TryGetProperty("special", out var special) && special.ValueKind == JsonValueKind.True ? Control : UserDefined;
                }
            for (int id = 0; id < rows; id++)
                if (tokens[id] is null)
                {
                    tokens[id] = $"[PAD{id}]";
                    types[id] = Unused;
                }

            var merges = new List<string>();
            if (model.TryGetProperty("merges", out var list))
                foreach (var merge in list.EnumerateArray())
                    merges.Add(merge.ValueKind == JsonValueKind.Array
                        ? string.Join(' ', merge.EnumerateArray().Select(part => part.GetString()))
                        : merge.GetString() ?? "");

            var metadata = new List<(string, object)>
            {
                ("tokenizer.ggml.model", "gpt2"),
                ("tokenizer.ggml.pre", pre),
                ("tokenizer.ggml.tokens", tokens.Select(t => t!).ToArray()),
                ("tokenizer.ggml.token_type", types),
                ("tokenizer.ggml.merges", merges.ToArray()),
                ("tokenizer.ggml.add_bos_token", false),
            };
            if (tokenizer.BosId is { } bos) metadata.Add(("tokenizer.ggml.bos_token_id", (uint)bos));
            if (tokenizer.EosId is { } eos) metadata.Add(("tokenizer.ggml.eos_token_id", (uint)eos));
            return new GgufVocabulary("gpt2", pre, metadata, path);
        }
        catch (JsonException e)
        {
            throw JsonErrors.Invalid(path, e);
        }
        catch (Exception e) when (e is InvalidOperationException or KeyNotFoundException or FormatException)
        {
            throw new CheckpointFormatException(path, "model", null, $"not the tokenizer.json layout GGUF export reads ({e.Message})", e);
        }
    }

    /// <summary>The name llama.cpp gives the pre-tokenizer of this file (llama-vocab.cpp keys its regexes on it).</summary>
    private static string PreTokenizer(string path, JsonElement root)
    {
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind != JsonValueKind.Object)
            throw new InputException($"{path}: no pre_tokenizer; GGUF export knows the byte-level ones of GPT-2, Llama-3 and Qwen2");
        string kind = pre.GetProperty("type").GetString() ?? "";
        if (kind == "ByteLevel" && pre.TryGetProperty("use_regex", out var useRegex) && useRegex.ValueKind == JsonValueKind.True)
            return "gpt-2";
        if (kind == "Sequence")
        {
            var regex = pre.GetProperty("pretokenizers").EnumerateArray()
                .Where(p => p.GetProperty("type").GetString() == "Split" && p.TryGetProperty("pattern", out var pattern) && pattern.TryGetProperty("Regex", out _))
                .Select(p => p.GetProperty("pattern").GetProperty("Regex").GetString())
                .FirstOrDefault();
            if (regex == Llama3Regex) return "llama-bpe";
            if (regex == Qwen2Regex) return "qwen2";
        }
        throw new InputException($"{path}: its pre-tokenizer is not one GGUF export knows (GPT-2's, Llama-3's or Qwen2's); llama.cpp would split text differently");
    }

    private const string Llama3Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    private const string Qwen2Regex = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
}
