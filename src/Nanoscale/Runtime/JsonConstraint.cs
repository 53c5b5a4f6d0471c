using System.Runtime.CompilerServices;

namespace Nanoscale.Runtime;

/// <summary>
/// Constrained decoding: which next tokens a sequence may take. <see cref="GenerationSequence"/> asks before it keeps a
/// sampled token and, when the token is refused, samples again from the logits with every refused token masked out
/// (the cheap check first, the whole vocabulary only when needed, as llama.cpp's grammar sampler does); the sequence
/// ends when the constraint is complete.
/// </summary>
public interface ITokenConstraint
{
    /// <summary>Whether <paramref name="id"/> may come next.</summary>
    bool Allows(int id);

    /// <summary>Sets every refused token's logit to −∞; returns how many tokens are allowed.</summary>
    int Mask(Span<float> logits);

    /// <summary>Takes <paramref name="id"/> (allowed) as the next token.</summary>
    void Accept(int id);

    /// <summary>Whether the constrained text is whole (the sequence ends here).</summary>
    bool Complete { get; }
}

/// <summary>
/// Text of a fixed shape, checked character by character on the tokens' texts: a sequence of parts, each a literal, one
/// of several strings, or one JSON object (RFC 8259: strings with escapes, numbers, literals, nesting up to
/// <see cref="MaxDepth"/>; no more than <see cref="MaxWhitespace"/> whitespace characters in a row, so a model cannot
/// idle in blanks until its token limit). <c>nanoscale serve</c> forces a tool call with it: the function's name among
/// the offered tools and a JSON object of arguments. Not checked: the arguments against the function's JSON schema.
/// A token is allowed when every character of its text keeps the shape possible; a token with no text (an end or
/// control token) never is. A character that is part of an unfinished UTF-8 sequence (decoded as U+FFFD) counts as a
/// character of a JSON string.
/// </summary>
public sealed class JsonConstraint : ITokenConstraint
{
    /// <summary>Containers nested in the JSON object at most.</summary>
    public const int MaxDepth = 32;

    /// <summary>Whitespace characters in a row outside strings at most.</summary>
    public const int MaxWhitespace = 16;

    private readonly Part[] _parts;
    private readonly string[] _pieces;
    private State _state;

    /// <summary>One part of the shape.</summary>
    public abstract record Part;

    /// <summary>Exactly <paramref name="Text"/>.</summary>
    public sealed record Literal(string Text) : Part;

    /// <summary>Exactly one of <paramref name="Options"/> (at most 128; none a prefix of another: end each with a
    /// delimiter).</summary>
    public sealed record OneOf(IReadOnlyList<string> Options) : Part;

    /// <summary>One JSON object (whitespace before it allowed).</summary>
    public sealed record JsonObject : Part;

    /// <param name="pieces">Each token's text (<see cref="TokenPieces"/>).</param>
    /// <param name="parts">The shape, in order.</param>
    public JsonConstraint(string[] pieces, params Part[] parts)
    {
        ArgumentNullException.ThrowIfNull(pieces);
        if (parts.Length == 0) throw new ArgumentException("at least one part", nameof(parts));
        foreach (var part in parts)
        {
            if (part is OneOf { Options.Count: 0 } || part is OneOf o && o.Options.Any(a => a.Length == 0) || part is Literal { Text.Length: 0 })
                throw new ArgumentException("an empty literal or option", nameof(parts));
            if (part is OneOf { Options.Count: > 128 })
                throw new ArgumentException("more than 128 options", nameof(parts));
            if (part is OneOf many && many.Options.Any(a => many.Options.Any(b => !ReferenceEquals(a, b) && a != b && b.StartsWith(a, StringComparison.Ordinal))))
                throw new ArgumentException("an option that begins another (end each with a delimiter)", nameof(parts));
        }
        _pieces = pieces;
        _parts = parts;
    }

    public bool Complete => _state.Part == _parts.Length;

    /// <summary>Whether <paramref name="text"/> may come next (all of it).</summary>
    public bool AllowsText(string text) => text.Length > 0 && Run(_state, text, out _);

    public bool Allows(int id) => (uint)id < (uint)_pieces.Length && AllowsText(_pieces[id]);

    public int Mask(Span<float> logits)
    {
        int allowed = 0;
        for (int id = 0; id < logits.Length; id++)
            if (Allows(id)) allowed++;
            else logits[id] = float.NegativeInfinity;
        return allowed;
    }

    public void Accept(int id)
    {
        if (!Allows(id)) throw new ArgumentException($"token {id} does not fit the constrained text here", nameof(id));
        Run(_state, _pieces[id], out _state);
    }

