using System.Text.Json;

namespace Nanoscale.IO;

/// <summary>
/// A sharded safetensors checkpoint: <c>model.safetensors.index.json</c> maps each tensor to a shard file in the
/// same folder. Every shard is opened and validated; the index must agree with what the shards contain.
/// Optionally carries a <see cref="ModelConfig"/> from a <c>config.json</c> beside it.
/// </summary>
internal sealed class ShardedSafetensors : ICheckpoint
{
    private readonly List<SafetensorsFile> _shards;
    private readonly Dictionary<string, (TensorInfo Tensor, SafetensorsFile Shard)> _byName;

    private ShardedSafetensors(string path, CheckpointKind kind, List<SafetensorsFile> shards,
        List<TensorInfo> tensors, Dictionary<string, (TensorInfo, SafetensorsFile)> byName,
        List<KeyValuePair<string, string>> metadata, ModelConfig? config, string? configPath)
    {
        Path = path;
        Files = [System.IO.Path.GetFullPath(path), .. shards.Select(s => System.IO.Path.GetFullPath(s.Path)),
            .. configPath is null ? Array.Empty<string>() : [System.IO.Path.GetFullPath(configPath)]];
        Kind = kind;
        _shards = shards;
        Tensors = tensors;
        _byName = byName;
        Metadata = metadata;
        Config = config;
    }

    public string Path { get; }

    public IReadOnlyList<string> Files { get; }

    public IntegrityReport Verify(CancellationToken cancellationToken = default) =>
        IntegrityReport.Combine(Path, _shards.Select(s => s.Verify(cancellationToken)));

    public CheckpointKind Kind { get; }

    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>The index's <c>metadata</c> object flattened to strings, then each shard's own metadata; a key repeated
    /// by a later shard (every shard of transformers says <c>format: pt</c>) keeps its first value.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Metadata { get; }

    public ModelConfig? Config { get; }

    /// <summary>Shard files in the order the index names them.</summary>
    public IReadOnlyList<string> ShardPaths => _shards.Select(s => s.Path).ToList();

    public TensorInfo? Find(string name) => _byName.TryGetValue(name, out var entry) ? entry.Tensor : null;

    public TensorView Map(TensorInfo tensor)
    {
        if (!_byName.TryGetValue(tensor.Name, out var entry) || entry.Tensor != tensor)
            throw new ArgumentException($"{tensor.Name} is not a tensor of {Path}");
        return entry.Shard.Map(tensor);
    }

    public void Dispose()
    {
        foreach (var shard in _shards) shard.Dispose();
    }

    /// <summary>Opens an index file and all the shards it names.</summary>
    public static ShardedSafetensors Open(string indexPath, ModelConfig? config = null,
        CheckpointKind kind = CheckpointKind.ShardedSafetensors, string? configPath = null)
    {
        var folder = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(indexPath))!;
        var info = new FileInfo(indexPath);
        if (info.Length > 64L * 1024 * 1024)
            throw new CheckpointFormatException(indexPath, null, 0, $"index is {info.Length} bytes; refusing more than 64 MiB of JSON");

        var document = JsonErrors.Parse(indexPath, File.ReadAllBytes(indexPath));

        var shards = new List<SafetensorsFile>();
        try
        {
            using (document)
            {
                var root = document.RootElement;
                if (root.ValueKind != JsonValueKind.Object || !root.TryGetProperty("weight_map", out var weightMap) ||
                    weightMap.ValueKind != JsonValueKind.Object)
                    throw new CheckpointFormatException(indexPath, "weight_map", null, "missing or not an object");

                var metadata = new List<KeyValuePair<string, string>>();
                if (root.TryGetProperty("metadata", out var meta) && meta.ValueKind == JsonValueKind.Object)
                    foreach (var entry in meta.EnumerateObject())
                        metadata.Add(new(entry.Name, entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString()! : entry.Value.GetRawText()));

                // Shards in first-mention order; each file is opened once.
                var shardByFile = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
                var wanted = new List<(string Tensor, string File)>();
                foreach (var entry in weightMap.EnumerateObject())
                {
                    if (entry.Value.ValueKind != JsonValueKind.String)
                        throw new CheckpointFormatException(indexPath, $"weight_map.{entry.Name}", null, "shard name must be a string");
                    var file = entry.Value.GetString()!;
                    if (file.Length == 0 || file.Contains('/') || file.Contains('\\') || file is "." or "..")
                        throw new CheckpointFormatException(indexPath, $"weight_map.{entry.Name}", null,
                            $"shard \"{file}\" must be a plain file name in the index's folder");
                    wanted.Add((entry.Name, file));
                    if (!shardByFile.ContainsKey(file))
                    {
                        var shardPath = System.IO.Path.Combine(folder, file);
                        if (!File.Exists(shardPath))
                            throw new CheckpointFormatException(indexPath, $"weight_map.{entry.Name}", null, $"shard {shardPath} does not exist");
                        var shard = SafetensorsFile.Open(shardPath);
                        shards.Add(shard);
                        shardByFile[file] = shard;
                    }
                }

                var byName = new Dictionary<string, (TensorInfo, SafetensorsFile)>(StringComparer.Ordinal);
                var tensors = new List<TensorInfo>();
                foreach (var (name, file) in wanted)
                {
                    var shard = shardByFile[file];
                    var tensor = shard.Find(name) ?? throw new CheckpointFormatException(indexPath, $"weight_map.{name}", null,
                        $"the index places {name} in {file}, which has no such tensor");
                    if (!byName.TryAdd(name, (tensor, shard)))
                        throw new CheckpointFormatException(indexPath, $"weight_map.{name}", null, "tensor listed twice");
                    tensors.Add(tensor);
                }
                foreach (var shard in shards)
                {
                    metadata.AddRange(shard.Metadata.Where(m => !metadata.Any(k => k.Key == m.Key)).ToList());
                    foreach (var tensor in shard.Tensors)
                        if (!byName.ContainsKey(tensor.Name))
                            throw new CheckpointFormatException(shard.Path, tensor.Name, tensor.FileOffset,
                                $"tensor is in the shard but not in {System.IO.Path.GetFileName(indexPath)}");
                }
                return new ShardedSafetensors(indexPath, kind, shards, tensors, byName, metadata, config, configPath);
            }
        }
        catch
        {
            foreach (var shard in shards) shard.Dispose();
            throw;
        }
    }
}
