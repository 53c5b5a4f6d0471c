using System.Buffers.Binary;
using System.Text.Json;
using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// A single safetensors file: an 8-byte little-endian header length N, N bytes of JSON, then the data region.
/// Every header field is validated before any tensor is trusted (SPEC §15); tensors are then mapped on demand.
/// </summary>
internal sealed class SafetensorsFile : ICheckpoint
{
    /// <summary>Largest header accepted, as in the reference implementation; guards against absurd allocations.</summary>
    public const int MaxHeaderBytes = 100 * 1024 * 1024;

    private readonly MappedFile _file;
    private readonly Dictionary<string, TensorInfo> _byName;
    private readonly Dictionary<string, ulong>? _checksums;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, bool> _verified = new(StringComparer.Ordinal);

    private SafetensorsFile(string path, MappedFile file, long headerLength, List<TensorInfo> tensors,
        List<KeyValuePair<string, string>> metadata)
    {
        Path = path;
        _file = file;
        HeaderLength = headerLength;
        Tensors = tensors;
        Metadata = metadata;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        _checksums = Checksums.Read(path, metadata);
        if (_checksums is not null)
        {
            foreach (var tensor in tensors)
                if (!_checksums.ContainsKey(tensor.Name))
                    throw new CheckpointFormatException(path, tensor.Name, tensor.FileOffset, $"the file's {Checksums.Key} record has no checksum for this tensor");
            foreach (string name in _checksums.Keys)
                if (name != Checksums.MetadataEntry && !_byName.ContainsKey(name))
                    throw new CheckpointFormatException(path, $"__metadata__.{Checksums.Key}", 8, $"the record names '{name}', which the file does not hold");
            ulong stored = _checksums.GetValueOrDefault(Checksums.MetadataEntry), computed = Checksums.OfMetadata(metadata);
            if (stored != computed)
                throw new CheckpointFormatException(path, "__metadata__", 8,
                    $"metadata checksum mismatch (stored {Checksums.Hex(stored)}, computed {Checksums.Hex(computed)}): the header is damaged");
        }
    }

    /// <summary>True when the file carries Nanoscale's integrity record (<see cref="Checksums"/>).</summary>
    public bool HasChecksums => _checksums is not null;

    public string Path { get; }

    public IReadOnlyList<string> Files => [System.IO.Path.GetFullPath(Path)];

    public CheckpointKind Kind => CheckpointKind.Safetensors;

    /// <summary>Byte length of the JSON header (the first 8 bytes not included).</summary>
    public long HeaderLength { get; }

    /// <summary>Absolute offset of the data region.</summary>
    public long DataOffset => 8 + HeaderLength;

    public IReadOnlyList<TensorInfo> Tensors { get; }

    public IReadOnlyList<KeyValuePair<string, string>> Metadata { get; }

    public ModelConfig? Config => null;

    public TensorInfo? Find(string name) => _byName.GetValueOrDefault(name);

    /// <summary>Maps a tensor; with an integrity record, its bytes are checked against it the first time.</summary>
    /// <exception cref="CheckpointFormatException">The tensor's bytes or header entry do not match its checksum.</exception>
    public TensorView Map(TensorInfo tensor)
    {
        if (Find(tensor.Name) != tensor)
            throw new ArgumentException($"{tensor.Name} is not a tensor of {Path}");
        var view = _file.View(tensor);
        if (_checksums is not null && !_verified.ContainsKey(tensor.Name))
        {
            try { Check(tensor, view); }
            catch
            {
                view.Dispose();
                throw;
            }
            _verified[tensor.Name] = true;
        }
        return view;
    }

    /// <summary>Checks every tensor against the integrity record and reports each damaged one (SPEC §15).</summary>
    public IntegrityReport Verify(CancellationToken cancellationToken = default)
    {
        var problems = new List<string>();
        long bytes = 0;
        if (_checksums is not null)
            foreach (var tensor in Tensors)
            {
                cancellationToken.ThrowIfCancellationRequested();
                try
                {
                    using var view = _file.View(tensor);
                    Check(tensor, view);
                    _verified[tensor.Name] = true;
                    bytes += tensor.ByteLength;
                }
                catch (CheckpointFormatException e) { problems.Add(e.Message); }
            }
        return new IntegrityReport(Path, 1, Tensors.Count, _checksums is null ? 0 : Tensors.Count, bytes, problems);
    }

