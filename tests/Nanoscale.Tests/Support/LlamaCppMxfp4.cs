using System.Runtime.InteropServices;

namespace Nanoscale.Tests.Support;

/// <summary>
/// llama.cpp's MXFP4 (ggml's <c>block_mxfp4</c>: one E8M0 byte, then 16 bytes of E2M1 codes with element j in the
/// low nibble of byte j and element j+16 in the high nibble), called in its native library from LLamaSharp's CPU
/// backend. Used to cross-check our MXFP4 against an independent implementation.
/// </summary>
internal sealed unsafe class LlamaCppMxfp4
{
    public const int BlockSize = 32;
    public const int BytesPerBlock = 17;

    private readonly delegate* unmanaged<int, float*, void*, long, long, long, float*, nuint> _quantizeChunk;
    private readonly delegate* unmanaged<void*, float*, long, void> _dequantizeRow;
    private readonly int _mxfp4Type;

    private LlamaCppMxfp4(nint library)
    {
        _quantizeChunk = (delegate* unmanaged<int, float*, void*, long, long, long, float*, nuint>)NativeLibrary.GetExport(library, "ggml_quantize_chunk");
        _dequantizeRow = (delegate* unmanaged<void*, float*, long, void>)NativeLibrary.GetExport(library, "dequantize_row_mxfp4");
        var typeName = (delegate* unmanaged<int, nint>)NativeLibrary.GetExport(library, "ggml_type_name");
        _mxfp4Type = -1;
        for (int type = 0; type < 64 && _mxfp4Type < 0; type++)
            if (Marshal.PtrToStringAnsi(typeName(type)) == "mxfp4") _mxfp4Type = type;
        if (_mxfp4Type < 0) throw new InvalidOperationException("this llama.cpp build has no mxfp4 type");
    }

    private static readonly Lazy<LlamaCppMxfp4> Instance = new(() =>
    {
        var path = Path.Combine(AppContext.BaseDirectory, "llamacpp", "libggml-base.so");
        if (!File.Exists(path)) throw new FileNotFoundException($"llama.cpp's libggml-base.so was not copied to {path}");
        return new LlamaCppMxfp4(NativeLibrary.Load(path));
    });

    public static LlamaCppMxfp4 Load() => Instance.Value;

    /// <summary>Quantizes <paramref name="rows"/> rows of <paramref name="columns"/> (a multiple of 32) with ggml_quantize_chunk.</summary>
    public byte[] Quantize(ReadOnlySpan<float> source, int rows, int columns)
    {
        if (columns % BlockSize != 0) throw new ArgumentException("ggml needs rows that are a multiple of 32");
        var blocks = new byte[rows * (columns / BlockSize) * BytesPerBlock];
        fixed (float* src = source)
        fixed (byte* dst = blocks)
        {
            nuint written = _quantizeChunk(_mxfp4Type, src, dst, 0, rows, columns, null);
            if ((long)written != blocks.Length) throw new InvalidOperationException($"ggml wrote {written} bytes, expected {blocks.Length}");
        }
        return blocks;
    }

    public float[] Dequantize(ReadOnlySpan<byte> blocks, int count)
    {
        var values = new float[count];
        fixed (byte* src = blocks)
        fixed (float* dst = values)
            _dequantizeRow(src, dst, count);
        return values;
    }
}
