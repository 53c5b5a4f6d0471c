using System.Text;
using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// Writes a GGUF v3 file, atomically: typed metadata (u32, i32, f32, bool, string, and arrays of strings, f32 and i32;
/// each written with the type its CLR type implies), then tensor infos, then each tensor's bytes aligned to 32.
/// Tensors are any <see cref="GgmlType"/>: plain F32/F16/BF16, or ggml's quantized blocks, whose bytes the caller
/// supplies row after row (a row is whole blocks). Each tensor's bytes are produced by its callback while the file is
/// written, so a model is streamed tensor by tensor.
/// </summary>
internal sealed class GgufWriter(string path)
{
    public const int Alignment = 32;

    private readonly List<(string Key, object Value)> _metadata = [];
    private readonly List<(string Name, GgmlType Type, long[] Shape, long Bytes, Action<Stream> Write)> _tensors = [];

    public GgufWriter AddMetadata(string key, object value)
    {
        _metadata.Add((key, value));
        return this;
    }

    /// <summary>Adds a tensor with a row-major <paramref name="shape"/> (written as ggml's reversed ne[]).</summary>
    public GgufWriter AddTensor(string name, DType dtype, long[] shape, Action<Stream> write) => AddTensor(name, dtype switch
    {
        DType.F32 => GgmlType.F32,
        DType.F16 => GgmlType.F16,
        DType.BF16 => GgmlType.BF16,
        _ => throw new ArgumentException($"GGUF plain tensors are F32, F16 or BF16, not {dtype}"),
    }, shape, write);

    /// <summary>Adds a tensor of ggml type <paramref name="type"/>; its last axis must be whole blocks.</summary>
    public GgufWriter AddTensor(string name, GgmlType type, long[] shape, Action<Stream> write)
    {
        long columns = shape[^1], rows = TensorShape.ElementCount(shape) / Math.Max(1, columns);
        long rowBytes = type.RowBytes(columns)
            ?? throw new ArgumentException($"{name}: rows of {columns} elements are not whole {type} blocks of {type.BlockSize}");
        _tensors.Add((name, type, shape, rows * rowBytes, write));
        return this;
    }

    public void Commit()
    {
        using var temporary = TemporaryFile.Beside(path);
        using (var stream = new FileStream(temporary.Path, FileMode.CreateNew, FileAccess.Write, FileShare.None, SafetensorsWriter.LargeWrites))
        {
            var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
            w.Write(0x46554747u);
            w.Write(3u);
            w.Write((ulong)_tensors.Count);
            w.Write((ulong)_metadata.Count);
            foreach (var (key, value) in _metadata)
            {
                WriteString(w, key);
                WriteValue(w, value);
            }
            long offset = 0;
            var offsets = new List<long>();
            foreach (var (name, type, shape, bytes, _) in _tensors)
            {
                WriteString(w, name);
                w.Write((uint)shape.Length);
                foreach (var d in shape.Reverse()) w.Write((ulong)d);
                w.Write((uint)type.Id);
                w.Write((ulong)offset);
                offsets.Add(offset);
                offset = Align(offset + bytes);
            }
            w.Flush();
            Pad(stream);
            long dataStart = stream.Position;
            for (int i = 0; i < _tensors.Count; i++)
            {
                var (name, _, _, expected, write) = _tensors[i];
                stream.Position = dataStart + offsets[i];
                long before = stream.Position;
                write(stream);
                if (stream.Position - before != expected)
                    throw new InvalidOperationException($"{path}: {name} wrote {stream.Position - before} bytes, expected {expected}");
                Pad(stream);
            }
            stream.Flush(flushToDisk: true);
        }
        temporary.MoveTo(path);
    }

    private static long Align(long offset) => (offset + Alignment - 1) / Alignment * Alignment;

    private static void Pad(Stream stream)
    {
        long padding = Align(stream.Position) - stream.Position;
        for (long i = 0; i < padding; i++) stream.WriteByte(0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    private static void WriteValue(BinaryWriter w, object value)
    {
        switch (value)
        {
            case uint v: w.Write(4u); w.Write(v); break;
            case int v: w.Write(5u); w.Write(v); break;
            case float v: w.Write(6u); w.Write(v); break;
            case bool v: w.Write(7u); w.Write((byte)(v ? 1 : 0)); break;
            case string v: w.Write(8u); WriteString(w, v); break;
            case string[] v: w.Write(9u); w.Write(8u); w.Write((ulong)v.Length); foreach (var s in v) WriteString(w, s); break;
            case float[] v: w.Write(9u); w.Write(6u); w.Write((ulong)v.Length); foreach (var f in v) w.Write(f); break;
            case int[] v: w.Write(9u); w.Write(5u); w.Write((ulong)v.Length); foreach (var i in v) w.Write(i); break;
            default: throw new ArgumentException($"GGUF metadata of type {value.GetType().Name} is not supported");
        }
    }
}
