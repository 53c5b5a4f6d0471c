namespace Nanoscale.Pipeline;

/// <summary>Progress of long work: which stage, which tensor, and how far (in <see cref="Unit"/>s).</summary>
public readonly record struct PipelineProgress(string Stage, string? Tensor, long Done, long Total, string Unit = "bytes");
