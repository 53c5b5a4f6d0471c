using BenchmarkDotNet.Attributes;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Tests.Support;
using Nanoscale.Tensors;
using Nanoscale.Codecs;

namespace Nanoscale.Benchmarks.Formats;

/// <summary>
/// MXFP4 on the real GPT-2 attention weights (all 48 BF16 matrices, 28.3 M elements, 56.6 MB of bf16), Nanoscale
/// beside llama.cpp (its <c>ggml_quantize_chunk</c> and <c>dequantize_row_mxfp4</c>, single-threaded by design).
/// GB/s = 56.6e6 bytes of bf16 input / mean time.
/// </summary>
[SimpleJob(launchCount: 1, warmupCount: 2, iterationCount: 6)]
public class LlamaCppMxfp4Benchmarks
{
    private const int Cols = 768;
    private float[] _source = null!, _decoded = null!;
    private byte[] _blocks = null!, _scales = null!, _ggml = null!;
    private int _rows;
    private IBlockCodec _codec = null!;
    private LlamaCppGgml _llama = null!;
    private CodecOptions _options = CodecOptions.Default;

    [Params(1, 2)]
    public int Threads { get; set; } = 1;

    [GlobalSetup]
    public void Setup()
    {
        using var file = SafetensorsFile.Open(SharedData.Gpt2Attn);
        var weights = file.Tensors.Where(t => t.DType == DType.BF16).ToList();
        _rows = weights.Sum(t => (int)t.Rows);
        _source = new float[_rows * Cols];
        int offset = 0;
        foreach (var t in weights)
        {
            using var view = file.Map(t);
            view.ReadFloats(0, _source.AsSpan(offset, (int)t.ElementCount));
            offset += (int)t.ElementCount;
        }
        _codec = CodecRegistry.CreateBlockCodec("mxfp4");
        _options = new CodecOptions { Parallelism = new(Threads) };
        _blocks = new byte[_rows * (Cols / 32) * _codec.BytesPerBlock];
        _scales = new byte[_rows * (Cols / 32)];
        _decoded = new float[_source.Length];
        _llama = LlamaCppGgml.Load();
        _ggml = _llama.Quantize("mxfp4", _source, _rows, Cols);
        _codec.Quantize(_source, _rows, Cols, [], _options, 0, _blocks, _scales);
    }

    [Benchmark(Baseline = true)]
    public void NanoscaleQuantize() => _codec.Quantize(_source, _rows, Cols, [], _options, 0, _blocks, _scales);

    [Benchmark]
    public byte[] LlamaCppQuantize() => _llama.Quantize("mxfp4", _source, _rows, Cols);

    [Benchmark]
    public void NanoscaleDequantize() => _codec.Dequantize(_blocks, _scales, [], _rows, Cols, _options, _decoded);

    [Benchmark]
    public float[] LlamaCppDequantize() => _llama.Dequantize("mxfp4", _ggml, _source.Length);
}