    /// <summary>Takes <paramref name="text"/> (allowed) as what comes next.</summary>
    public void AcceptText(string text)
    {
        if (!AllowsText(text)) throw new ArgumentException($"'{text}' does not fit the constrained text here", nameof(text));
        Run(_state, text, out _state);
    }

    /// <summary>Where the text is: the part, the characters of a literal or option matched, and the JSON automaton's
    /// mode, container stack (a bit per level: 1 an object) and depth.</summary>
    private struct State
    {
        public int Part;
        public int Matched;     // literal / option characters matched; in a JSON string's \u escape, hex digits left
        public Mode Mode;
        public ulong Stack;
        public int Depth;
        public int Blanks;      // whitespace characters in a row
        public bool Key;        // the string being read is an object's key
        public UInt128 Candidates; // the options of a OneOf still possible (a bit each)
    }

    private enum Mode : byte
    {
        Start,          // before the part's object: whitespace or '{'
        Value,          // a value expected
        ObjectOpen,     // after '{': '"' (a key) or '}'
        KeyExpected,    // after ',' in an object: '"'
        Colon,          // after a key: ':'
        ArrayOpen,      // after '[': a value or ']'
        After,          // after a value: ',' or the container's closing bracket
        String, Escape, Unicode,
        Minus, Zero, Integer, Dot, Fraction, Exponent, ExponentSign, ExponentDigits,
        True, False, Null,
    }

    private bool Run(State state, string text, out State end)
    {
        foreach (char c in text)
            if (!Step(ref state, c))
            {
                end = state;
                return false;
            }
        end = state;
        return true;
    }

    private bool Step(ref State s, char c)
    {
        if (s.Part == _parts.Length) return false;
        switch (_parts[s.Part])
        {
            case Literal literal:
                if (literal.Text[s.Matched] != c) return false;
                if (++s.Matched == literal.Text.Length) NextPart(ref s);
                return true;
            case OneOf oneOf:
            {
                // The options still possible: a bit each (all of them before the first character).
                var candidates = s.Matched == 0 ? UInt128.MaxValue : s.Candidates;
                UInt128 left = 0;
                bool whole = false;
                for (int i = 0; i < oneOf.Options.Count; i++)
                {
                    var option = oneOf.Options[i];
                    if ((candidates & (UInt128.One << i)) == 0 || option.Length <= s.Matched || option[s.Matched] != c) continue;
                    left |= UInt128.One << i;
                    whole |= option.Length == s.Matched + 1;
                }
                if (left == 0) return false;
                s.Candidates = left;
                s.Matched++;
                if (whole) NextPart(ref s); // no option is a prefix of another: this one is the only one left
                return true;
            }
            default:
                return Json(ref s, c);
        }
    }

    private void NextPart(ref State s)
    {
        s.Part++;
        s.Matched = 0;
        s.Mode = Mode.Start;
        s.Blanks = 0;
    }

    private static bool Blank(char c) => c is ' ' or '\t' or '\n' or '\r';

