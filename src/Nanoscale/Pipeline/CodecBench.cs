using System.Diagnostics;
using Nanoscale.IO;
using Nanoscale.Codecs;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>Throughput of one codec at one thread count, in GB/s of the source tensors' stored bytes.</summary>
public sealed record BenchResult(string Format, int Threads, long SourceBytes, long Weights, double EncodeGBps, double DecodeGBps, double BitsPerWeight);

/// <summary>
/// <c>bench</c>: encodes every codec-eligible tensor of a checkpoint through <see cref="ITensorCodec"/> (the same path
/// as <c>compress</c>), then decodes them by row tiles (the path the runtime uses), timing both. Each measurement is
/// the best of <c>repeats</c> runs after one untimed warm-up run, so JIT tiering and a busy machine disturb it less.
/// </summary>
public static class CodecBench
{
    public static BenchResult Run(ICheckpoint source, string format, int threads, int repeats = 3,
        TensorSelection? selection = null, string? workFolder = null, CancellationToken cancellationToken = default)
    {
        var codec = CodecRegistry.Create(format);
        var tensors = source.Tensors.Where((selection ?? TensorSelection.Default).Selects).ToList(); // the same tensors for every codec
        if (tensors.Count == 0) throw new InputException($"{source.Path} has no tensors the codec applies to");
        long sourceBytes = tensors.Sum(t => t.ByteLength), weights = tensors.Sum(t => t.ElementCount);
        var options = new EncodeOptions { Parallelism = new Parallelism(threads) };

        // Encode: the codec parallelises inside a tensor with its own kernels.
        double encodeSeconds = double.MaxValue;
        var encoded = new List<(TensorInfo Tensor, EncodedTensor Encoded)>();
        for (int r = -1; r < repeats; r++) // run -1 warms the JIT up and is not timed
        {
            encoded.Clear();
            var clock = Stopwatch.StartNew();
            foreach (var t in tensors)
            {
                using var view = source.Map(t);
                encoded.Add((t, codec.Encode(view, options, cancellationToken)));
            }
            if (r >= 0) encodeSeconds = Math.Min(encodeSeconds, clock.Elapsed.TotalSeconds);
        }
        long storedBytes = encoded.Sum(e => e.Encoded.Parts.Sum(p => (long)p.Data.Length));

        // Decode from a real container, as eval does: row tiles spread over the threads.
        using var file = TemporaryFile.In(workFolder, "nanoscale-bench", ".safetensors");
        string path = file.Path;
        EncodedContainer.Write(path, encoded.Select(e => new EncodedContainer.Item(e.Tensor.Name, e.Tensor.DType, e.Tensor.Shape, codec.Spec, e.Encoded)),
            cancellationToken);
        encoded.Clear();

        using var container = LogicalCheckpoint.Open(path);
        double decodeSeconds = double.MaxValue;
        for (int r = -1; r < repeats; r++)
        {
            var clock = Stopwatch.StartNew();
            foreach (var tensor in container.Tensors)
            {
                using var decoder = container.OpenDecoder(tensor);
                var stored = tensor.Encoded!;
                int columns = checked((int)stored.Columns);
                int rowsPerTile = Math.Max(1, (1 << 16) / Math.Max(1, columns));
                int tiles = (int)((stored.Rows + rowsPerTile - 1) / rowsPerTile);
                options.Parallelism.ForEach(tiles, () => new float[rowsPerTile * columns], (tile, buffer) =>
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    long first = (long)tile * rowsPerTile;
                    int count = (int)Math.Min(rowsPerTile, stored.Rows - first);
                    decoder.ReadRows(first, count, buffer.AsSpan(0, count * columns));
                });
            }
            if (r >= 0) decodeSeconds = Math.Min(decodeSeconds, clock.Elapsed.TotalSeconds);
        }
        return new BenchResult(codec.Spec, threads, sourceBytes, weights, sourceBytes / encodeSeconds / 1e9,
            sourceBytes / decodeSeconds / 1e9, 8.0 * storedBytes / weights);
    }
}
