using System.Globalization;
using System.Text.Json;
using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// Writes a checkpoint: a single safetensors file (<see cref="ToFile"/>), or a Hugging Face model folder
/// (<see cref="ToFolder"/>): the tensors as <c>model.safetensors</c>, or, above <see cref="MaxShardBytes"/>, as
/// <c>model-0000i-of-0000n.safetensors</c> shards with a <c>model.safetensors.index.json</c>, beside any small files
/// (config, tokenizer). Everything is written into a hidden staging folder beside the destination (named like every
/// temporary, so <c>nanoscale clean</c> finds one a killed run left), which is renamed to the destination only once
/// every file is complete: a failure leaves no folder that looks like a model.
/// </summary>
/// <remarks>
/// <para>Shards are written as they fill: when a tensor would take the open shard past the limit, that shard is
/// written out (into the staging folder) and a new one opened, so a 100 GB output never waits on the disk in a
/// temporary file of its own size. The first shard is the exception: it holds the metadata whole (so its checksum
/// record covers it), and metadata such as a compressed checkpoint's table of tensors is complete only at the end, so
/// the first shard is written at <see cref="Commit"/>. Later shards carry only the keys added with
/// <see cref="AddShardMetadata"/> (what they are when opened alone), which must therefore come before any tensor.
/// Shard files get their final names (<c>-of-0000n</c>) at <see cref="Commit"/>, when n is known.</para>
/// <para>Bytes given in memory (<see cref="AddGroup"/>: an encoded tensor's parts) are spilled at once to a work file
/// of their shard (memory holds one tensor), and that file is deleted as soon as its shard is written: the disk holds
/// the output plus at most the first and the open shard's spill. Tensors given as a writer
/// (<see cref="Add(string, DType, long[], Action{Stream})"/>: a copy from the source, a decoder) are written when their
/// shard is. A group (the parts of one encoded tensor) never straddles two shards, so a tensor is read from one file.</para>
/// </remarks>
internal sealed class CheckpointWriter : IDisposable
{
    /// <summary>5 GB, as <c>transformers</c>' <c>save_pretrained</c> shards by default.</summary>
    public const long DefaultMaxShardBytes = 5_000_000_000;

    /// <summary>A tensor of a group whose bytes are in memory (<see cref="AddGroup"/>).</summary>
    public readonly record struct Part(string Name, DType DType, long[] Shape, ReadOnlyMemory<byte> Data);

    private sealed record Tensor(string Name, DType DType, long[] Shape, long Bytes, Action<Stream> Write);

    /// <summary>One shard being filled: its tensors, their bytes, the work file its in-memory parts were spilled to,
    /// and the file it was written to (under a staging name) once full.</summary>
    private sealed class Shard
    {
        public readonly List<Tensor> Tensors = [];
        public long Bytes;
        public TemporaryFile? SpillFile;
        public FileStream? Spill;
        public string? WrittenTo;

        public void DropSpill()
        {
            Spill?.Dispose();
            Spill = null;
            SpillFile?.Dispose();
            SpillFile = null;
        }
    }

    private readonly List<KeyValuePair<string, string>> _metadata = [];
    private readonly List<Shard> _shards = [new()];
    private readonly List<(string Name, Action<string> Write)> _files = [];
    private readonly HashSet<string> _fileNames = new(StringComparer.Ordinal);
    private readonly HashSet<string> _tensorNames = new(StringComparer.Ordinal);
    private readonly HashSet<string> _everyShard = new(StringComparer.Ordinal);
    private string? _staging;
    private bool _checksums, _committed;

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

    /// <summary>How many shards are already written out (full, before <see cref="Commit"/>).</summary>
    public int ShardsWritten => _shards.Count(s => s.WrittenTo is not null);

    /// <summary>Every shard's data on a 64-byte boundary (<see cref="SafetensorsWriter.WithAlignedData"/>).</summary>
    public CheckpointWriter WithAlignedData()
    {
        _alignData = true;
        return this;
    }

    private bool _alignData;

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

