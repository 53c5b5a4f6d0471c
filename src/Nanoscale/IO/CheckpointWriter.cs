using System.Globalization;
using System.Text.Json;
using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// Writes a checkpoint: a single safetensors file (<see cref="ToFile"/>), or a Hugging Face model folder whole
/// (<see cref="ToFolder"/>): the tensors as <c>model.safetensors</c>, or, above
/// <see cref="MaxShardBytes"/>, as <c>model-0000i-of-0000n.safetensors</c> shards with a
/// <c>model.safetensors.index.json</c>, beside any small files (config, tokenizer). Everything is written into a
/// hidden staging folder beside the destination (named like every temporary, so <c>nanoscale clean</c> finds one a
/// killed run left), which is renamed to the destination only once every file is complete: a failure leaves no folder
/// that looks like a model.
/// </summary>
/// <remarks>
/// Metadata goes to the first shard whole (so its checksum record covers it); later shards carry only the keys added
/// with <see cref="AddShardMetadata"/>, which say what they are when opened alone. Tensors added with <c>keepWithPrevious</c>
/// (the parts of one encoded tensor) never start a new shard, so a tensor is always read from one file.
/// </remarks>
internal sealed class CheckpointWriter
{
    /// <summary>5 GB, as <c>transformers</c>' <c>save_pretrained</c> shards by default.</summary>
    public const long DefaultMaxShardBytes = 5_000_000_000;

    private readonly List<KeyValuePair<string, string>> _metadata = [];
    private readonly List<(string Name, DType DType, long[] Shape, long Bytes, Action<Stream> Write, bool KeepWithPrevious)> _tensors = [];
    private readonly List<(string Name, Action<string> Write)> _files = [];
    private readonly HashSet<string> _fileNames = new(StringComparer.Ordinal);
    private readonly HashSet<string> _everyShard = new(StringComparer.Ordinal);
    private bool _checksums;

