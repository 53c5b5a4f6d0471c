using Nanoscale.IO;
using Nanoscale.Tensors;
using Nanoscale.Codecs;

namespace Nanoscale.Pipeline;

public sealed record InspectOptions
{
    public TensorSelection Selection { get; init; } = TensorSelection.Default;

    /// <summary>Threads used for statistics (default: every core).</summary>
    public Parallelism Parallelism { get; init; }

    /// <summary>Skip the statistics (a header-only listing, fast on huge checkpoints).</summary>
    public bool SkipStatistics { get; init; }

    /// <summary>Formats whose checkpoint size is estimated (casts and block formats; their exact stored size).</summary>
    public IReadOnlyList<string> EstimateFormats { get; init; } = ["bf16", "mxfp8", "mxfp6", "mxfp4", "nvfp4"];
}

/// <summary>
/// One logical tensor. For a tensor stored encoded in a compressed checkpoint, <see cref="Codec"/> is its spec string,
/// <see cref="DType"/> and <see cref="Shape"/> are the original ones and <see cref="Bytes"/> counts all its stored parts.
/// </summary>
public sealed record TensorReport(string Name, DType DType, long[] Shape, long Bytes, bool Selected, TensorStatistics? Statistics,
    string? Codec = null)
{
    public double BitsPerWeight => 8.0 * Bytes / Math.Max(1, TensorShape.ElementCount(Shape));
}

/// <summary>Checkpoint size if the selected tensors were stored in one format, the rest unchanged.</summary>
public sealed record SizeEstimate(string Format, double BitsPerWeight, long Bytes);

public sealed record InspectReport(
    string Path, CheckpointKind Kind, ModelConfig? Config, IReadOnlyList<KeyValuePair<string, string>> Metadata,
    IReadOnlyList<TensorReport> Tensors, long Parameters, long Bytes, long SelectedParameters, long SelectedBytes,
    IReadOnlyList<SizeEstimate> Estimates);

/// <summary>Walks a checkpoint tensor by tensor and reports shapes, statistics and size estimates (the inspect verb).</summary>
public static class Inspector
{
    public static InspectReport Inspect(ICheckpoint checkpoint, InspectOptions? options = null,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new InspectOptions();
        long total = checkpoint.Tensors.Sum(t => t.ByteLength), done = 0;
        var reports = new List<TensorReport>(checkpoint.Tensors.Count);

        // In a compressed checkpoint, an encoded tensor is reported once, at its first part, as the tensor it encodes.
        // (A Hugging Face layout is seen through a view naming its arrays as parts; the caller still owns the checkpoint.)
        (checkpoint, var entries) = LogicalCheckpoint.Layout(checkpoint);
        var owners = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, entry) in entries)
            foreach (var part in entry.Parts) owners[$"{name}.{part}"] = name;
        var reported = new HashSet<string>(StringComparer.Ordinal);

        foreach (var tensor in checkpoint.Tensors)
        {
            cancellationToken.ThrowIfCancellationRequested();
            progress?.Report(new PipelineProgress("inspect", tensor.Name, done, total));
            done += tensor.ByteLength;
            if (owners.TryGetValue(tensor.Name, out var owner))
            {
                if (!reported.Add(owner)) continue;
                var entry = entries.First(e => e.Key == owner).Value;
                long stored = entry.Parts.Sum(p => checkpoint.Find($"{owner}.{p}")?.ByteLength ?? 0);
                reports.Add(new TensorReport(owner, entry.DType, entry.Shape, stored, false, null, entry.Codec));
                continue;
            }
            TensorStatistics? statistics = null;
            if (!options.SkipStatistics && tensor.ElementCount > 0 && tensor.DType != DType.BOOL)
            {
                using var view = checkpoint.Map(tensor);
                statistics = TensorStatistics.Compute(view, options.Parallelism, cancellationToken);
            }
            reports.Add(new TensorReport(tensor.Name, tensor.DType, tensor.Shape, tensor.ByteLength, options.Selection.Selects(tensor), statistics));
        }
        progress?.Report(new PipelineProgress("inspect", null, total, total));

        // Estimates are for plain checkpoints; a compressed one already has its size.
        var selected = entries.Count > 0 ? [] : checkpoint.Tensors.Where(options.Selection.Selects).ToList();
        long unselectedBytes = total - selected.Sum(t => t.ByteLength);
        long weights = selected.Sum(t => t.ElementCount);
        var estimates = new List<SizeEstimate>();
        foreach (var format in entries.Count > 0 ? [] : options.EstimateFormats)
        {
            var codec = Codecs.CodecRegistry.Create(format);
            Func<TensorInfo, long>? stored = codec switch
            {
                Codecs.CastCodec cast => t => t.ElementCount * cast.Target.ElementSize(),
                Codecs.BlockTensorCodec { EntropyCoded: false } block =>
                    t => (long)Math.Round(block.Codec.BitsPerWeight(t.Rows, t.Columns) * t.ElementCount / 8), // whole bytes by construction
                _ => null, // coded sizes depend on the data: measure them with `sweep`
            };
            if (stored is null) throw new InvalidOptionException("InspectOptions.EstimateFormats", $"{format}: only casts and block formats have a size estimate; use sweep to measure {format}");
            long codedBytes = selected.Sum(stored);
            estimates.Add(new SizeEstimate(codec.Spec, weights == 0 ? 0 : 8.0 * codedBytes / weights, unselectedBytes + codedBytes));
        }
        return new InspectReport(checkpoint.Path, checkpoint.Kind, checkpoint.Config ?? CompressedLayout.ReadConfig(checkpoint), checkpoint.Metadata,
            reports, reports.Sum(t => TensorShape.ElementCount(t.Shape)), total, selected.Sum(t => t.ElementCount), selected.Sum(t => t.ByteLength), estimates);
    }
}
