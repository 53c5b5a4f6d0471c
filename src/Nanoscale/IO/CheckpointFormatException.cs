using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// A checkpoint (or coded stream) is malformed. The message always says where: the file, the tensor or header
/// field, and the byte offset, then what was expected and what was found (STYLE §5, SPEC §15).
/// </summary>
public sealed class CheckpointFormatException : NanoscaleException
{
    public CheckpointFormatException(string file, string? where, long? offset, string problem, Exception? inner = null)
        : base(Format(file, where, offset, problem), inner: inner)
    {
        File = file;
        Where = where;
        Offset = offset;
        Problem = problem;
    }

    public string File { get; }

    /// <summary>The tensor name or header field at fault, when there is one.</summary>
    public string? Where { get; }

    /// <summary>Absolute byte offset in <see cref="File"/>, when known.</summary>
    public long? Offset { get; }

    public string Problem { get; }

    private static string Format(string file, string? where, long? offset, string problem)
    {
        var at = where is null ? "" : $", {where}";
        var off = offset is null ? "" : $", byte offset {offset}";
        return $"{file}{at}{off}: {problem}";
    }
}
