namespace Nanoscale.Cli.Serve;

/// <summary>
/// Splits a thinking model's reply (Qwen3, DeepSeek-R1: <c>&lt;think&gt;…&lt;/think&gt;</c> before the answer) into
/// <c>reasoning_content</c> and <c>content</c>, as vLLM's and llama.cpp's servers do, whole or piece by piece while it
/// streams: a reply that opens with <c>&lt;think&gt;</c> is reasoning up to <c>&lt;/think&gt;</c>, then answer (the
/// newlines after the closing tag dropped); a tail that could begin either tag is held until the next piece. A reply
/// that does not open with the tag is all answer — unless the template opened the block in the prompt itself
/// (the chat template's <c>OpensReasoning</c>: DeepSeek-R1's), when the reply begins as reasoning.
/// </summary>
/// <param name="insideReasoning">Whether the prompt opened the reasoning block (the reply begins inside it).</param>
internal sealed class ReasoningStream(bool insideReasoning = false)
{
    private const string Open = "<think>", Close = "</think>";

    private readonly System.Text.StringBuilder _held = new();
    private int _taken; // characters of _held handed out, or dropped as tags and separators
    private State _state = insideReasoning ? State.Reasoning : State.Undecided;
    private bool _answering; // some answer text went out (newlines after the closing tag are dropped before it)

    private enum State { Undecided, Reasoning, Answer }

    /// <summary>Whether the reply opened with a reasoning block (or began inside one the prompt opened).</summary>
    public bool Thought { get; private set; } = insideReasoning;

    /// <summary>The reasoning and the answer text that may go out now, given the next piece.</summary>
    public (string Reasoning, string Answer) Accept(string piece)
    {
        _held.Append(piece);
        return Advance(final: false);
    }

    /// <summary>Whatever is still held, at the end of the reply.</summary>
    public (string Reasoning, string Answer) Finish() => Advance(final: true);

    /// <summary>A whole reply's reasoning (null when it has none) and answer.</summary>
    public static (string? Reasoning, string Answer) Split(string reply, bool insideReasoning = false)
    {
        var stream = new ReasoningStream(insideReasoning);
        var (r1, a1) = stream.Accept(reply);
        var (r2, a2) = stream.Finish();
        return (stream.Thought ? r1 + r2 : null, a1 + a2);
    }

    private (string, string) Advance(bool final)
    {
        var all = _held.ToString();
        var reasoning = "";
        if (_state == State.Undecided)
        {
            var start = all[_taken..].TrimStart();
            if (!final && Open.StartsWith(start, StringComparison.Ordinal)) return ("", "");
            if (start.StartsWith(Open, StringComparison.Ordinal))
            {
                _taken = all.IndexOf(Open, _taken, StringComparison.Ordinal) + Open.Length;
                _state = State.Reasoning;
                Thought = true;
            }
            else _state = State.Answer;
        }
        if (_state == State.Reasoning)
        {
            int close = all.IndexOf(Close, _taken, StringComparison.Ordinal);
            int end = close >= 0 ? close : final ? all.Length : all.Length - ToolCallStream.PartialTag(all, Close);
            reasoning = all[_taken..end];
            _taken = end;
            if (close < 0) return (reasoning, "");
            _taken = close + Close.Length;
            _state = State.Answer;
        }
        if (Thought && !_answering)
        {
            while (_taken < all.Length && all[_taken] == '\n') _taken++;
            if (_taken == all.Length) return (reasoning, "");
        }
        _answering = true;
        var answer = all[_taken..];
        _taken = all.Length;
        return (reasoning, answer);
    }
}
