using Nanoscale.Codecs;
using Nanoscale.IO;

namespace Nanoscale.Pipeline;

/// <summary>What a compression run measured: the report of what was written and, unless skipped, each encoded
/// tensor's weight error decoded from the stored bytes.</summary>
public sealed record CompressionResult(CompressReport Report, IReadOnlyList<(string Name, ErrorMetrics Error)> Errors)
{
    /// <summary>The model's total error over the encoded tensors; null when nothing was measured.</summary>
    public ErrorMetrics? TotalError => Errors.Count == 0 ? null : Errors.Aggregate(ErrorMetrics.Zero, (a, e) => a + e.Error);
}

/// <summary>
/// The one compression run (SPEC §14): compress, reopen what was written, measure it. Every verb that compresses
/// (<c>compress</c>, <c>eval --format</c>, <c>sweep</c>, <c>demo</c>) goes through here, so bits per weight and error
/// always come from the stored bytes.
/// </summary>
public static class CompressionRun
{
    /// <summary>Compresses <paramref name="source"/> into <paramref name="output"/>, then, when
    /// <paramref name="measureError"/>, decodes every encoded tensor of the written file and compares it with the source.</summary>
    public static CompressionResult Run(ICheckpoint source, string output, CompressOptions options, bool measureError = true,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var report = Compressor.Compress(source, output, options, progress, cancellationToken);
        if (!measureError) return new CompressionResult(report, []);
        using var written = CompressedCheckpoint.Open(output);
        var errors = ErrorMetrics.Compare(source, written, cancellationToken, progress);
        return new CompressionResult(report, errors);
    }

    /// <summary>As <see cref="Run"/>, into a temporary checkpoint in <paramref name="workFolder"/> (default: the system's
    /// temporary folder) that is deleted when the returned handle is disposed.</summary>
    public static (CompressionResult Result, TemporaryFile File) RunTemporary(ICheckpoint source, string? workFolder, CompressOptions options,
        bool measureError = true, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        var file = TemporaryFile.In(workFolder, "nanoscale-work", ".safetensors");
        try
        {
            return (Run(source, file.Path, options, measureError, progress, cancellationToken), file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }
}
