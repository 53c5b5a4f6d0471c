namespace Nanoscale.IO;

/// <summary>Opens any checkpoint Nanoscale reads, recognising its kind from the path and the first bytes.</summary>
public static class CheckpointLoader
{
    public const string IndexFileName = "model.safetensors.index.json";

    /// <summary>
    /// Opens a safetensors file, a sharded index (<c>*.index.json</c>), a Hugging Face model folder
    /// (<c>config.json</c> + <c>model.safetensors</c> or its index), or a llama2.c checkpoint.
    /// </summary>
    /// <exception cref="FileNotFoundException">Nothing at <paramref name="path"/>.</exception>
    /// <exception cref="CheckpointFormatException">The file is not a checkpoint Nanoscale reads, or is malformed.</exception>
    public static ICheckpoint Open(string path)
    {
        if (Directory.Exists(path)) return OpenDirectory(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such file or folder", path);
        if (path.EndsWith(".index.json", StringComparison.OrdinalIgnoreCase))
        {
            var (config, configPath) = ConfigBeside(path);
            return ShardedSafetensors.Open(path, config, CheckpointKind.ShardedSafetensors, configPath);
        }

        var length = new FileInfo(path).Length;
        Span<byte> head = stackalloc byte[Llama2cCheckpoint.HeaderBytes];
        int read;
        using (var stream = File.OpenRead(path)) read = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        head = head[..read];

        if (path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) return SafetensorsFile.Open(path);
        if (head.Length >= 4 && head[..4].SequenceEqual("GGUF"u8)) return GgufFile.Open(path);
        if (Llama2cCheckpoint.LooksLikeLlama2c(head, length) || head.Length >= 4 && head[..4].SequenceEqual("ak42"u8))
            return Llama2cCheckpoint.Open(path);
        if (LooksLikeSafetensors(head, length)) return SafetensorsFile.Open(path);
        if (path.EndsWith(".bin", StringComparison.OrdinalIgnoreCase))
            return Llama2cCheckpoint.Open(path); // reports which header field is wrong
        throw new CheckpointFormatException(path, null, 0,
            "not a recognised checkpoint (expected safetensors, a sharded index, a Hugging Face folder, GGUF or a llama2.c .bin)");
    }

    private static bool LooksLikeSafetensors(ReadOnlySpan<byte> head, long length) =>
        head.Length >= 9 && BitConverter.ToUInt64(head[..8]) is var n && n < (ulong)length && head[8] == (byte)'{';

    private static ICheckpoint OpenDirectory(string folder)
    {
        var index = Path.Combine(folder, IndexFileName);
        var single = Path.Combine(folder, "model.safetensors");
        var (config, configPath) = ConfigBeside(index);
        if (File.Exists(index)) return ShardedSafetensors.Open(index, config, CheckpointKind.HuggingFaceDirectory, configPath);
        if (File.Exists(single)) return new ConfiguredCheckpoint(SafetensorsFile.Open(single), folder, config, configPath);
        throw new CheckpointFormatException(folder, null, null,
            $"folder has neither {IndexFileName} nor model.safetensors");
    }

    private static (ModelConfig? Config, string? Path) ConfigBeside(string file)
    {
        var config = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(file))!, "config.json");
        return File.Exists(config) ? (HuggingFaceConfig.Read(config), config) : (null, null);
    }

    /// <summary>A single-file checkpoint seen through its Hugging Face folder, with the folder's config.</summary>
    private sealed class ConfiguredCheckpoint(SafetensorsFile file, string folder, ModelConfig? config, string? configPath) : ICheckpoint
    {
        public string Path => folder;
        public IReadOnlyList<string> Files { get; } = [.. file.Files, .. configPath is null ? Array.Empty<string>() : [System.IO.Path.GetFullPath(configPath)]];
        public CheckpointKind Kind => CheckpointKind.HuggingFaceDirectory;
        public IReadOnlyList<TensorInfo> Tensors => file.Tensors;
        public IReadOnlyList<KeyValuePair<string, string>> Metadata => file.Metadata;
        public ModelConfig? Config => config;
        public TensorInfo? Find(string name) => file.Find(name);
        public TensorView Map(TensorInfo tensor) => file.Map(tensor);
        public IntegrityReport Verify(CancellationToken cancellationToken = default) => file.Verify(cancellationToken);
        public void Dispose() => file.Dispose();
    }
}