    private void Check(TensorInfo tensor, TensorView view)
    {
        var hash = Checksums.BeginTensor(tensor.Name, tensor.DType, tensor.Shape, tensor.FileOffset - DataOffset);
        const int slice = 1 << 24;
        for (long offset = 0; offset < view.Length; offset += slice)
            hash.Append(view.Slice(offset, (int)Math.Min(slice, view.Length - offset)));
        ulong computed = hash.GetCurrentHashAsUInt64(), stored = _checksums![tensor.Name];
        if (computed != stored)
            throw new CheckpointFormatException(Path, tensor.Name, tensor.FileOffset,
                $"checksum mismatch over bytes [{tensor.FileOffset}, {tensor.FileOffset + tensor.ByteLength}) and its header entry " +
                $"(stored {Checksums.Hex(stored)}, computed {Checksums.Hex(computed)}): the file is damaged");
    }

    public void Dispose() => _file.Dispose();

    /// <summary>Opens and validates a safetensors file.</summary>
    /// <exception cref="CheckpointFormatException">The file is malformed; the message says where.</exception>
    public static SafetensorsFile Open(string path)
    {
        var file = new MappedFile(path);
        try
        {
            var (headerLength, tensors, metadata) = ReadHeader(path, file.Length);
            return new SafetensorsFile(path, file, headerLength, tensors, metadata);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static (long, List<TensorInfo>, List<KeyValuePair<string, string>>) ReadHeader(string path, long fileLength)
    {
        if (fileLength < 8)
            throw new CheckpointFormatException(path, "header length", 0,
                $"file is {fileLength} bytes; a safetensors file starts with an 8-byte header length");

        Span<byte> prefix = stackalloc byte[8];
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
        stream.ReadExactly(prefix);
        ulong declared = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (declared > MaxHeaderBytes)
            throw new CheckpointFormatException(path, "header length", 0,
                $"declared header length {declared} exceeds the {MaxHeaderBytes}-byte limit");
        if ((long)declared > fileLength - 8)
            throw new CheckpointFormatException(path, "header length", 0,
                $"declared header length {declared} runs past the end of the file ({fileLength} bytes)");
        if (declared < 2)
            throw new CheckpointFormatException(path, "header length", 0,
                $"declared header length {declared} cannot hold a JSON object");

        var header = new byte[declared];
        stream.ReadExactly(header);
        long dataLength = fileLength - 8 - (long)declared;
        var (tensors, metadata) = ParseHeader(path, header, dataLength);
        return ((long)declared, tensors, metadata);
    }

    private static (List<TensorInfo>, List<KeyValuePair<string, string>>) ParseHeader(string path, byte[] header, long dataLength)
    {
        try
        {
            return ParseHeaderJson(path, header, dataLength);
        }
        catch (InvalidOperationException e)
        {
            // System.Text.Json refuses to transcode invalid UTF-8 in names and strings only when they are read.
            throw new CheckpointFormatException(path, "header", 8, $"header holds invalid UTF-8 text ({e.Message})", e);
        }
    }

    private static (List<TensorInfo>, List<KeyValuePair<string, string>>) ParseHeaderJson(string path, byte[] header, long dataLength)
    {
        const long headerStart = 8;
        // The reference writer pads the header with spaces; trailing whitespace is valid JSON anyway.
        var document = JsonErrors.Parse(path, header, new JsonDocumentOptions { MaxDepth = 16 }, "header", headerStart);

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw new CheckpointFormatException(path, "header", headerStart, $"header must be a JSON object, found {root.ValueKind}");

            var tensors = new List<TensorInfo>();
            var metadata = new List<KeyValuePair<string, string>>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            long dataStart = headerStart + header.Length;
            foreach (var property in root.EnumerateObject())
            {
                if (!seen.Add(property.Name))
                    throw new CheckpointFormatException(path, property.Name, headerStart, "name appears twice in the header");
                if (property.Name == "__metadata__")
                {
                    ReadMetadata(path, property.Value, metadata);
                    continue;
                }
                tensors.Add(ReadTensor(path, property.Name, property.Value, dataStart, dataLength));
            }
            CheckOverlaps(path, tensors, dataStart);
            return (tensors, metadata);
        }
    }

    private static void ReadMetadata(string path, JsonElement value, List<KeyValuePair<string, string>> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, "__metadata__", 8, $"must be an object of strings, found {value.ValueKind}");
        foreach (var entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw new CheckpointFormatException(path, $"__metadata__.{entry.Name}", 8,
                    $"metadata values must be strings, found {entry.Value.ValueKind}");
            metadata.Add(new(entry.Name, entry.Value.GetString()!));
        }
    }

