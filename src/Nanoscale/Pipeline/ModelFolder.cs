using System.Text.Json.Nodes;
using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// What makes an output a model folder that every verb opens with no extra flags (SPEC §8): the tensors (sharded above
/// a size), a <c>config.json</c> and the tokenizer's files. <c>compress</c> and <c>decompress</c> write one whenever
/// the output is not named <c>*.safetensors</c>.
/// </summary>
public static class ModelFolder
{
    /// <summary>Files of a Hugging Face tokenizer (and generation defaults) copied from the source's folder.</summary>
    public static readonly IReadOnlyList<string> TokenizerFileNames =
    [
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
        "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja",
    ];

    /// <summary>True when <paramref name="output"/> names a model folder, false for a single <c>.safetensors</c> file.</summary>
    public static bool IsFolder(string output) => !output.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase);

    /// <summary>The output checks of <see cref="OutputGuard"/> for a folder or a file, by <see cref="IsFolder"/>.</summary>
    public static string CheckOutput(string output, ICheckpoint input, IEnumerable<string>? alsoRead, bool force) =>
        IsFolder(output) ? OutputGuard.CheckFolder(output, input, alsoRead, force) : OutputGuard.Check(output, input, alsoRead, force);

    /// <summary>A writer for <paramref name="output"/>: a folder sharded above <paramref name="maxShardBytes"/>, or one file.</summary>
    internal static CheckpointWriter Writer(string output, long maxShardBytes) =>
        IsFolder(output) ? CheckpointWriter.ToFolder(output, maxShardBytes) : CheckpointWriter.ToFile(output);

    /// <summary>
    /// Adds the folder's <c>config.json</c> and tokenizer to <paramref name="writer"/>: the source's own
    /// <c>config.json</c> when it has one (every key kept), else one written from <paramref name="config"/>; its
    /// <c>quantization_config</c> replaced by <paramref name="quantization"/> (removed when null). The tokenizer is
    /// <paramref name="tokenizerPath"/> when given, else the files beside the source. Returns what was added, by name.
    /// </summary>
    internal static IReadOnlyList<string> AddCompanions(CheckpointWriter writer, ICheckpoint source, ModelConfig? config,
        DType weightsDType, JsonObject? quantization, string? tokenizerPath)
    {
        var added = new List<string>();
        if (!writer.IsFolder) return added;
        string? configFile = source.Files.FirstOrDefault(f => Path.GetFileName(f) == "config.json");
        string? configJson = configFile is not null ? File.ReadAllText(configFile)
            : config is not null ? HuggingFaceConfig.Write(config, weightsDType) : null;
        if (configJson is not null)
        {
            writer.AddText("config.json", HuggingFaceConfig.WithQuantization(configJson, configFile ?? "config.json", quantization));
            added.Add("config.json");
        }
        foreach (var (name, from) in TokenizerFiles(source, tokenizerPath))
        {
            writer.AddCopy(name, from);
            added.Add(name);
        }
        return added;
    }

    /// <summary>The tokenizer files to copy, by their name in the output: an explicit tokenizer (a file or a folder),
    /// else the Hugging Face files in the source's folder, else the one <see cref="TokenizerLoader.FindBeside"/> finds
    /// (a llama2.c <c>tok512.bin</c> becomes <c>tokenizer.bin</c>).</summary>
    private static List<(string Name, string From)> TokenizerFiles(ICheckpoint source, string? tokenizerPath)
    {
        static List<(string, string)> KnownIn(string folder) =>
            TokenizerFileNames.Select(n => (n, Path.Combine(folder, n))).Where(f => File.Exists(f.Item2)).ToList();

        if (tokenizerPath is not null)
        {
            if (Directory.Exists(tokenizerPath)) return KnownIn(tokenizerPath);
            var files = new List<(string, string)> { (CanonicalName(tokenizerPath), tokenizerPath) };
            string sibling = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(tokenizerPath))!, "tokenizer_config.json");
            if (CanonicalName(tokenizerPath) == "tokenizer.json" && File.Exists(sibling)) files.Add(("tokenizer_config.json", sibling));
            return files;
        }
        string sourceFolder = Directory.Exists(source.Path) ? source.Path : Path.GetDirectoryName(Path.GetFullPath(source.Path))!;
        var known = KnownIn(sourceFolder);
        if (known.Any(k => k.Item1 is "tokenizer.json" or "tokenizer.model")) return known;
        return TokenizerLoader.FindBeside(source.Path) is { } beside ? [.. known, (CanonicalName(beside), beside)] : known;
    }

    private static string CanonicalName(string tokenizer) => Path.GetExtension(tokenizer).ToLowerInvariant() switch
    {
        ".json" => "tokenizer.json",
        ".model" => "tokenizer.model",
        _ => "tokenizer.bin",
    };

    /// <summary>The floating-point dtype holding most of the weights (a config's <c>torch_dtype</c>).</summary>
    internal static DType MainDType(IEnumerable<(DType DType, long Elements)> tensors) =>
        tensors.Where(t => t.DType.IsFloat()).GroupBy(t => t.DType).OrderByDescending(g => g.Sum(t => t.Elements))
            .Select(g => g.Key).FirstOrDefault(DType.F32);

    /// <summary>Bytes of everything written: the file, or every file in the folder.</summary>
    public static long SizeOf(string output) => Directory.Exists(output)
        ? Directory.EnumerateFiles(output).Sum(f => new FileInfo(f).Length)
        : new FileInfo(output).Length;

    /// <summary>Parses <c>--max-shard-size</c>: <c>5GB</c>, <c>500MB</c>, <c>2GiB</c> or bytes.</summary>
    /// <exception cref="InvalidOptionException">Not a size.</exception>
    public static long ParseShardSize(string text, string option) =>
        CheckpointWriter.TryParseSize(text, out long bytes) ? bytes
            : throw new InvalidOptionException(option, $"'{text}' is not a size (e.g. 5GB, 500MB, 2GiB or a number of bytes)");
}
