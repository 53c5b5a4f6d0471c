namespace Nanoscale.Runtime;

/// <summary>Finds and opens the tokenizer of a model.</summary>
public static class TokenizerLoader
{
    /// <summary>
    /// Opens a tokenizer: a Hugging Face <c>tokenizer.json</c> (or a folder holding one), a SentencePiece <c>.model</c>,
    /// or a llama2.c <c>tokenizer.bin</c> (any other extension).
    /// </summary>
    /// <param name="path">The tokenizer file, or a folder with a <c>tokenizer.json</c>.</param>
    /// <param name="vocabSize">The model's vocabulary: the tokenizer's ids must fit it.</param>
    public static ITokenizer Open(string path, int? vocabSize = null)
    {
        if (Directory.Exists(path) && File.Exists(Path.Combine(path, "tokenizer.json")))
            return HuggingFaceTokenizer.Load(path, vocabSize);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such tokenizer file", path);
        var extension = Path.GetExtension(path).ToLowerInvariant();
        return extension switch
        {
            ".model" => SentencePieceModelTokenizer.Load(path),
            ".json" => HuggingFaceTokenizer.Load(path, vocabSize),
            _ => Llama2cTokenizer.Load(path, vocabSize),
        };
    }

    /// <summary>
    /// The tokenizer beside a model: <c>tokenizer.json</c>, <c>tokenizer.model</c>, <c>tokenizer.bin</c> or a single
    /// <c>tok*.bin</c> in the model's folder (or in the folder itself when the model is a folder). Null when there is
    /// none or the choice is ambiguous.
    /// </summary>
    public static string? FindBeside(string modelPath)
    {
        var folder = Directory.Exists(modelPath) ? modelPath : Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        foreach (var name in new[] { "tokenizer.json", "tokenizer.model", "tokenizer.bin" })
            if (File.Exists(Path.Combine(folder, name))) return Path.Combine(folder, name);
        var candidates = Directory.GetFiles(folder, "tok*.bin");
        return candidates.Length == 1 ? candidates[0] : null;
    }
}