    private CheckpointWriter(string path, bool folder, long maxShardBytes)
    {
        if (maxShardBytes <= 0) throw new ArgumentOutOfRangeException(nameof(maxShardBytes), "must be positive");
        Path = System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(path));
        IsFolder = folder;
        MaxShardBytes = maxShardBytes;
    }

    /// <summary>A model folder at <paramref name="folder"/>, sharded above <paramref name="maxShardBytes"/>.</summary>
    public static CheckpointWriter ToFolder(string folder, long maxShardBytes = DefaultMaxShardBytes) => new(folder, true, maxShardBytes);

    /// <summary>One safetensors file at <paramref name="file"/>; it holds no other files and is never sharded.</summary>
    public static CheckpointWriter ToFile(string file) => new(file, false, long.MaxValue);

    /// <summary>The folder or file written.</summary>
    public string Path { get; }

    public bool IsFolder { get; }

    public long MaxShardBytes { get; }

    /// <summary>The shard files (or the one <c>model.safetensors</c>) after <see cref="Commit"/>.</summary>
    public IReadOnlyList<string> TensorFiles { get; private set; } = [];

    public CheckpointWriter WithChecksums()
    {
        _checksums = true;
        return this;
    }

    /// <summary>Adds metadata; a key added twice keeps its first value (sharded sources repeat their shards' keys).</summary>
    public CheckpointWriter AddMetadata(IEnumerable<KeyValuePair<string, string>> entries)
    {
        // A folder's total_size belongs to the index of a sharded source, which this writer writes anew.
        foreach (var entry in entries)
            if (!(IsFolder && entry.Key == "total_size") && !_metadata.Any(m => m.Key == entry.Key)) _metadata.Add(entry);
        return this;
    }

    public CheckpointWriter AddMetadata(string key, string value) => AddMetadata([new(key, value)]);

    /// <summary>Adds metadata that every shard carries (what the file is, when opened alone), not only the first.</summary>
    public CheckpointWriter AddShardMetadata(string key, string value)
    {
        _everyShard.Add(key);
        return AddMetadata(key, value);
    }

    /// <summary>Adds a tensor written at commit time (see <see cref="SafetensorsWriter.Add(string, DType, long[], Action{Stream})"/>);
    /// <paramref name="keepWithPrevious"/> keeps it in the shard of the tensor added before it.</summary>
    public CheckpointWriter Add(string name, DType dtype, long[] shape, Action<Stream> writeData, bool keepWithPrevious = false)
    {
        long bytes = checked(TensorShape.ElementCount(shape) * dtype.ElementSize());
        _tensors.Add((name, dtype, shape, bytes, writeData, keepWithPrevious && _tensors.Count > 0));
        return this;
    }

    /// <summary>Adds a small file by name (no folders), written by <paramref name="write"/> to the path it is given.</summary>
    public CheckpointWriter AddFile(string name, Action<string> write)
    {
        if (!IsFolder) throw new InvalidOperationException($"{Path} is a single file; it holds no {name}");
        if (name.Length == 0 || name != System.IO.Path.GetFileName(name) || name.StartsWith('.'))
            throw new ArgumentException($"\"{name}\" is not a plain file name");
        if (name.EndsWith(".safetensors", StringComparison.Ordinal) || name == CheckpointLoader.IndexFileName || !_fileNames.Add(name))
            throw new ArgumentException($"\"{name}\" is a tensor file's name or already added");
        _files.Add((name, write));
        return this;
    }

    public CheckpointWriter AddText(string name, string text) => AddFile(name, path => File.WriteAllText(path, text));

    /// <summary>Adds a copy of <paramref name="source"/> under <paramref name="name"/>.</summary>
    public CheckpointWriter AddCopy(string name, string source) => AddFile(name, path => File.Copy(source, path));

    /// <summary>Writes a file under a temporary name and renames it; or everything into the staging folder, then renames
    /// that to <see cref="Path"/> (which must be absent or empty: <see cref="OutputGuard.CheckFolder"/>).</summary>
    public void Commit(CancellationToken cancellationToken = default)
    {
        if (!IsFolder)
        {
            var file = new SafetensorsWriter(Path).AddMetadata(_metadata);
            if (_checksums) file.WithChecksums();
            foreach (var t in _tensors) file.Add(t.Name, t.DType, t.Shape, t.Write);
            file.Commit(cancellationToken);
            TensorFiles = [Path];
            return;
        }
        string folder = Path;
        string parent = System.IO.Path.GetDirectoryName(folder)!;
        Directory.CreateDirectory(parent);
        TemporaryFile.RemoveStale(parent);
        string staging = System.IO.Path.Combine(parent, $".{System.IO.Path.GetFileName(folder)}{TemporaryFile.Tag()}.partial");
        Directory.CreateDirectory(staging);
        try
        {
            var shards = PlanShards();
            var names = new List<string>();
            var weightMap = new List<KeyValuePair<string, string>>();
            for (int s = 0; s < shards.Count; s++)
            {
                string file = shards.Count == 1 ? "model.safetensors" : $"model-{s + 1:00000}-of-{shards.Count:00000}.safetensors";
                var writer = new SafetensorsWriter(System.IO.Path.Combine(staging, file));
                if (_checksums) writer.WithChecksums();
                writer.AddMetadata(s == 0 ? _metadata : _metadata.Where(m => _everyShard.Contains(m.Key)));
                foreach (int i in shards[s])
                {
                    var t = _tensors[i];
                    writer.Add(t.Name, t.DType, t.Shape, t.Write);
                    weightMap.Add(new(t.Name, file));
                }
                writer.Commit(cancellationToken);
                names.Add(file);
            }
            if (shards.Count > 1)
                File.WriteAllText(System.IO.Path.Combine(staging, CheckpointLoader.IndexFileName), IndexJson(weightMap, _tensors.Sum(t => t.Bytes)));
            foreach (var (name, write) in _files)
            {
                cancellationToken.ThrowIfCancellationRequested();
                write(System.IO.Path.Combine(staging, name));
            }
            // An empty destination folder (checked by OutputGuard.CheckFolder) is replaced; anything else stays put.
            if (Directory.Exists(folder)) Directory.Delete(folder);
            Directory.Move(staging, folder);
            TensorFiles = names.Select(n => System.IO.Path.Combine(folder, n)).ToList();
        }
        catch
        {
            try { Directory.Delete(staging, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>Tensor indices per shard, in order: a shard ends before a tensor that would take it past the limit,
    /// unless that tensor is kept with the previous one or the shard is still empty.</summary>
    private List<List<int>> PlanShards()
    {
        var shards = new List<List<int>> { new() };
        long size = 0;
        for (int i = 0; i < _tensors.Count; i++)
        {
            var t = _tensors[i];
            if (!t.KeepWithPrevious && shards[^1].Count > 0 && size + t.Bytes + GroupBytes(i + 1) > MaxShardBytes)
            {
                shards.Add([]);
                size = 0;
            }
            shards[^1].Add(i);
            size += t.Bytes;
        }
        return shards;
    }

    /// <summary>Bytes of the tensors from <paramref name="first"/> on that are kept with the one before it.</summary>
    private long GroupBytes(int first)
    {
        long bytes = 0;
        for (int i = first; i < _tensors.Count && _tensors[i].KeepWithPrevious; i++) bytes += _tensors[i].Bytes;
        return bytes;
    }

    private static string IndexJson(List<KeyValuePair<string, string>> weightMap, long totalSize)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartObject("metadata");
            json.WriteNumber("total_size", totalSize);
            json.WriteEndObject();
            json.WriteStartObject("weight_map");
            foreach (var (tensor, file) in weightMap) json.WriteString(tensor, file);
            json.WriteEndObject();
            json.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    /// <summary>Parses a size such as <c>5GB</c>, <c>500MB</c>, <c>2GiB</c> or a number of bytes (decimal units as
    /// <c>transformers</c>' <c>max_shard_size</c>, binary ones with <c>i</c>).</summary>
    public static bool TryParseSize(string text, out long bytes)
    {
        bytes = 0;
        text = text.Trim();
        int end = 0;
        while (end < text.Length && (char.IsAsciiDigit(text[end]) || text[end] == '.')) end++;
        if (end == 0 || !double.TryParse(text[..end], NumberStyles.Float, CultureInfo.InvariantCulture, out double value)) return false;
        double unit = text[end..].Trim().ToUpperInvariant() switch
        {
            "" or "B" => 1,
            "KB" => 1e3, "MB" => 1e6, "GB" => 1e9, "TB" => 1e12,
            "KIB" => 1L << 10, "MIB" => 1L << 20, "GIB" => 1L << 30, "TIB" => 1L << 40,
            _ => double.NaN,
        };
        double total = value * unit;
        if (!(total >= 1) || total > long.MaxValue / 2) return false;
        bytes = (long)total;
        return true;
    }
}
