namespace Nanoscale.Pipeline.Jinja;

/// <summary>A template that cannot be parsed or rendered: the message names the line and column of the template where
/// it went wrong. <see cref="Raised"/> marks the template's own <c>raise_exception(...)</c>, whose message is meant for
/// the user (e.g. "Conversation roles must alternate user/assistant").</summary>
internal sealed class JinjaException(string message, int line, int column, bool raised = false)
    : Exception(line > 0 ? $"{message} (template line {line}, column {column})" : message)
{
    public string Reason { get; } = message;

    public int Line { get; } = line;

    public int Column { get; } = column;

    public bool Raised { get; } = raised;
}
