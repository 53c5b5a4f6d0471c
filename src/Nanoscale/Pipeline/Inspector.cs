using Nanoscale.IO;

namespace Nanoscale.Pipeline;

public sealed record InspectOptions
{
    public TensorSelection Selection { get; init; } = TensorSelection.Default;

    /// <summary>Threads used for statistics; 0 means all cores.</summary>
    public int MaxDegreeOfParallelism { get; init; }

    /// <summary>Skip the statistics (a header-only listing, fast on huge checkpoints).</summary>
    public bool SkipStatistics { get; init; }
}

public sealed record TensorReport(string Name, DType DType, long[] Shape, long Bytes, bool Selected, TensorStatistics? Statistics);

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
        foreach (var tensor in checkpoint.Tensors)
        {
            cancellationToken.ThrowIfCancellationRequested();
            progress?.Report(new PipelineProgress("inspect", tensor.Name, done, total));
            TensorStatistics? statistics = null;
            if (!options.SkipStatistics && tensor.ElementCount > 0 && tensor.DType != DType.BOOL)
            {
                using var view = checkpoint.Map(tensor);
                statistics = TensorStatistics.Compute(view, options.MaxDegreeOfParallelism, cancellationToken);
            }
            reports.Add(new TensorReport(tensor.Name, tensor.DType, tensor.Shape, tensor.ByteLength, options.Selection.Selects(tensor), statistics));
            done += tensor.ByteLength;
        }
        progress?.Report(new PipelineProgress("inspect", null, total, total));

        var selected = checkpoint.Tensors.Where(options.Selection.Selects).ToList();
        long unselectedBytes = total - selected.Sum(t => t.ByteLength);
        var estimates = FormatFootprint.Known
            .Select(f =>
            {
                long bytes = unselectedBytes + selected.Sum(t => f.Bytes(t.Rows, t.Columns));
                long weights = selected.Sum(t => t.ElementCount);
                double bpw = weights == 0 ? 0 : 8.0 * selected.Sum(t => f.Bytes(t.Rows, t.Columns)) / weights;
                return new SizeEstimate(f.Name, bpw, bytes);
            })
            .ToList();
        return new InspectReport(checkpoint.Path, checkpoint.Kind, checkpoint.Config, checkpoint.Metadata, reports,
            checkpoint.Tensors.Sum(t => t.ElementCount), total, selected.Sum(t => t.ElementCount), selected.Sum(t => t.ByteLength), estimates);
    }
}

/// <summary>
/// Stored size of a block format: per row, ceil(cols / blockSize) blocks of element codes and a scale, plus
/// per-tensor data. Short final blocks are stored padded (SPEC §1), so their padding counts.
/// </summary>
public sealed record FormatFootprint(string Name, int BlockSize, int ElementBits, int ScaleBits, int TensorBits)
{
    public static readonly IReadOnlyList<FormatFootprint> Known =
    [
        new("bf16", 1, 16, 0, 0),
        new("mxfp8", 32, 8, 8, 0),
        new("mxfp6", 32, 6, 8, 0),
        new("mxfp4", 32, 4, 8, 0),
        new("nvfp4", 16, 4, 8, 32),
    ];

    public long Bytes(long rows, long cols)
    {
        long blocks = rows * ((cols + BlockSize - 1) / BlockSize);
        return (blocks * ((long)BlockSize * ElementBits + ScaleBits) + TensorBits + 7) / 8;
    }
}
