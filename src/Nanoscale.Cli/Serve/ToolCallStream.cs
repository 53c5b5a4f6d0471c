namespace Nanoscale.Cli.Serve;

/// <summary>
/// One choice's streamed text when tools are offered: text is passed on as it comes until it may be the start of a
/// call, which is held until the reply is done (the reply's <c>ToolCalls</c> then decide). A reply that starts with
/// <c>{</c> or <c>&lt;|python_tag|&gt;</c> (Llama 3.x's calls) is held whole; otherwise text goes out up to a call's
/// marker (<see cref="Nanoscale.Pipeline.CompletionService.ToolCallMarkers"/>: <c>&lt;tool_call&gt;</c>, <c>[TOOL_CALLS]</c>, …),
/// less a tail that could begin one and trailing whitespace, so what was sent equals the content the parser keeps
/// before the calls (<see cref="Nanoscale.Pipeline.ToolCallParser"/>).
/// </summary>
internal sealed class ToolCallStream
{
    private const string PythonTag = "<|python_tag|>";
    private static readonly IReadOnlyList<string> Tags = Nanoscale.Pipeline.CompletionService.ToolCallMarkers;

    private readonly System.Text.StringBuilder _held = new();
    private int _sent;
    private bool _text; // decided: the reply starts as text
    private bool _calling; // a tag was seen: nothing more goes out

    /// <summary>The text that may go out now, given the next piece (possibly empty).</summary>
    public string Accept(string piece)
    {
        _held.Append(piece);
        if (_calling) return "";
        var all = _held.ToString();
        if (!_text)
        {
            var start = all.TrimStart();
            if (start.Length == 0 || start.StartsWith('{') || PythonTag.StartsWith(start, StringComparison.Ordinal)
                || start.StartsWith(PythonTag, StringComparison.Ordinal) || Tags.Any(t => t.StartsWith(start, StringComparison.Ordinal)))
                return "";
            _text = true;
        }
        int tag = -1, partial = 0;
        foreach (var t in Tags)
        {
            if (all.IndexOf(t, _sent, StringComparison.Ordinal) is var at and >= 0 && (tag < 0 || at < tag)) tag = at;
            partial = Math.Max(partial, PartialTag(all, t));
        }
        int end = tag >= 0 ? tag : all.Length - partial;
        if (tag >= 0) _calling = true;
        while (end > _sent && char.IsWhiteSpace(all[end - 1])) end--;
        if (end <= _sent) return "";
        var ready = all[_sent..end];
        _sent = end;
        return ready;
    }

    /// <summary>What is left to send when the reply turned out to be text, not calls.</summary>
    public string Rest()
    {
        var all = _held.ToString();
        var rest = all[_sent..];
        _sent = all.Length;
        return rest;
    }

    /// <summary>The length of the longest end of <paramref name="text"/> that begins <paramref name="tag"/> (held back
    /// until the next piece tells whether the tag follows; <see cref="ReasoningStream"/> holds its tags so too).</summary>
    internal static int PartialTag(string text, string tag)
    {
        for (int n = Math.Min(tag.Length - 1, text.Length); n > 0; n--)
            if (text.EndsWith(tag[..n], StringComparison.Ordinal)) return n;
        return 0;
    }
}
