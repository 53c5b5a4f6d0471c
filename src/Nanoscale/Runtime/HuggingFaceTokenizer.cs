using System.Runtime.InteropServices;
using System.Text.Json;
using Nanoscale.IO;

namespace Nanoscale.Runtime;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> (byte-level BPE of GPT-2, Llama-3 and Qwen; SentencePiece-style BPE with byte
/// fallback of Llama-2, TinyLlama and Mistral; added and special tokens) through Hugging Face's own tokenizers library
/// (Rust, via Tokenizers.DotNet), so the ids are the reference ones: on the golden ids of
/// <c>../shared/data/tokenizers/golden</c> every tokenizer and text agrees token for token (docs/tokenizers.md).
/// </summary>
/// <remarks>
/// <para>The library always applies the tokenizer's post-processor (what <c>add_special_tokens=True</c> does), so
/// <see cref="EncodeWithSpecialTokens"/> is its result as is, and the plain ids are that result with the tokens the
/// post-processor's template puts before and after the text removed (read from <c>post_processor</c>).</para>
/// <para><see cref="BosId"/> and <see cref="EosId"/> come from <c>tokenizer_config.json</c> beside the file
/// (<c>bos_token</c>, <c>eos_token</c>), else from the template; <see cref="Encode"/> with <c>addBos</c> puts BOS before
/// the plain ids, as language-model scoring wants it (Qwen has none, so nothing is added). Decoding skips special
/// tokens.</para>
/// </remarks>
internal sealed partial class HuggingFaceTokenizer : ITokenizer, IDisposable
{
    /// <summary>
    /// The native library allocates through its own mimalloc, which by default keeps freed pages for a while: loading
    /// Llama-3's tokenizer left 67 MiB resident, and disposing it gave none back. With <c>MIMALLOC_PURGE_DELAY=0</c>
    /// (set here before the library loads, unless the environment already sets it) freed pages go back at once: 42 MiB
    /// after loading, 11 MiB after disposing (docs/runtime.md, the lossless checkpoint's memory).
    /// </summary>
    static HuggingFaceTokenizer()
    {
        const string Purge = "MIMALLOC_PURGE_DELAY";
        if (OperatingSystem.IsWindows() || Environment.GetEnvironmentVariable(Purge) is not null) return;
        try { SetEnvironment(Purge, "0", 0); }
        catch (EntryPointNotFoundException) { }
        catch (DllNotFoundException) { }
    }

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnvironment(string name, string value, int overwrite);

    private bool _disposed;

    /// <summary>Largest tokenizer.json read (Llama-3's is 9 MB; the file is parsed whole).</summary>
    public const long MaxFileBytes = 256L << 20;

    private readonly Tokenizers.DotNet.Tokenizer _native;
    private readonly object _gate = new();
    private readonly int _leading, _trailing;

    private HuggingFaceTokenizer(string path, Tokenizers.DotNet.Tokenizer native, int vocabSize, int? bos, int? eos, int leading, int trailing)
    {
        Path = path;
        _native = native;
        VocabSize = vocabSize;
        BosId = bos;
        EosId = eos;
        _leading = leading;
        _trailing = trailing;
    }

    public string Path { get; }

    public int VocabSize { get; }

    public int? BosId { get; }

    public int? EosId { get; }

    /// <summary>Opens <c>tokenizer.json</c> (or the folder that holds it) and the <c>tokenizer_config.json</c> beside it.</summary>
    /// <param name="path">The file or its folder.</param>
    /// <param name="vocabSize">The model's vocabulary: every token id must be below it.</param>
    /// <exception cref="CheckpointFormatException">The file is not a tokenizer the library reads, or does not fit the model.</exception>
    public static HuggingFaceTokenizer Load(string path, int? vocabSize = null)
    {
        if (Directory.Exists(path)) path = System.IO.Path.Combine(path, "tokenizer.json");
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"{path}: no such tokenizer file", path);
        if (info.Length > MaxFileBytes)
            throw new CheckpointFormatException(path, null, 0, $"file is {info.Length} bytes; at most {MaxFileBytes} are read");

        var (configPath, bosToken, eosToken) = SpecialTokens(path);
        int maxId, leading, trailing;
        int? bos, eos;
        try
        {
            var bytes = File.ReadAllBytes(path);
            // The whole file must be UTF-8: the native library is handed the file and does not survive every malformed
            // byte sequence (found by fuzzing, docs/reliability.md).
            using var document = JsonErrors.Parse(path, bytes, new JsonDocumentOptions { MaxDepth = 64 });
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("model", out var model) || model.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(path, "model", null, "a tokenizer.json has a \"model\" object");
            CheckComponents(path, root, model);
            Dictionary<string, int> added;
            (maxId, added) = Ids(path, root, model);
            (leading, trailing) = TemplateTokens(root);
            int? Lookup(string? token, string key)
            {
                if (token is null) return null;
                if (added.TryGetValue(token, out int id)) return id;
                if (model.TryGetProperty("vocab", out var vocab) && vocab.ValueKind == JsonValueKind.Object && vocab.TryGetProperty(token, out var v))
                    return Id(path, $"model.vocab.{token}", v);
                throw new CheckpointFormatException(configPath!, key, null, $"\"{token}\" is not a token of {path}");
            }
            bos = Lookup(bosToken, "bos_token");
            eos = Lookup(eosToken, "eos_token");
        }
        catch (JsonException e)
        {
            throw JsonErrors.Invalid(path, e);
        }
        if (vocabSize is int size && maxId >= size)
            throw new CheckpointFormatException(path, "model.vocab", null, $"token id {maxId} does not fit the model's vocabulary of {size}");

        Tokenizers.DotNet.Tokenizer native;
        try { native = new Tokenizers.DotNet.Tokenizer(path); }
        catch (Tokenizers.DotNet.TokenizerException e)
        {
            throw new CheckpointFormatException(path, null, null, $"the tokenizers library cannot read it ({e.Message})", e);
        }
        return new HuggingFaceTokenizer(path, native, vocabSize ?? maxId + 1, bos, eos, leading, trailing);
    }

    /// <summary>The ids exactly as the reference gives them with <c>add_special_tokens=True</c> (the post-processor's
    /// template applied).</summary>
    public int[] EncodeWithSpecialTokens(string text)
    {
        uint[] ids;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            ids = _native.Encode(text);
        }
        return Array.ConvertAll(ids, id => checked((int)id));
    }

    /// <summary>The ids without the template's special tokens (<c>add_special_tokens=False</c>), BOS first when asked
    /// and the tokenizer has one.</summary>
    public int[] Encode(string text, bool addBos)
    {
        int[] all = EncodeWithSpecialTokens(text);
        int count = Math.Max(0, all.Length - _leading - _trailing);
        bool bos = addBos && BosId is not null;
        var result = new int[count + (bos ? 1 : 0)];
        if (bos) result[0] = BosId!.Value;
        Array.Copy(all, _leading, result, bos ? 1 : 0, count);
        return result;
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        var raw = new uint[ids.Length];
        for (int i = 0; i < ids.Length; i++) raw[i] = (uint)ids[i];
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _native.Decode(raw);
        }
    }

    /// <summary>Frees the native tokenizer (its memory goes back to the system at once); later use throws
    /// <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            _native.Dispose();
        }
    }

    /// <summary>The largest token id (vocabulary and added tokens) and the ids of the added tokens by content.</summary>
    private static readonly string[] ModelTypes = ["BPE", "WordPiece", "WordLevel", "Unigram"];

    /// <summary>The shape the native library's deserializer relies on: a model of a known type, and each pipeline
    /// component (normalizer, pre-tokenizer, post-processor, decoder) null or an object with a string <c>type</c>.
    /// Checked here because the library crashes the process on some inputs that lack them (found by fuzzing).</summary>
    private static void CheckComponents(string path, JsonElement root, JsonElement model)
    {
        if (!model.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || !ModelTypes.Contains(type.GetString()))
            throw new CheckpointFormatException(path, "model.type", null, $"must be one of {string.Join(", ", ModelTypes)}");
        foreach (var component in new[] { "normalizer", "pre_tokenizer", "post_processor", "decoder" })
        {
            if (!root.TryGetProperty(component, out var value) || value.ValueKind == JsonValueKind.Null) continue;
            if (value.ValueKind != JsonValueKind.Object || !value.TryGetProperty("type", out var kind) || kind.ValueKind != JsonValueKind.String)
                throw new CheckpointFormatException(path, component, null, "must be null or an object with a string \"type\"");
        }
    }

    private static (int MaxId, Dictionary<string, int> Added) Ids(string path, JsonElement root, JsonElement model)
    {
        int maxId = -1;
        if (model.TryGetProperty("vocab", out var vocab))
        {
            if (vocab.ValueKind == JsonValueKind.Object)
                foreach (var entry in vocab.EnumerateObject())
                    maxId = Math.Max(maxId, Id(path, $"model.vocab.{entry.Name}", entry.Value));
            else if (vocab.ValueKind == JsonValueKind.Array) // Unigram: [[piece, score], …], ids by position
                maxId = vocab.GetArrayLength() - 1;
        }
        var added = new Dictionary<string, int>(StringComparer.Ordinal);
        if (root.TryGetProperty("added_tokens", out var tokens) && tokens.ValueKind == JsonValueKind.Array)
            foreach (var token in tokens.EnumerateArray())
            {
                if (token.ValueKind != JsonValueKind.Object || !token.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String
                    || !token.TryGetProperty("id", out var idElement))
                    throw new CheckpointFormatException(path, "added_tokens", null, "each added token needs a string \"content\" and an \"id\"");
                int id = Id(path, $"added_tokens.{content.GetString()}", idElement);
                added[content.GetString()!] = id;
                maxId = Math.Max(maxId, id);
            }
        if (maxId < 0) throw new CheckpointFormatException(path, "model.vocab", null, "the tokenizer has no tokens");
        return (maxId, added);
    }

    private static int Id(string path, string field, JsonElement value) =>
        value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out int id) && id >= 0
            ? id
            : throw new CheckpointFormatException(path, field, null, $"a token id is a non-negative 32-bit integer, found {value}");

    /// <summary>How many ids the post-processor puts before and after a single sequence.</summary>
    private static (int Leading, int Trailing) TemplateTokens(JsonElement root)
    {
        if (!root.TryGetProperty("post_processor", out var processor) || processor.ValueKind != JsonValueKind.Object) return (0, 0);
        return Template(processor);

        static (int, int) Template(JsonElement p)
        {
            string type = p.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "";
            switch (type)
            {
                case "TemplateProcessing" when p.TryGetProperty("single", out var single) && single.ValueKind == JsonValueKind.Array:
                    int before = 0, after = 0;
                    bool seen = false;
                    foreach (var item in single.EnumerateArray())
                    {
                        if (item.TryGetProperty("Sequence", out _)) { seen = true; continue; }
                        if (!item.TryGetProperty("SpecialToken", out var token) || !token.TryGetProperty("id", out var name)) continue;
                        int n = p.TryGetProperty("special_tokens", out var specials) && specials.TryGetProperty(name.GetString() ?? "", out var entry)
                                && entry.TryGetProperty("ids", out var ids) ? ids.GetArrayLength() : 1;
                        if (seen) after += n; else before += n;
                    }
                    return (before, after);
                case "RobertaProcessing" or "BertProcessing":
                    return (1, 1);
                case "Sequence" when p.TryGetProperty("processors", out var list) && list.ValueKind == JsonValueKind.Array:
                    int b = 0, a = 0;
                    foreach (var inner in list.EnumerateArray())
                    {
                        var (x, y) = Template(inner);
                        b += x;
                        a += y;
                    }
                    return (b, a);
                default:
                    return (0, 0); // ByteLevel and others add no tokens
            }
        }
    }

    /// <summary>BOS and EOS from <c>tokenizer_config.json</c> beside the file (a string, or an object with
    /// <c>content</c>); absent or null means none.</summary>
    private static (string? ConfigPath, string? Bos, string? Eos) SpecialTokens(string path)
    {
        var configPath = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!, "tokenizer_config.json");
        if (!File.Exists(configPath)) return (null, null, null);
        if (new FileInfo(configPath).Length > 64L << 20)
            throw new CheckpointFormatException(configPath, null, 0, "more than 64 MiB of JSON");
        try
        {
            using var document = JsonErrors.Parse(configPath, File.ReadAllBytes(configPath));
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(configPath, null, 0, "tokenizer_config.json must be a JSON object");
            string? Token(string key) =>
                !document.RootElement.TryGetProperty(key, out var value) ? null : value.ValueKind switch
                {
                    JsonValueKind.String => value.GetString(),
                    JsonValueKind.Object when value.TryGetProperty("content", out var c) && c.ValueKind == JsonValueKind.String => c.GetString(),
                    _ => null,
                };
            return (configPath, Token("bos_token"), Token("eos_token"));
        }
        catch (JsonException e)
        {
            throw JsonErrors.Invalid(configPath, e);
        }
    }
}
