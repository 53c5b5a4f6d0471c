using Nanoscale.IO;
using Nanoscale.Tensors;
using Nanoscale.Codecs;

namespace Nanoscale.Pipeline;

public sealed record DecompressOptions
{
    /// <summary>Dtype of decoded tensors; null keeps each tensor's original dtype (bit-exact for lossless codecs).</summary>
    public DType? DType { get; init; }

    /// <summary>Allow the output inside the input's model folder (<see cref="OutputGuard"/>; its own files stay refused).</summary>
    public bool Force { get; init; }

    /// <summary>A folder output's shard size limit (default 5 GB).</summary>
    public long MaxShardBytes { get; init; } = CheckpointWriter.DefaultMaxShardBytes;
}

/// <summary>
/// Writes a plain checkpoint from a compressed one: decoded tensors under their original names, in order, with the
/// source's metadata; into a model folder (<see cref="ModelFolder"/>: shards, <c>config.json</c> without its
/// <c>quantization_config</c>, tokenizer) unless the output is named <c>*.safetensors</c>. For a lossless checkpoint of a
/// single safetensors file the result (the file, or the folder's <c>model.safetensors</c>) is that file byte for byte.
/// </summary>
public static class Decompressor
{
    /// <summary>What <see cref="Decompress(string, string, DecompressOptions?, IProgress{PipelineProgress}?, CancellationToken)"/> wrote.</summary>
    public sealed record Result(string Output, long Bytes, int Tensors, string? Format);

    /// <summary>The <c>decompress</c> verb: opens <paramref name="inputPath"/> (compressed or plain) and writes it plain.</summary>
    /// <exception cref="NanoscaleException">A bad input or option; the output would overwrite the input.</exception>
    public static Result Decompress(string inputPath, string output, DecompressOptions? options = null,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        using var input = LogicalCheckpoint.Open(inputPath);
        output = Decompress(input, output, options, progress, cancellationToken);
        return new Result(output, ModelFolder.SizeOf(output), input.Tensors.Count, input.Format);
    }

    /// <summary>Writes <paramref name="input"/> plain into <paramref name="output"/> and returns its full path.</summary>
    public static string Decompress(LogicalCheckpoint input, string output, DecompressOptions? options = null,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new DecompressOptions();
        output = ModelFolder.CheckOutput(output, input.Container, null, options.Force);
        if (options.DType is { } d && d is not (DType.F32 or DType.BF16 or DType.F16))
            throw new InvalidOptionException("DecompressOptions.DType", $"must be F32, BF16 or F16, not {d}");
        using var writer = ModelFolder.Writer(output, options.MaxShardBytes).AddMetadata(input.SourceMetadata);
        long total = input.Tensors.Count, done = 0;
        foreach (var tensor in input.Tensors)
        {
            var target = options.DType is { } t && tensor.DType.IsFloat() ? t : tensor.DType;
            if (tensor.Encoded is null)
            {
                var plain = tensor.Plain!;
                if (target == plain.DType)
                    writer.Add(plain.Name, plain.DType, plain.Shape, stream => SafetensorsWriter.CopyTensor(input.Container, plain, stream));
                else
                    writer.Add(plain.Name, target, plain.Shape, stream => Convert(input.Container, plain, target, stream));
            }
            else
            {
                var current = tensor;
                writer.Add(tensor.Name, target, tensor.Shape, stream =>
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    progress?.Report(new PipelineProgress("decompress", current.Name, done++, total, "tensors"));
                    using var decoder = input.OpenDecoder(current);
                    if (target == current.DType) decoder.ReadOriginal(stream);
                    else Codecs.Codec.WriteAsOriginal(decoder, stream, target);
                });
            }
        }
        ModelFolder.AddCompanions(writer, input.Container, input.Config,
            options.DType ?? ModelFolder.MainDType(input.Tensors.Select(t => (t.DType, t.ElementCount))), quantization: null, tokenizerPath: null);
        writer.Commit(cancellationToken);
        progress?.Report(new PipelineProgress("decompress", null, total, total, "tensors"));
        return output;
    }

    private static void Convert(ICheckpoint container, TensorInfo tensor, DType target, Stream stream)
    {
        using var view = container.Map(tensor);
        const int chunk = 1 << 20;
        var values = new float[chunk];
        var bytes = new byte[chunk * target.ElementSize()];
        for (long first = 0; first < tensor.ElementCount; first += chunk)
        {
            var span = values.AsSpan(0, (int)Math.Min(chunk, tensor.ElementCount - first));
            view.ReadFloats(first, span);
            var raw = bytes.AsSpan(0, span.Length * target.ElementSize());
            TensorData.FromFloat(span, target, raw);
            stream.Write(raw);
        }
    }
}
