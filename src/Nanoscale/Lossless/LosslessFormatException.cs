using Nanoscale.Tensors;

namespace Nanoscale.Lossless;

/// <summary>
/// A lossless stream is corrupt or does not match what the caller expects. The message says where: the tensor
/// (when the caller named it), the chunk index, and the byte offset within the coded stream (STYLE §5, SPEC §15).
/// The container layer wraps it in a <c>CheckpointFormatException</c> that adds the file.
/// </summary>
public sealed class LosslessFormatException : NanoscaleException
{
    public LosslessFormatException(string? tensorName, int? chunkIndex, long offset, string problem)
        : base(Format(tensorName, chunkIndex, offset, problem))
    {
        TensorName = tensorName;
        ChunkIndex = chunkIndex;
        Offset = offset;
        Problem = problem;
    }

    /// <summary>The tensor name the caller passed, if any.</summary>
    public string? TensorName { get; }

    /// <summary>Index of the damaged chunk, or null when the stream header or directory is at fault.</summary>
    public int? ChunkIndex { get; }

    /// <summary>Byte offset within the coded stream where the problem was found.</summary>
    public long Offset { get; }

    public string Problem { get; }

    private static string Format(string? tensorName, int? chunkIndex, long offset, string problem)
    {
        var tensor = tensorName is null ? "lossless stream" : $"tensor '{tensorName}'";
        var chunk = chunkIndex is null ? "header" : $"chunk {chunkIndex}";
        return $"{tensor}, {chunk}, byte offset {offset} of the coded stream: {problem}";
    }
}
