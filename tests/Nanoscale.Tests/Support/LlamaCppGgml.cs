using System.Runtime.InteropServices;

namespace Nanoscale.Tests.Support;

/// <summary>
/// ggml's quantizers and dequantizers (<c>ggml_quantize_chunk</c>, <c>dequantize_row_TYPE</c>) and its type table,
/// called in llama.cpp's native library from LLamaSharp's CPU backend: the independent implementation our ggml block
/// formats and GGUF files are checked against.
/// </summary>
internal sealed unsafe class LlamaCppGgml
{
    private readonly nint _library;
    private readonly delegate* unmanaged<int, float*, void*, long, long, long, float*, nuint> _quantizeChunk;
    private readonly delegate* unmanaged<int, nint> _typeName;
    private readonly delegate* unmanaged<int, long> _blockSize;
    private readonly delegate* unmanaged<int, nuint> _typeSize;

    private LlamaCppGgml(nint library)
    {
        _library = library;
        _quantizeChunk = (delegate* unmanaged<int, float*, void*, long, long, long, float*, nuint>)NativeLibrary.GetExport(library, "ggml_quantize_chunk");
        _typeName = (delegate* unmanaged<int, nint>)NativeLibrary.GetExport(library, "ggml_type_name");
        _blockSize = (delegate* unmanaged<int, long>)NativeLibrary.GetExport(library, "ggml_blck_size");
        _typeSize = (delegate* unmanaged<int, nuint>)NativeLibrary.GetExport(library, "ggml_type_size");
    }

    private static readonly Lazy<LlamaCppGgml> Instance = new(() => new LlamaCppGgml(NativeLibrary.Load(LibraryPath("libggml-base.so"))));

    public static LlamaCppGgml Load() => Instance.Value;

    /// <summary>A library of llama.cpp's CPU backend copied beside the tests (noavx build: runs on any x86-64).</summary>
    public static string LibraryPath(string file)
    {
        var path = Path.Combine(AppContext.BaseDirectory, "llamacpp", file);
        if (!File.Exists(path)) throw new FileNotFoundException($"llama.cpp's {file} was not copied to {path}");
        return path;
    }

    /// <summary>ggml's type id for <paramref name="name"/> (as <c>ggml_type_name</c> spells it).</summary>
    public int TypeId(string name)
    {
        for (int type = 0; type < 64; type++)
            if (Marshal.PtrToStringAnsi(_typeName(type)) == name) return type;
        throw new InvalidOperationException($"this llama.cpp build has no {name} type");
    }

    public string TypeName(int type) => Marshal.PtrToStringAnsi(_typeName(type)) ?? "";
    public long BlockSize(int type) => _blockSize(type);
    public long TypeSize(int type) => (long)_typeSize(type);

    /// <summary>Quantizes <paramref name="rows"/> rows of <paramref name="columns"/> (whole blocks) with ggml_quantize_chunk.</summary>
    public byte[] Quantize(string type, ReadOnlySpan<float> source, int rows, int columns)
    {
        int id = TypeId(type);
        long blockSize = BlockSize(id);
        if (columns % blockSize != 0) throw new ArgumentException($"ggml's {type} needs rows that are a multiple of {blockSize}");
        var blocks = new byte[rows * (columns / blockSize) * TypeSize(id)];
        fixed (float* src = source)
        fixed (byte* dst = blocks)
        {
            nuint written = _quantizeChunk(id, src, dst, 0, rows, columns, null);
            if ((long)written != blocks.Length) throw new InvalidOperationException($"ggml wrote {written} bytes, expected {blocks.Length}");
        }
        return blocks;
    }

    /// <summary>ggml's <c>dequantize_row_TYPE</c> on <paramref name="count"/> elements.</summary>
    public float[] Dequantize(string type, ReadOnlySpan<byte> blocks, int count)
    {
        var dequantize = (delegate* unmanaged<void*, float*, long, void>)NativeLibrary.GetExport(_library, $"dequantize_row_{type}");
        var values = new float[count];
        fixed (byte* src = blocks)
        fixed (float* dst = values)
            dequantize(src, dst, count);
        return values;
    }
}
