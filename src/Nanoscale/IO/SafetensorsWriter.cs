using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// Writes a safetensors file atomically: everything goes to a temporary name in the same folder, which is renamed
/// over the destination only once all bytes are written and flushed. A failure leaves no file that looks complete.
/// </summary>
/// <remarks>
/// The header is compact JSON in the order tensors and metadata were added, with <c>__metadata__</c> first and
/// spaces padding it to a multiple of 8 bytes, as the reference implementation writes it; so a checkpoint read
/// and written back unchanged is identical byte for byte.
/// </remarks>
internal sealed class SafetensorsWriter
{
    private readonly List<KeyValuePair<string, string>> _metadata = [];
    private readonly List<Entry> _tensors = [];
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);

    private sealed record Entry(string Name, DType DType, long[] Shape, long ByteLength, Action<Stream> WriteData);

    public SafetensorsWriter(string path) => Path = path;

    public string Path { get; }

    public SafetensorsWriter AddMetadata(string key, string value)
    {
        _metadata.Add(new(key, value));
        return this;
    }

    public SafetensorsWriter AddMetadata(IEnumerable<KeyValuePair<string, string>> entries)
    {
        _metadata.AddRange(entries);
        return this;
    }

    /// <summary>
    /// Adds a tensor whose bytes <paramref name="writeData"/> writes when the file is committed; it must write
    /// exactly dtype size × element count bytes.
    /// </summary>
    public SafetensorsWriter Add(string name, DType dtype, long[] shape, Action<Stream> writeData)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name == "__metadata__" || !_names.Add(name))
            throw new ArgumentException($"tensor name \"{name}\" is reserved or already added");
        long count = TensorShape.ElementCount(shape);
        if (count < 0) throw new ArgumentException($"{name}: invalid shape [{string.Join(", ", shape)}]");
        _tensors.Add(new Entry(name, dtype, (long[])shape.Clone(), checked(count * dtype.ElementSize()), writeData));
        return this;
    }

    /// <summary>Adds a tensor from bytes already in memory (copied at commit time).</summary>
    public SafetensorsWriter Add(string name, DType dtype, long[] shape, ReadOnlyMemory<byte> data) =>
        Add(name, dtype, shape, stream => stream.Write(data.Span));

    /// <summary>Writes the header and every tensor to a temporary file, then renames it to <see cref="Path"/>.</summary>
    public void Commit(CancellationToken cancellationToken = default)
    {
        var header = BuildHeader();
        using var temporary = TemporaryFile.Beside(Path);
        using (var stream = new FileStream(temporary.Path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
        {
            Span<byte> prefix = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
            stream.Write(prefix);
            stream.Write(header);
            foreach (var tensor in _tensors)
            {
                cancellationToken.ThrowIfCancellationRequested();
                long before = stream.Position;
                tensor.WriteData(stream);
                long written = stream.Position - before;
                if (written != tensor.ByteLength)
                    throw new InvalidOperationException(
                        $"{Path}: {tensor.Name} wrote {written} bytes but {tensor.DType} × [{string.Join(", ", tensor.Shape)}] needs {tensor.ByteLength}");
            }
            stream.Flush(flushToDisk: true);
        }
        temporary.MoveTo(Path);
    }

    private byte[] BuildHeader()
    {
        var json = new StringBuilder("{");
        bool first = true;
        if (_metadata.Count > 0)
        {
            json.Append("\"__metadata__\":{");
            for (int i = 0; i < _metadata.Count; i++)
            {
                if (i > 0) json.Append(',');
                AppendString(json, _metadata[i].Key).Append(':');
                AppendString(json, _metadata[i].Value);
            }
            json.Append('}');
            first = false;
        }
        long offset = 0;
        foreach (var tensor in _tensors)
        {
            if (!first) json.Append(',');
            first = false;
            AppendString(json, tensor.Name).Append(":{\"dtype\":\"").Append(tensor.DType.Name()).Append("\",\"shape\":[");
            json.AppendJoin(',', tensor.Shape.Select(d => d.ToString(CultureInfo.InvariantCulture)));
            json.Append("],\"data_offsets\":[").Append(offset.ToString(CultureInfo.InvariantCulture)).Append(',');
            offset += tensor.ByteLength;
            json.Append(offset.ToString(CultureInfo.InvariantCulture)).Append("]}");
        }
        json.Append('}');
        var bytes = Encoding.UTF8.GetBytes(json.ToString());
        int padded = (bytes.Length + 7) / 8 * 8;
        var header = new byte[padded];
        bytes.CopyTo(header, 0);
        header.AsSpan(bytes.Length).Fill((byte)' ');
        return header;
    }

    /// <summary>JSON string escaping as serde_json writes it: quotes, backslashes and control characters only.</summary>
    private static StringBuilder AppendString(StringBuilder json, string value)
    {
        json.Append('"');
        foreach (char c in value)
        {
            switch (c)
            {
                case '"': json.Append("\\\""); break;
                case '\\': json.Append("\\\\"); break;
                case '\n': json.Append("\\n"); break;
                case '\r': json.Append("\\r"); break;
                case '\t': json.Append("\\t"); break;
                case '\b': json.Append("\\b"); break;
                case '\f': json.Append("\\f"); break;
                default:
                    if (c < 0x20) json.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else json.Append(c);
                    break;
            }
        }
        return json.Append('"');
    }

    /// <summary>Writes <paramref name="source"/> back unchanged: same metadata, tensors and order.</summary>
    public static void CopyOf(ICheckpoint source, string path, CancellationToken cancellationToken = default)
    {
        var writer = new SafetensorsWriter(path).AddMetadata(source.Metadata);
        foreach (var tensor in source.Tensors)
            writer.Add(tensor.Name, tensor.DType, tensor.Shape, stream => CopyTensor(source, tensor, stream));
        writer.Commit(cancellationToken);
    }

    /// <summary>Streams one tensor's mapped bytes into <paramref name="stream"/> in bounded slices.</summary>
    public static void CopyTensor(ICheckpoint source, TensorInfo tensor, Stream stream)
    {
        using var view = source.Map(tensor);
        const int slice = 1 << 24;
        for (long offset = 0; offset < view.Length; offset += slice)
            stream.Write(view.Slice(offset, (int)Math.Min(slice, view.Length - offset)));
    }
}
