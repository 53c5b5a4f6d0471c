using System.Text;
using System.Text.Json;
using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// A tokenizer as GGUF metadata, the way llama.cpp's loader reads it (<c>tokenizer.ggml.*</c>): a llama2.c
/// <c>tokenizer.bin</c> or a SentencePiece <c>.model</c> becomes the SentencePiece-style <c>llama</c> vocabulary (pieces with U+2581 for spaces, their
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
        if (path.EndsWith(".model", StringComparison.OrdinalIgnoreCase)) return FromSentencePieceModel(path, rows);
        return FromLlama2c(Llama2cTokenizer.Load(path, rows), rows);
    }

    /// <summary>
    /// A SentencePiece <c>ModelProto</c> as the <c>llama</c> vocabulary, read field by field (the pieces: text, score,
    /// type — SentencePiece's type numbers are llama.cpp's; the trainer spec's unk/bos/eos ids; the normalizer's
    /// add_dummy_prefix). The pieces already carry U+2581 for spaces. Fewer pieces than rows are padded as
    /// <c>convert_hf_to_gguf.py</c> pads.
    /// </summary>
    private static GgufVocabulary FromSentencePieceModel(string path, int rows)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"{path}: no such tokenizer file", path);
        if (info.Length > SentencePieceModelTokenizer.MaxFileBytes) throw new CheckpointFormatException(path, null, 0, $"{info.Length} bytes is too large for a SentencePiece model");
        var bytes = File.ReadAllBytes(path);
        var tokens = new List<string>();
        var scores = new List<float>();
        var types = new List<int>();
        int unk = 0, bos = 1, eos = 2;
        bool addPrefix = true;
        try
        {
            var input = new Google.Protobuf.CodedInputStream(bytes);
            uint tag;
            while ((tag = input.ReadTag()) != 0)
            {
                int field = Google.Protobuf.WireFormat.GetTagFieldNumber(tag);
                if (field is 1 or 2 or 3 && Google.Protobuf.WireFormat.GetTagWireType(tag) == Google.Protobuf.WireFormat.WireType.LengthDelimited)
                {
                    var message = new Google.Protobuf.CodedInputStream(input.ReadBytes().ToByteArray());
                    uint inner;
                    if (field == 1)
                    {
                        if (tokens.Count >= rows)
                            throw new CheckpointFormatException(path, "pieces", input.Position, $"more pieces than the embedding's {rows} rows");
                        string piece = "";
                        float score = 0;
                        int type = Normal;
                        while ((inner = message.ReadTag()) != 0)
                            switch (Google.Protobuf.WireFormat.GetTagFieldNumber(inner))
                            {
                                case 1: piece = message.ReadString(); break;
                                case 2: score = message.ReadFloat(); break;
                                case 3: type = message.ReadEnum(); break;
                                default: message.SkipLastField(); break;
                            }
                        if (type is < Normal or > Byte)
                            throw new CheckpointFormatException(path, $"pieces[{tokens.Count}].type", input.Position, $"type {type} is not a SentencePiece piece type (1–6)");
                        tokens.Add(piece);
                        scores.Add(score);
                        types.Add(type);
                    }
                    else
                        while ((inner = message.ReadTag()) != 0)
                            switch ((field, Google.Protobuf.WireFormat.GetTagFieldNumber(inner)))
                            {
                                case (2, 40): unk = message.ReadInt32(); break;
                                case (2, 41): bos = message.ReadInt32(); break;
                                case (2, 42): eos = message.ReadInt32(); break;
                                case (3, 3): addPrefix = message.ReadBool(); break;
                                default: message.SkipLastField(); break;
                            }
                }
                else input.SkipLastField();
            }
        }
        catch (Google.Protobuf.InvalidProtocolBufferException e)
        {
            throw new CheckpointFormatException(path, null, null, $"not a readable SentencePiece model ({e.Message})", e);
        }
        if (tokens.Count == 0) throw new CheckpointFormatException(path, "pieces", null, "the model has no pieces");
        foreach (var (name, id) in new[] { ("unk_id", unk), ("bos_id", bos), ("eos_id", eos) })
            if (id < -1 || id >= tokens.Count)
                throw new CheckpointFormatException(path, $"trainer_spec.{name}", null, $"{id} is not a piece of the {tokens.Count}");
        for (int i = tokens.Count; i < rows; i++)
        {
            tokens.Add($"[PAD{i}]");
            scores.Add(0);
            types.Add(Unused);
        }
        var metadata = new List<(string Key, object Value)>
        {
            ("tokenizer.ggml.model", "llama"),
            ("tokenizer.ggml.tokens", tokens.ToArray()),
            ("tokenizer.ggml.scores", scores.ToArray()),
            ("tokenizer.ggml.token_type", types.ToArray()),
        };
        if (bos >= 0) metadata.Add(("tokenizer.ggml.bos_token_id", (uint)bos));
        if (eos >= 0) metadata.Add(("tokenizer.ggml.eos_token_id", (uint)eos));
        if (unk >= 0) metadata.Add(("tokenizer.ggml.unknown_token_id", (uint)unk));
        metadata.Add(("tokenizer.ggml.add_bos_token", bos >= 0));
        metadata.Add(("tokenizer.ggml.add_eos_token", false));
        metadata.Add(("tokenizer.ggml.add_space_prefix", addPrefix));
        return new GgufVocabulary("llama", null, metadata, path);
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
                // BOS is added exactly when the tokenizer has one (tokenizer_config.json's bos_token), as our runtime does.
                ("tokenizer.ggml.add_bos_token", tokenizer.BosId is not null),
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

    /// <summary>
    /// The tokenizer a GGUF file's <c>gpt2</c> vocabulary describes, as a <c>tokenizer.json</c> (byte-level BPE with
    /// its merges, the pre-tokenizer of its <c>tokenizer.ggml.pre</c> — and NFC for <c>qwen2</c>, as Qwen's own files —,
    /// control and user-defined tokens as added tokens)
    /// and a <c>tokenizer_config.json</c> naming BOS (when the file adds one) and EOS, loaded by the Hugging Face
    /// tokenizers library from a temporary folder. Null for other vocabularies or pre-tokenizers this does not know
    /// (give a tokenizer file then).
    /// </summary>
    /// <exception cref="CheckpointFormatException">The vocabulary is inconsistent (a merge or token that is not text).</exception>
    public static ITokenizer? OpenEmbedded(GgufFile file, int vocabSize)
    {
        if (file.Vocabulary is not { Model: "gpt2" } vocabulary || vocabulary.Tokens.Count != vocabSize) return null;
        object? preTokenizer = vocabulary.Pre switch
        {
            "gpt-2" or "default" or null => new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = true },
            "llama-bpe" or "llama3" => SplitThenBytes(Llama3Regex),
            "qwen2" => SplitThenBytes(Qwen2Regex),
            _ => null,
        };
        if (preTokenizer is null) return null;
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        var added = new List<object>();
        for (int id = 0; id < vocabulary.Tokens.Count; id++)
        {
            if (vocabulary.Tokens[id] is not string token)
                throw new CheckpointFormatException(file.Path, $"tokenizer.ggml.tokens[{id}]", null, "is not a string");
            int type = id < vocabulary.TokenTypes.Count ? Convert.ToInt32(vocabulary.TokenTypes[id], System.Globalization.CultureInfo.InvariantCulture) : Normal;
            if (type is Control or UserDefined)
                added.Add(new { id, content = token, single_word = false, lstrip = false, rstrip = false, normalized = false, special = type == Control });
            else if (type == Unused) continue;
            vocab.TryAdd(token, id);
        }
        var merges = vocabulary.Merges.Select((m, i) => m as string
            ?? throw new CheckpointFormatException(file.Path, $"tokenizer.ggml.merges[{i}]", null, "is not a string")).ToList();
        var json = new
        {
            version = "1.0",
            added_tokens = added,
            // Qwen2's tokenizers normalise to NFC first (GGUF does not record it; llama.cpp skips it, which is where its
            // qwen2 tokenization departs from the reference on unicode-stress.txt).
            normalizer = vocabulary.Pre == "qwen2" ? new { type = "NFC" } : (object?)null,
            pre_tokenizer = preTokenizer,
            post_processor = (object?)null,
            decoder = new { type = "ByteLevel", add_prefix_space = true, trim_offsets = true, use_regex = true },
            model = new { type = "BPE", dropout = (object?)null, unk_token = (object?)null, continuing_subword_prefix = (object?)null,
                end_of_word_suffix = (object?)null, fuse_unk = false, byte_fallback = false, ignore_merges = false, vocab, merges },
        };
        string? Token(int? id) => id is { } i && i >= 0 && i < vocabulary.Tokens.Count ? vocabulary.Tokens[i] as string : null;
        var config = new { bos_token = vocabulary.AddBos != false ? Token(vocabulary.Bos) : null, eos_token = Token(vocabulary.Eos) };
        var folder = Directory.CreateTempSubdirectory($"nanoscale-gguf-vocab.ns{Environment.ProcessId}-");
        try
        {
            var path = Path.Combine(folder.FullName, "tokenizer.json");
            File.WriteAllText(path, JsonSerializer.Serialize(json));
            File.WriteAllText(Path.Combine(folder.FullName, "tokenizer_config.json"), JsonSerializer.Serialize(config));
            return HuggingFaceTokenizer.Load(path, vocabSize); // read whole by the library: the folder can go
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    private static object SplitThenBytes(string regex) => new
    {
        type = "Sequence",
        pretokenizers = new object[]
        {
            new { type = "Split", pattern = new { Regex = regex }, behavior = "Isolated", invert = false },
            new { type = "ByteLevel", add_prefix_space = false, trim_offsets = true, use_regex = false },
        },
    };

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
