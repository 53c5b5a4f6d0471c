using System.Text;

namespace Nanoscale.Cli.Serve;

/// <summary>
/// A streamed reply's function calls as they are written, for OpenAI's incremental <c>tool_calls</c> deltas: a call's
/// id and name once its name is whole, then its arguments piece by piece as the model writes them. It reads the two
/// forms <see cref="Nanoscale.Pipeline.ToolCallParser"/> reads, written in their usual order — Hermes/Qwen
/// <c>&lt;tool_call&gt;{"name": …, "arguments": {…}}</c> blocks, or Llama 3.x's reply as one
/// <c>{"name": …, "parameters": {…}}</c> (after <c>&lt;|python_tag|&gt;</c> when it writes one) — with any whitespace;
/// arguments are streamed only when they are an object, exactly its text (what the parsed call's <c>arguments</c> is).
/// Anything else — keys in another order, arguments as a JSON string, an escaped name — stops the streaming
/// (<see cref="Diverged"/>); the server then sends whole the calls it did not stream.
/// </summary>
internal sealed class ToolCallDeltas
{
    private const string Tag = "<tool_call>", PythonTag = "<|python_tag|>";

    /// <summary>One delta: a call's start (<see cref="Id"/> and <see cref="Name"/>, no arguments yet) or a piece of its
    /// arguments.</summary>
    public sealed record Delta(int Index, string? Id, string? Name, string Arguments);

    private readonly StringBuilder _text = new();
    private bool? _llama;          // the form, once the reply's first characters tell
    private int _callStart = -1;   // where the call being read begins (its tag, or the reply's start), or −1
    private int _scan = -1;        // in a call's arguments: the next character to stream, or −1 before them
    private int _depth;
    private bool _inString, _escape;
    private int _searchFrom;       // Hermes: where the next tag may begin
    private readonly List<(string Id, string Name, StringBuilder Arguments)> _calls = [];

    /// <summary>Where the first call begun so far starts in the reply (its tag, or the reply's start), or null.</summary>
    public int? FirstCall { get; private set; }

    /// <summary>Whether the reply left the shape this class streams (what was sent stands).</summary>
    public bool Diverged { get; private set; }

    /// <summary>The calls begun so far: id, name and the arguments streamed.</summary>
    public IEnumerable<(string Id, string Name, string Arguments)> Calls => _calls.Select(c => (c.Id, c.Name, c.Arguments.ToString()));

    /// <summary>The deltas <paramref name="piece"/> completes.</summary>
    public IReadOnlyList<Delta> Accept(string piece)
    {
        _text.Append(piece);
        var deltas = new List<Delta>();
        while (!Diverged && Advance(deltas)) { }
        return deltas;
    }

    /// <summary>One move forward; false when more text is needed.</summary>
    private bool Advance(List<Delta> deltas)
    {
        var text = _text.ToString();
        if (_llama is null)
        {
            var start = text.TrimStart();
            if (start.Length == 0 || PythonTag.StartsWith(start, StringComparison.Ordinal) && start.Length < PythonTag.Length) return false;
            _llama = start.StartsWith('{') || start.StartsWith(PythonTag, StringComparison.Ordinal);
            if (_llama.Value) _callStart = 0;
        }
        if (_callStart < 0)
        {
            if (_llama.Value) return false; // one call only
            int tag = text.IndexOf(Tag, _searchFrom, StringComparison.Ordinal);
            if (tag < 0) return false;
            _callStart = tag;
        }
        if (_scan < 0)
        {
            var (status, name, arguments) = Header(text, _callStart, _llama.Value);
            if (status == Read.More) return false;
            if (status == Read.Failed)
            {
                Diverged = true;
                return false;
            }
            var id = Nanoscale.Pipeline.ToolCall.NewId();
            _calls.Add((id, name!, new StringBuilder()));
            FirstCall ??= _callStart;
            deltas.Add(new Delta(_calls.Count - 1, id, name, ""));
            (_scan, _depth, _inString, _escape) = (arguments, 0, false, false);
        }
        // The arguments object, up to its closing brace.
        int from = _scan;
        while (_scan < text.Length)
        {
            char c = text[_scan++];
            if (_inString)
            {
                if (_escape) _escape = false;
                else if (c == '\\') _escape = true;
                else if (c == '"') _inString = false;
            }
            else if (c == '"') _inString = true;
            else if (c is '{' or '[') _depth++;
            else if (c is '}' or ']' && --_depth == 0) break;
        }
        if (_scan > from)
        {
            var piece = text[from.._scan];
            _calls[^1].Arguments.Append(piece);
            deltas.Add(new Delta(_calls.Count - 1, null, null, piece));
        }
        if (_depth > 0 || _inString || _scan == from) return false;
        // The call's object is whole: the next call (Hermes) begins at a later tag.
        (_searchFrom, _callStart, _scan) = (_scan, -1, -1);
        return true;
    }

    private enum Read { Done, More, Failed }

    /// <summary>A call's beginning from <paramref name="at"/>: [tag or python tag] <c>{"name": "NAME", "arguments": </c>
    /// up to the arguments' opening brace (any whitespace between).</summary>
    private static (Read Status, string? Name, int Arguments) Header(string text, int at, bool llama)
    {
        int i = at;
        Read Literal(string s)
        {
            foreach (char c in s)
            {
                if (i == text.Length) return Read.More;
                if (text[i++] != c) return Read.Failed;
            }
            return Read.Done;
        }
        bool Blank()
        {
            while (i < text.Length && char.IsWhiteSpace(text[i])) i++;
            return i < text.Length;
        }
        if (!Blank()) return (Read.More, null, 0);
        if (!llama || text[i] == '<')
        {
            var tag = Literal(llama ? PythonTag : Tag);
            if (tag != Read.Done) return (tag, null, 0);
        }
        foreach (var step in (string[])["{", "\"name\"", ":", "\""])
        {
            if (!Blank()) return (Read.More, null, 0);
            var read = Literal(step);
            if (read != Read.Done) return (read, null, 0);
        }
        int nameStart = i;
        while (i < text.Length && text[i] != '"')
            if (text[i++] == '\\') return (Read.Failed, null, 0);
        if (i == text.Length) return (Read.More, null, 0);
        var name = text[nameStart..i++];
        if (!Blank()) return (Read.More, null, 0);
        if (Literal(",") is var comma && comma != Read.Done) return (comma, null, 0);
        if (!Blank()) return (Read.More, null, 0);
        if (Literal("\"") is var quote && quote != Read.Done) return (quote, null, 0);
        if (i == text.Length) return (Read.More, null, 0);
        var key = text[i] == 'p' ? "parameters\"" : "arguments\"";
        if (Literal(key) is var rest && rest != Read.Done) return (rest, null, 0);
        if (!Blank()) return (Read.More, null, 0);
        if (Literal(":") is var colon && colon != Read.Done) return (colon, null, 0);
        if (!Blank()) return (Read.More, null, 0);
        return text[i] == '{' ? (Read.Done, name, i) : (Read.Failed, null, 0);
    }
}