    /// <summary>Adds metadata that every shard carries (what the file is, when opened alone), not only the first;
    /// before any tensor, since later shards are written as they fill.</summary>
    public CheckpointWriter AddShardMetadata(string key, string value)
    {
        if (_tensorNames.Count > 0) throw new InvalidOperationException($"{Path}: metadata for every shard goes before the first tensor ({key})");
        _everyShard.Add(key);
        return AddMetadata(key, value);
    }

    /// <summary>Adds a tensor whose bytes <paramref name="writeData"/> writes when its shard is written (see
    /// <see cref="SafetensorsWriter.Add(string, DType, long[], Action{Stream})"/>).</summary>
    public CheckpointWriter Add(string name, DType dtype, long[] shape, Action<Stream> writeData)
    {
        var tensor = NewTensor(name, dtype, shape, writeData);
        Place(tensor.Bytes).Tensors.Add(tensor);
        return this;
    }

    /// <summary>Adds tensors whose bytes are in memory and belong together (an encoded tensor's parts): they go to one
    /// shard, and their bytes are spilled to that shard's work file now, so the caller may drop them.</summary>
    public CheckpointWriter AddGroup(IReadOnlyList<Part> parts)
    {
        if (parts.Count == 0) return this;
        if (_committed) throw new InvalidOperationException($"{Path} is already committed");
        // Everything is checked before anything moves: a refused group leaves the open shard as it was.
        long bytes = 0;
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in parts)
        {
            long expected = checked(TensorShape.ElementCount(p.Shape) * p.DType.ElementSize());
            if (p.Data.Length != expected)
                throw new ArgumentException($"{p.Name}: {p.Data.Length} bytes given but {p.DType} × [{string.Join(", ", p.Shape)}] needs {expected}");
            if (_tensorNames.Contains(p.Name) || !names.Add(p.Name)) throw new ArgumentException($"tensor name \"{p.Name}\" is already added");
            bytes += expected;
        }
        var shard = Place(bytes);
        if (shard.Spill is null)
        {
            shard.SpillFile = IsFolder ? TemporaryFile.In(Staging(), "shard", ".spill") : TemporaryFile.Beside(Path, "spill");
            shard.Spill = new FileStream(shard.SpillFile.Path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 20);
        }
        var spill = shard.Spill;
        foreach (var p in parts)
        {
            long offset = spill.Position, length = p.Data.Length;
            spill.Write(p.Data.Span);
            shard.Tensors.Add(NewTensor(p.Name, p.DType, p.Shape, stream => CopyRange(spill, offset, length, stream)));
        }
        return this;
    }

    private Tensor NewTensor(string name, DType dtype, long[] shape, Action<Stream> write)
    {
        if (_committed) throw new InvalidOperationException($"{Path} is already committed");
        if (!_tensorNames.Add(name)) throw new ArgumentException($"tensor name \"{name}\" is already added");
        return new Tensor(name, dtype, (long[])shape.Clone(), checked(TensorShape.ElementCount(shape) * dtype.ElementSize()), write);
    }

    /// <summary>The shard a group of <paramref name="bytes"/> goes to: the open one, unless it would pass the limit and
    /// already holds something; then the open shard is written out (the first waits for <see cref="Commit"/>) and a
    /// new one opened.</summary>
    private Shard Place(long bytes)
    {
        var open = _shards[^1];
        if (!IsFolder || open.Tensors.Count == 0 || open.Bytes + bytes <= MaxShardBytes)
        {
            open.Bytes += bytes;
            return open;
        }
        if (_shards.Count > 1) WriteShard(_shards.Count - 1, CancellationToken.None);
        var next = new Shard { Bytes = bytes };
        _shards.Add(next);
        return next;
    }

    /// <summary>The staging folder, created on first use.</summary>
    private string Staging()
    {
        if (_staging is null)
        {
            string parent = System.IO.Path.GetDirectoryName(Path)!;
            Directory.CreateDirectory(parent);
            TemporaryFile.RemoveStale(parent);
            string staging = System.IO.Path.Combine(parent, $".{System.IO.Path.GetFileName(Path)}{TemporaryFile.Tag()}.partial");
            Directory.CreateDirectory(staging);
            _staging = staging;
        }
        return _staging;
    }

    /// <summary>Writes shard <paramref name="index"/> into the staging folder under a name of its number alone, and
    /// deletes its spill.</summary>
    private void WriteShard(int index, CancellationToken cancellationToken)
    {
        var shard = _shards[index];
        string file = System.IO.Path.Combine(Staging(), $"shard-{index + 1:00000}.safetensors");
        var writer = new SafetensorsWriter(file);
        if (_checksums) writer.WithChecksums();
        if (_alignData) writer.WithAlignedData();
        writer.AddMetadata(index == 0 ? _metadata : _metadata.Where(m => _everyShard.Contains(m.Key)));
        foreach (var t in shard.Tensors) writer.Add(t.Name, t.DType, t.Shape, t.Write);
        writer.Commit(cancellationToken);
        shard.WrittenTo = file;
        shard.DropSpill();
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

    /// <summary>Writes a file under a temporary name and renames it; or the last shards, the index and the small files
    /// into the staging folder, then renames that to <see cref="Path"/> (which must be absent or empty:
    /// <see cref="OutputGuard.CheckFolder"/>).</summary>
    public void Commit(CancellationToken cancellationToken = default)
    {
        if (_committed) throw new InvalidOperationException($"{Path} is already committed");
        try
        {
            if (!IsFolder)
            {
                var file = new SafetensorsWriter(Path).AddMetadata(_metadata);
                if (_checksums) file.WithChecksums();
                if (_alignData) file.WithAlignedData();
                foreach (var t in _shards[0].Tensors) file.Add(t.Name, t.DType, t.Shape, t.Write);
                file.Commit(cancellationToken);
                TensorFiles = [Path];
            }
            else CommitFolder(cancellationToken);
            _committed = true;
        }
        finally
        {
            Dispose();
        }
    }

    private void CommitFolder(CancellationToken cancellationToken)
    {
        if (_shards.Count > 1 && _shards[^1].WrittenTo is null) WriteShard(_shards.Count - 1, cancellationToken);
        WriteShard(0, cancellationToken);
        string staging = Staging();
        var names = new List<string>();
        var weightMap = new List<KeyValuePair<string, string>>();
        for (int s = 0; s < _shards.Count; s++)
        {
            string name = _shards.Count == 1 ? "model.safetensors" : $"model-{s + 1:00000}-of-{_shards.Count:00000}.safetensors";
            File.Move(_shards[s].WrittenTo!, System.IO.Path.Combine(staging, name));
            names.Add(name);
            weightMap.AddRange(_shards[s].Tensors.Select(t => new KeyValuePair<string, string>(t.Name, name)));
        }
        if (_shards.Count > 1)
            File.WriteAllText(System.IO.Path.Combine(staging, CheckpointLoader.IndexFileName), IndexJson(weightMap, _shards.Sum(s => s.Bytes)));
        foreach (var (name, write) in _files)
        {
            cancellationToken.ThrowIfCancellationRequested();
            write(System.IO.Path.Combine(staging, name));
        }
        // An empty destination folder (checked by OutputGuard.CheckFolder) is replaced; anything else stays put.
        if (Directory.Exists(Path)) Directory.Delete(Path);
        Directory.Move(staging, Path);
        _staging = null;
        TensorFiles = names.Select(n => System.IO.Path.Combine(Path, n)).ToList();
    }

    /// <summary>Removes the spills and the staging folder of a writer that was not committed (a failed or cancelled
    /// run); after <see cref="Commit"/> there is nothing left to remove.</summary>
    public void Dispose()
    {
        foreach (var shard in _shards) shard.DropSpill();
        if (_staging is not null)
        {
            try { Directory.Delete(_staging, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            _staging = null;
        }
    }

    /// <summary>Copies <paramref name="length"/> bytes at <paramref name="offset"/> of a work file into
    /// <paramref name="destination"/> in 1 MiB slices.</summary>
    private static void CopyRange(FileStream spill, long offset, long length, Stream destination)
    {
        spill.Position = offset;
        var buffer = new byte[1 << 20];
        while (length > 0)
        {
            int read = spill.Read(buffer, 0, (int)Math.Min(buffer.Length, length));
            if (read <= 0) throw new EndOfStreamException($"{spill.Name} ended early");
            destination.Write(buffer, 0, read);
            length -= read;
        }
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