    private bool Json(ref State s, char c)
    {
        switch (s.Mode)
        {
            case Mode.Start:
                if (Blank(c)) return Whitespace(ref s);
                if (c != '{') return false;
                return Open(ref s, objects: true);
            case Mode.Value:
            case Mode.ArrayOpen:
                if (Blank(c)) return Whitespace(ref s);
                if (c == ']' && s.Mode == Mode.ArrayOpen) { Close(ref s); return true; }
                return BeginValue(ref s, c);
            case Mode.ObjectOpen:
            case Mode.KeyExpected:
                if (Blank(c)) return Whitespace(ref s);
                if (c == '}' && s.Mode == Mode.ObjectOpen) { Close(ref s); return true; }
                if (c != '"') return false;
                s.Mode = Mode.String;
                s.Key = true;
                s.Blanks = 0;
                return true;
            case Mode.Colon:
                if (Blank(c)) return Whitespace(ref s);
                if (c != ':') return false;
                s.Mode = Mode.Value;
                s.Blanks = 0;
                return true;
            case Mode.After:
                if (Blank(c)) return Whitespace(ref s);
                bool inObject = (s.Stack & 1) != 0;
                if (c == ',')
                {
                    s.Mode = inObject ? Mode.KeyExpected : Mode.Value;
                    s.Blanks = 0;
                    return true;
                }
                if (c == (inObject ? '}' : ']')) { Close(ref s); return true; }
                return false;
            case Mode.String:
                if (c == '"')
                {
                    s.Mode = s.Key ? Mode.Colon : Mode.After;
                    s.Key = false;
                    return true;
                }
                if (c == '\\') { s.Mode = Mode.Escape; return true; }
                return c >= 0x20;
            case Mode.Escape:
                if (c == 'u') { s.Mode = Mode.Unicode; s.Matched = 4; return true; }
                if (c is '"' or '\\' or '/' or 'b' or 'f' or 'n' or 'r' or 't') { s.Mode = Mode.String; return true; }
                return false;
            case Mode.Unicode:
                if (!char.IsAsciiHexDigit(c)) return false;
                if (--s.Matched == 0) s.Mode = Mode.String;
                return true;
            case Mode.Minus:
                if (c == '0') { s.Mode = Mode.Zero; return true; }
                if (char.IsAsciiDigit(c)) { s.Mode = Mode.Integer; return true; }
                return false;
            case Mode.Zero:
            case Mode.Integer:
                if (s.Mode == Mode.Integer && char.IsAsciiDigit(c)) return true;
                if (c == '.') { s.Mode = Mode.Dot; return true; }
                if (c is 'e' or 'E') { s.Mode = Mode.Exponent; return true; }
                return EndNumber(ref s, c);
            case Mode.Dot:
                if (!char.IsAsciiDigit(c)) return false;
                s.Mode = Mode.Fraction;
                return true;
            case Mode.Fraction:
                if (char.IsAsciiDigit(c)) return true;
                if (c is 'e' or 'E') { s.Mode = Mode.Exponent; return true; }
                return EndNumber(ref s, c);
            case Mode.Exponent:
                if (c is '+' or '-') { s.Mode = Mode.ExponentSign; return true; }
                if (!char.IsAsciiDigit(c)) return false;
                s.Mode = Mode.ExponentDigits;
                return true;
            case Mode.ExponentSign:
                if (!char.IsAsciiDigit(c)) return false;
                s.Mode = Mode.ExponentDigits;
                return true;
            case Mode.ExponentDigits:
                if (char.IsAsciiDigit(c)) return true;
                return EndNumber(ref s, c);
            case Mode.True:
            case Mode.False:
            case Mode.Null:
            {
                string word = s.Mode == Mode.True ? "true" : s.Mode == Mode.False ? "false" : "null";
                if (word[s.Matched] != c) return false;
                if (++s.Matched == word.Length)
                {
                    s.Matched = 0;
                    s.Mode = Mode.After;
                }
                return true;
            }
            default:
                return false;
        }
    }

    /// <summary>A number ends at the first character that cannot continue it, which then counts as what follows it.</summary>
    private bool EndNumber(ref State s, char c)
    {
        s.Mode = Mode.After;
        s.Blanks = 0;
        return Json(ref s, c);
    }

    private static bool Whitespace(ref State s) => ++s.Blanks <= MaxWhitespace;

    private bool BeginValue(ref State s, char c)
    {
        s.Blanks = 0;
        switch (c)
        {
            case '{': return Open(ref s, objects: true);
            case '[': return Open(ref s, objects: false);
            case '"': s.Mode = Mode.String; s.Key = false; return true;
            case '-': s.Mode = Mode.Minus; return true;
            case '0': s.Mode = Mode.Zero; return true;
            case 't': s.Mode = Mode.True; s.Matched = 1; return true;
            case 'f': s.Mode = Mode.False; s.Matched = 1; return true;
            case 'n': s.Mode = Mode.Null; s.Matched = 1; return true;
            default:
                if (c is < '1' or > '9') return false;
                s.Mode = Mode.Integer;
                return true;
        }
    }

    private static bool Open(ref State s, bool objects)
    {
        if (s.Depth == MaxDepth) return false;
        s.Stack = (s.Stack << 1) | (objects ? 1UL : 0UL);
        s.Depth++;
        s.Mode = objects ? Mode.ObjectOpen : Mode.ArrayOpen;
        s.Blanks = 0;
        return true;
    }

    private void Close(ref State s)
    {
        s.Stack >>= 1;
        s.Depth--;
        s.Blanks = 0;
        s.Mode = Mode.After;
        if (s.Depth == 0) NextPart(ref s); // the part's object is whole
    }
}

/// <summary>Each token's text, for constraints that read tokens as text (<see cref="JsonConstraint"/>): the tokenizer's
/// decoding of that one id ("" for control tokens), made once per tokenizer.</summary>
public static class TokenPieces
{
    private static readonly ConditionalWeakTable<ITokenizer, string[]> Made = new();

    public static string[] For(ITokenizer tokenizer) => Made.GetValue(tokenizer, t =>
    {
        var pieces = new string[t.VocabSize];
        for (int id = 0; id < pieces.Length; id++) pieces[id] = t.Decode([id]);
        return pieces;
    });
}