    private static TensorInfo ReadTensor(string path, string name, JsonElement entry, long dataStart, long dataLength)
    {
        if (entry.ValueKind != JsonValueKind.Object)
            throw new CheckpointFormatException(path, name, 8, $"tensor entry must be an object, found {entry.ValueKind}");

        if (!entry.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String)
            throw new CheckpointFormatException(path, $"{name}.dtype", 8, "missing or not a string");
        var dtypeName = dtypeElement.GetString()!;
        if (!DTypes.TryParse(dtypeName, out var dtype))
            throw new CheckpointFormatException(path, $"{name}.dtype", 8,
                $"unknown dtype \"{dtypeName}\"; known: {string.Join(", ", DTypes.AllNames)}");

        if (!entry.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, $"{name}.shape", 8, "missing or not an array");
        var shape = new long[shapeElement.GetArrayLength()];
        int axis = 0;
        foreach (var dim in shapeElement.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out var d) || d < 0)
                throw new CheckpointFormatException(path, $"{name}.shape[{axis}]", 8, $"dimension must be a non-negative integer, found {dim}");
            shape[axis++] = d;
        }
        long count = TensorShape.ElementCount(shape);
        if (count < 0)
            throw new CheckpointFormatException(path, $"{name}.shape", 8, $"element count of [{string.Join(", ", shape)}] overflows");

        if (!entry.TryGetProperty("data_offsets", out var offsets) || offsets.ValueKind != JsonValueKind.Array ||
            offsets.GetArrayLength() != 2)
            throw new CheckpointFormatException(path, $"{name}.data_offsets", 8, "missing or not a [begin, end] pair");
        if (!offsets[0].TryGetInt64(out long begin) || !offsets[1].TryGetInt64(out long end) || begin < 0 || end < begin)
            throw new CheckpointFormatException(path, $"{name}.data_offsets", 8,
                $"[{offsets[0]}, {offsets[1]}] is not a valid non-negative range with begin <= end");
        if (end > dataLength)
            throw new CheckpointFormatException(path, name, dataStart + begin,
                $"data_offsets [{begin}, {end}] run past the data region ({dataLength} bytes; file truncated?)");

        long expected;
        try { expected = checked(count * dtype.ElementSize()); }
        catch (OverflowException)
        {
            throw new CheckpointFormatException(path, $"{name}.shape", 8, "byte size overflows");
        }
        if (end - begin != expected)
            throw new CheckpointFormatException(path, name, dataStart + begin,
                $"{dtype} × [{string.Join(", ", shape)}] needs {expected} bytes but data_offsets span {end - begin}");

        foreach (var field in entry.EnumerateObject())
        {
            if (field.Name is not ("dtype" or "shape" or "data_offsets"))
                throw new CheckpointFormatException(path, $"{name}.{field.Name}", 8, "unknown tensor field");
        }
        return new TensorInfo(name, dtype, shape, path, dataStart + begin, expected);
    }

    private static void CheckOverlaps(string path, List<TensorInfo> tensors, long dataStart)
    {
        var ordered = tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.FileOffset).ToList();
        for (int i = 1; i < ordered.Count; i++)
        {
            var previous = ordered[i - 1];
            var current = ordered[i];
            if (current.FileOffset < previous.FileOffset + previous.ByteLength)
                throw new CheckpointFormatException(path, current.Name, current.FileOffset,
                    $"data [{current.FileOffset - dataStart}, {current.FileOffset - dataStart + current.ByteLength}) overlaps " +
                    $"{previous.Name} [{previous.FileOffset - dataStart}, {previous.FileOffset - dataStart + previous.ByteLength})");
        }
    }
}
