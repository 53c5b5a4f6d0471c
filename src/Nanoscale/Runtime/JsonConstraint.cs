using System.Buffers;
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

    /// <summary>Whether the text may end here (an end token may be drawn), though it could go on: a regular
    /// expression's match that a longer text would match too.</summary>
    bool MayEnd => Complete;
}

/// <summary>
/// Text of a fixed shape, checked character by character on the tokens' texts: a sequence of parts, each a literal, one
/// of several strings, or one JSON object (RFC 8259: strings with escapes, numbers, literals, nesting up to
/// <see cref="MaxDepth"/>; no more than <see cref="MaxWhitespace"/> whitespace characters in a row, so a model cannot
/// idle in blanks until its token limit), optionally held to a <see cref="JsonSchema"/> (keys, types, enums, required
/// keys and the value rules: patterns, formats, lengths, bounds, counts, branches); or, as the last part, text a regular
/// expression (<see cref="Matches"/>) or a GBNF grammar (<see cref="Grammar"/>) matches whole, which may end at any match.
/// <c>nanoscale serve</c> forces a tool call with it — the function's name among the offered tools and its arguments
/// as its parameters' schema describes them — and answers <c>response_format</c>, <c>guided_*</c> and <c>grammar</c>
/// requests.
/// A token is allowed when every character of its text keeps the shape possible, or where a grammar's token reference
/// takes it whole; a token with no text (an end or control token) is allowed only so. A character that is part of an unfinished UTF-8 sequence (decoded as U+FFFD) counts as a
/// character of a JSON string.
/// </summary>
public sealed class JsonConstraint : ITokenConstraint
{
    /// <summary>Containers nested in the JSON object at most.</summary>
    public const int MaxDepth = 32;

    /// <summary>Whitespace characters in a row outside strings at most.</summary>
    public const int MaxWhitespace = 16;

    /// <summary>Characters of one number at most (a model cannot write digits until its token limit).</summary>
    public const int MaxNumber = 32;

    private readonly Part[] _parts;
    private readonly string[] _pieces;
    private State _state;

    /// <summary>One part of the shape.</summary>
    public abstract record Part;

    /// <summary>Exactly <paramref name="Text"/>.</summary>
    public sealed record Literal(string Text) : Part;

    /// <summary>Exactly one of <paramref name="Options"/> (at most 128; none a prefix of another: end each with a
    /// delimiter). The one written decides the schema of a following <see cref="JsonObject"/> with
    /// <see cref="JsonObject.ForOption"/>.</summary>
    public sealed record OneOf(IReadOnlyList<string> Options) : Part;

    /// <summary>Text that <paramref name="Regex"/> matches whole (an ECMAScript regular expression in
    /// <see cref="JsonPattern"/>'s subset, anchored at both ends, as vLLM's <c>guided_regex</c> reads it); only as the
    /// last part. The text may end at any match, and ends where a match admits no further character.</summary>
    /// <exception cref="ArgumentException">The expression is outside the subset.</exception>
    public sealed record Matches(string Regex) : Part
    {
        internal JsonPattern Compiled { get; } = JsonPattern.TryCompile("^(?:" + Regex + ")$", Regex)
            ?? throw new ArgumentException($"the regular expression /{Regex}/ is not valid or is outside the supported subset (no lookaround, backreferences or \\b)");

        /// <summary>An expression that matches exactly one of <paramref name="choices"/> (vLLM's <c>guided_choice</c>):
        /// each literal escaped, the literals alternated.</summary>
        public static string Choice(IEnumerable<string> choices) =>
            "(?:" + string.Join("|", choices.Select(c => string.Concat(c.Select(ch => @"\^$.|?*+()[]{}/-".Contains(ch) ? "\\" + ch : ch.ToString())))) + ")";
    }

    /// <summary>Text that the GBNF grammar <paramref name="Gbnf"/> matches whole from its rule <paramref name="Root"/>
    /// (llama.cpp's grammar format, <see cref="GbnfGrammar"/>); only as the last part. The text may end wherever the
    /// grammar is satisfied, and ends where nothing more can follow. Its token references (<c>&lt;[id]&gt;</c>,
    /// <c>&lt;text&gt;</c>, negated <c>!&lt;…&gt;</c>) match whole tokens by id, control tokens too (the ones that end a
    /// sequence still end it); <paramref name="TokenId"/> finds the id of a token named by its text.</summary>
    /// <exception cref="ArgumentException">A syntax error (with line and column), an undefined rule, left recursion or
    /// an unknown token.</exception>
    public sealed record Grammar(string Gbnf, string Root = "root", Func<string, int?>? TokenId = null) : Part
    {
        internal GbnfGrammar Compiled { get; } = Read(Gbnf, Root, TokenId);

        /// <summary>A <paramref name="tokenizer"/>'s id of a token named by its text: the one id its text encodes to
        /// (a special token's text is that token), else null.</summary>
        public static Func<string, int?> TokenIdsOf(ITokenizer tokenizer) => text => tokenizer.Encode(text, addBos: false) is [int one] ? one : null;

        private static GbnfGrammar Read(string gbnf, string root, Func<string, int?>? tokenId)
        {
            try
            {
                return GbnfGrammar.Parse(gbnf, root, tokenId);
            }
            catch (FormatException e)
            {
                throw new ArgumentException($"the grammar: {e.Message}");
            }
        }
    }

    /// <summary>One JSON object (whitespace before it allowed), following <paramref name="Schema"/> when given.</summary>
    public sealed record JsonObject(JsonSchema? Schema = null) : Part
    {
        /// <summary>The schema for each option of the <see cref="OneOf"/> before this part (the one written decides),
        /// instead of <see cref="Schema"/>.</summary>
        public IReadOnlyList<JsonSchema>? ForOption { get; init; }
    }

    /// <param name="pieces">Each token's text (<see cref="TokenPieces"/>).</param>
    /// <param name="parts">The shape, in order.</param>
    public JsonConstraint(string[] pieces, params Part[] parts)
    {
        ArgumentNullException.ThrowIfNull(pieces);
        if (parts.Length == 0) throw new ArgumentException("at least one part", nameof(parts));
        for (int p = 0; p < parts.Length; p++)
        {
            var part = parts[p];
            if (part is OneOf { Options.Count: 0 } || part is OneOf o && o.Options.Any(a => a.Length == 0) || part is Literal { Text.Length: 0 })
                throw new ArgumentException("an empty literal or option", nameof(parts));
            if (part is OneOf { Options.Count: > 128 })
                throw new ArgumentException("more than 128 options", nameof(parts));
            if (part is OneOf many && many.Options.Any(a => many.Options.Any(b => a != b && b.StartsWith(a, StringComparison.Ordinal))))
                throw new ArgumentException("an option that begins another (end each with a delimiter)", nameof(parts));
            if (part is JsonObject { ForOption: { } each } && parts[..p].OfType<OneOf>().LastOrDefault()?.Options.Count != each.Count)
                throw new ArgumentException("schemas for each option need a OneOf with as many options before them", nameof(parts));
            if (part is Matches or Grammar && p != parts.Length - 1)
                throw new ArgumentException("a regular expression or grammar only as the last part", nameof(parts));
            if (part is JsonObject { Schema: { } schema } && !schema.AllowsObject || part is JsonObject { ForOption: { } all } && all.Any(x => !x.AllowsObject))
                throw new ArgumentException("a schema that does not allow an object", nameof(parts));
            if (part is Grammar g && g.Compiled.TokenIds.FirstOrDefault(id => (uint)id >= (uint)pieces.Length, -1) is int bad and >= 0)
                throw new ArgumentException($"the grammar names token <[{bad}]>, beyond the model's {pieces.Length} tokens");
        }
        _pieces = pieces;
        _parts = parts;
        NextPart(ref _state, first: true);
    }

    public bool Complete => _state.Part == _parts.Length;

    public bool MayEnd => Complete || _state.Part == _parts.Length - 1 && _parts[^1] switch
    {
        Matches m => m.Compiled.Accepts(_state.Pattern),
        Grammar => _state.Position!.MayEnd,
        _ => false,
    };

    /// <summary>Whether <paramref name="text"/> may come next (all of it).</summary>
    public bool AllowsText(string text) => text.Length > 0 && Run(_state, text, out _);

    public bool Allows(int id) => (uint)id < (uint)_pieces.Length && (ByToken(id) is not null || AllowsText(_pieces[id]));

    /// <summary>The grammar position after token <paramref name="id"/> taken whole by a token element of the grammar
    /// (the last part, under way), or null.</summary>
    private GbnfGrammar.Position? ByToken(int id) => TokenGrammar() is var (grammar, position) ? grammar.NextToken(position, id) : null;

    /// <summary>The grammar with token references and where the text is in it, while that last part is under way.</summary>
    private (GbnfGrammar Grammar, GbnfGrammar.Position Position)? TokenGrammar() =>
        _state.Part == _parts.Length - 1 && _parts[^1] is Grammar { Compiled: { HasTokens: true } grammar } && _state.Position is { } position
            ? (grammar, position) : null;

    /// <remarks>Outside strings, tokens are taken by their first character: a character the shape refuses here refuses
    /// every token it begins at one check (nearly all of them), and only the tokens of allowed first characters are read
    /// whole; where most first characters fit, every token is read in order. Same result as asking <see cref="Allows"/>
    /// of each (tested).</remarks>
    public int Mask(Span<float> logits)
    {
        // Where most first characters fit (inside a string), reading every token in order is faster.
        var groups = TokenPieces.ByFirstCharacter(_pieces);
        int fitting = 0;
        foreach (var (first, _) in groups)
            if (Run(_state, first, out _)) fitting++;
        if (fitting * 4 > groups.Length) return MaskEach(logits);
        var refused = ArrayPool<bool>.Shared.Rent(logits.Length);
        try
        {
            Array.Fill(refused, true, 0, logits.Length);
            int allowed = 0;
            foreach (var (first, ids) in groups)
            {
                if (!Run(_state, first, out var after)) continue;
                foreach (int id in ids)
                {
                    if (id >= logits.Length) continue;
                    var piece = _pieces[id];
                    if (piece.Length > 1 && !Run(after, piece.AsSpan(1), out _)) continue;
                    refused[id] = false;
                    allowed++;
                }
            }
            allowed += AllowTokens(refused.AsSpan(0, logits.Length));
            for (int id = 0; id < logits.Length; id++)
                if (refused[id]) logits[id] = float.NegativeInfinity;
            return allowed;
        }
        finally
        {
            ArrayPool<bool>.Shared.Return(refused);
        }
    }

    /// <summary>Clears <paramref name="refused"/> for the tokens the grammar's token elements take here (their text
    /// aside); how many it cleared.</summary>
    private int AllowTokens(Span<bool> refused)
    {
        if (TokenGrammar() is not var (grammar, position)) return 0;
        int cleared = 0;
        foreach (var (id, negated) in grammar.TokensAt(position))
        {
            if (!negated)
            {
                if ((uint)id < (uint)refused.Length && refused[id]) (refused[id], cleared) = (false, cleared + 1);
                continue;
            }
            for (int other = 0; other < refused.Length; other++)
                if (other != id && refused[other]) (refused[other], cleared) = (false, cleared + 1);
        }
        return cleared;
    }

    /// <summary>Every token asked one at a time (<see cref="Mask"/>'s reference twin).</summary>
    internal int MaskEach(Span<float> logits) => MaskByAsking(this, logits);

    /// <summary>A mask made by asking <paramref name="constraint"/> about every token in turn.</summary>
    internal static int MaskByAsking(ITokenConstraint constraint, Span<float> logits)
    {
        int allowed = 0;
        for (int id = 0; id < logits.Length; id++)
            if (constraint.Allows(id)) allowed++;
            else logits[id] = float.NegativeInfinity;
        return allowed;
    }

    public void Accept(int id)
    {
        if (!Allows(id)) throw new ArgumentException($"token {id} does not fit the constrained text here", nameof(id));
        if (ByToken(id) is not { } whole)
        {
            Run(_state, _pieces[id], out _state);
            return;
        }
        // Taken whole by a token element, and maybe by its text as well: every stack either way.
        var grammar = ((Grammar)_parts[^1]).Compiled;
        var next = AllowsText(_pieces[id]) && Run(_state, _pieces[id], out var byText) && byText.Position is { } read ? grammar.Merge(whole, read) : whole;
        _state.Position = next;
        if (GbnfGrammar.Finished(next)) NextPart(ref _state);
    }

    /// <summary>Takes <paramref name="text"/> (allowed) as what comes next.</summary>
    public void AcceptText(string text)
    {
        if (!AllowsText(text)) throw new ArgumentException($"'{text}' does not fit the constrained text here", nameof(text));
        Run(_state, text, out _state);
    }

    /// <summary>An open container: its schema, whether it is an object, the declared keys already written (a bit each),
    /// and the one around it. Immutable, so a state is copied by copying a reference.</summary>
    private sealed record Frame(JsonSchema Schema, bool IsObject, UInt128 Seen, Frame? Parent)
    {
        /// <summary>Keys or items begun so far.</summary>
        public int Count { get; init; }

        /// <summary>An array of unique enum items: the values written (a bit each).</summary>
        public UInt128 Used { get; init; }

        /// <summary>An array of unique items: the strings written among them (as read, escapes undone).</summary>
        public System.Collections.Immutable.ImmutableHashSet<string>? Strings { get; init; }
    }

    /// <summary>Where the text is.</summary>
    private struct State
    {
        public int Part;
        public int Matched;        // literal / option / key / enum characters matched; in a string's \u escape, hex digits left
        public Mode Mode;
        public Frame? Frames;      // the open containers, innermost first
        public int Depth;
        public int Blanks;         // whitespace characters in a row
        public UInt128 Candidates; // the options, declared keys or enum values still possible (a bit each)
        public int Chosen;         // the option the last OneOf ended with
        public JsonSchema Next;    // the schema of the value expected next
        public bool IntegerOnly;   // the number being read must be an integer
        public int Length;         // a string value's code points so far
        public int Pattern;        // a string value's pattern automaton state
        public int Code;           // a \u escape in a string or a key: its digits left, code unit so far and pending high surrogate (UnicodeDigit)
        public string? Number;     // a number held to bounds: its characters so far
        public string? KeyText;    // a free key of an object with patternProperties: its characters so far
        public string? ItemText;   // a string item of an array of unique items: its characters so far
        public GbnfGrammar.Position? Position; // a grammar part: where the text is in it
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
        String, Escape, Unicode, PairEscape, PairU, Key, DeclaredKey, KeyEscape, KeyUnicode, KeyPairEscape, KeyPairU, Enum,
        Minus, Zero, Integer, Dot, Fraction, Exponent, ExponentSign, ExponentDigits,
        True, False, Null,
    }

    private bool Run(State state, char c, out State end)
    {
        end = state;
        return Step(ref end, c);
    }

    private bool Run(State state, ReadOnlySpan<char> text, out State end)
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
            case Matches matches:
                s.Pattern = matches.Compiled.Next(s.Pattern, c);
                if (s.Pattern == JsonPattern.Dead) return false;
                if (!matches.Compiled.Continues(s.Pattern)) NextPart(ref s); // a whole match nothing can extend
                return true;
            case Grammar grammar:
                s.Position = grammar.Compiled.Next(s.Position!, c);
                if (s.Position is null) return false;
                if (GbnfGrammar.Finished(s.Position)) NextPart(ref s);
                return true;
            case OneOf oneOf:
            {
                if (!Narrow(ref s, oneOf.Options, c, out int whole)) return false;
                if (whole >= 0)
                {
                    s.Chosen = whole;
                    NextPart(ref s); // no option is a prefix of another: this one is the only one left
                }
                return true;
            }
            default:
                return Json(ref s, c);
        }
    }

    /// <summary>Narrows the candidate texts (all of them before the first character) to those whose next character is
    /// <paramref name="c"/>; <paramref name="whole"/> is one that ends with it, or −1.</summary>
    private static bool Narrow(ref State s, IReadOnlyList<string> options, char c, out int whole)
    {
        var candidates = s.Matched == 0 ? UInt128.MaxValue : s.Candidates;
        UInt128 left = 0;
        whole = -1;
        for (int i = 0; i < options.Count; i++)
        {
            var option = options[i];
            if ((candidates & (UInt128.One << i)) == 0 || option.Length <= s.Matched || option[s.Matched] != c) continue;
            left |= UInt128.One << i;
            if (option.Length == s.Matched + 1) whole = i;
        }
        if (left == 0) return false;
        s.Candidates = left;
        s.Matched++;
        return true;
    }

    private void NextPart(ref State s, bool first = false)
    {
        if (!first) s.Part++;
        s.Matched = 0;
        s.Mode = Mode.Start;
        s.Blanks = 0;
        s.Frames = null;
        s.Depth = 0;
        if (s.Part < _parts.Length && _parts[s.Part] is JsonObject part)
            s.Next = part.ForOption is { } each ? each[s.Chosen] : part.Schema ?? JsonSchema.Any;
        if (s.Part < _parts.Length && _parts[s.Part] is Matches matches)
        {
            s.Pattern = matches.Compiled.Start;
            if (!matches.Compiled.Continues(s.Pattern)) s.Part++; // an expression that matches only the empty text
        }
        if (s.Part < _parts.Length && _parts[s.Part] is Grammar grammar)
        {
            s.Position = grammar.Compiled.Start;
            if (GbnfGrammar.Finished(s.Position)) s.Part++;
        }
    }

    private static bool Blank(char c) => c is ' ' or '\t' or '\n' or '\r';

    /// <summary>A bit for each of <paramref name="count"/> options.</summary>
    private static UInt128 All(int count) => count >= 128 ? UInt128.MaxValue : (UInt128.One << count) - 1;

    private bool Json(ref State s, char c)
    {
        switch (s.Mode)
        {
            case Mode.Start:
                if (Blank(c)) return Whitespace(ref s);
                if (c != '{' || s.Next.Pick(c) is not { } picked) return false;
                s.Next = picked;
                return Open(ref s, objects: true);
            case Mode.Value:
            case Mode.ArrayOpen:
            {
                if (Blank(c)) return Whitespace(ref s);
                var frame = s.Frames;
                if (c == ']' && s.Mode == Mode.ArrayOpen)
                {
                    if (frame!.Schema.MinItems > 0) return false;
                    Close(ref s);
                    return true;
                }
                if (frame is { IsObject: false })
                {
                    // An array's item: within maxItems, following its prefixItems schema where it has one.
                    if (frame.Count >= frame.Schema.MaxItems) return false;
                    s.Frames = frame with { Count = frame.Count + 1 };
                    s.Next = frame.Schema.ItemSchema(frame.Count);
                }
                return BeginValue(ref s, c);
            }
            case Mode.ObjectOpen:
            case Mode.KeyExpected:
            {
                if (Blank(c)) return Whitespace(ref s);
                if (c == '}' && s.Mode == Mode.ObjectOpen) return CloseObject(ref s);
                if (c != '"') return false;
                var schema = s.Frames!.Schema;
                if (s.Frames.Count >= schema.MaxProperties) return false;
                s.Frames = s.Frames with { Count = s.Frames.Count + 1 };
                s.Blanks = 0;
                s.Matched = 0;
                if (schema.OtherKeys)
                {
                    // Any key; one that turns out declared takes its schema. Held to propertyNames: read as a string
                    // value of that schema until its closing quote (EndKey then sets the value's schema).
                    s.Mode = Mode.Key;
                    s.Candidates = UInt128.MaxValue;
                    if (schema.KeyNames is { } names) (s.Next, s.Length, s.Pattern) = (names, 0, names.Pattern?.Start ?? 0);
                    s.KeyText = schema.PatternKeys.Length > 0 ? "" : null;
                    return true;
                }
                // Only declared keys not yet written.
                if (!KeysLeft(s.Frames)) return false;
                s.Mode = Mode.DeclaredKey;
                return true;
            }
            case Mode.DeclaredKey:
            {
                // Narrow among the declared keys not written yet.
                var frame = s.Frames!;
                if (s.Matched == 0) s.Candidates = ~frame.Seen;
                var keys = frame.Schema.Keys;
                UInt128 left = 0;
                int whole = -1;
                for (int i = 0; i < keys.Length; i++)
                {
                    if ((s.Candidates & (UInt128.One << i)) == 0 || keys[i].Length <= s.Matched || keys[i][s.Matched] != c) continue;
                    left |= UInt128.One << i;
                    if (keys[i].Length == s.Matched + 1) whole = i;
                }
                if (left == 0) return false;
                s.Candidates = left;
                s.Matched++;
                if (whole >= 0)
                {
                    s.Frames = frame with { Seen = frame.Seen | (UInt128.One << whole) };
                    s.Next = frame.Schema.KeySchemas[whole];
                    s.Mode = Mode.Colon;
                }
                return true;
            }
            case Mode.Key:
                if (c == '"') return EndKey(ref s);
                if (c < 0x20) return false;
                // A key held to propertyNames is written without escapes (its characters as they are, for its pattern).
                if (s.Frames!.Schema.KeyNames is not null && (c == '\\' || !StringCharacter(ref s, c))) return false;
                // A key that patterns may type is written without escapes too, and kept to be matched at its end.
                if (s.KeyText is not null)
                {
                    if (c == '\\') return false;
                    s.KeyText += c;
                }
                NarrowKey(ref s, c);
                // Keys held to patternProperties: the key must still be able to become an unwritten declared key or a
                // pattern's match.
                if (s.Frames!.Schema.KeysByPattern && (s.Candidates & ~s.Frames.Seen) == 0 && s.Frames.Schema.PatternSchema(s.KeyText!, begun: true) is null)
                    return false;
                if (c == '\\') s.Mode = Mode.KeyEscape;
                return true;
            case Mode.KeyEscape:
                NarrowKey(ref s, c);
                if (c == 'u') { s.Mode = Mode.KeyUnicode; s.Code = 4; return true; }
                if (Unescaped(c) is null) return false;
                s.Mode = Mode.Key;
                return true;
            case Mode.Escape:
                // A string held to a pattern is written without \u escapes (its characters as they are), so the
                // pattern sees each character whole.
                if (c == 'u' && s.Next.Pattern is null) { s.Mode = Mode.Unicode; s.Code = 4; return true; }
                if (Unescaped(c) is not { } unescaped) return false;
                s.Mode = Mode.String;
                return StringCharacter(ref s, unescaped);
            case Mode.KeyUnicode:
            {
                var step = UnicodeDigit(ref s.Code, c, out _, out _);
                if (step == EscapeStep.Refused) return false;
                NarrowKey(ref s, c);
                if (step == EscapeStep.High) s.Mode = Mode.KeyPairEscape;
                else if (step == EscapeStep.Whole) s.Mode = Mode.Key;
                return true;
            }
            case Mode.KeyPairEscape:
                if (c != '\\') return false;
                NarrowKey(ref s, c);
                s.Mode = Mode.KeyPairU;
                return true;
            case Mode.KeyPairU:
                if (c != 'u') return false;
                NarrowKey(ref s, c);
                s.Code |= 4;
                s.Mode = Mode.KeyUnicode;
                return true;
            case Mode.Unicode:
                switch (UnicodeDigit(ref s.Code, c, out char high, out char unit))
                {
                    case EscapeStep.Refused: return false;
                    case EscapeStep.Digit: return true;
                    case EscapeStep.High:
                        s.Mode = Mode.PairEscape;
                        return true;
                    default:
                        s.Mode = Mode.String;
                        return (high == 0 || StringCharacter(ref s, high)) && StringCharacter(ref s, unit);
                }
            case Mode.PairEscape:
                if (c != '\\') return false;
                s.Mode = Mode.PairU;
                return true;
            case Mode.PairU:
                if (c != 'u') return false;
                s.Code |= 4;
                s.Mode = Mode.Unicode;
                return true;
            case Mode.Colon:
                if (Blank(c)) return Whitespace(ref s);
                if (c != ':') return false;
                s.Mode = Mode.Value;
                s.Blanks = 0;
                return true;
            case Mode.After:
            {
                if (Blank(c)) return Whitespace(ref s);
                var frame = s.Frames!;
                if (c == ',')
                {
                    if (frame.IsObject && !frame.Schema.OtherKeys && !KeysLeft(frame)) return false;
                    // Unique enum items: another only while a value is left.
                    if (!frame.IsObject && frame.Schema.UniqueValues is { } unique && (All(unique.Count) & ~frame.Used) == 0) return false;
                    if (frame.Count >= (frame.IsObject ? frame.Schema.MaxProperties : frame.Schema.MaxItems)) return false;
                    s.Mode = frame.IsObject ? Mode.KeyExpected : Mode.Value;
                    if (!frame.IsObject) s.Next = frame.Schema.ItemSchema(frame.Count);
                    s.Blanks = 0;
                    return true;
                }
                if (frame.IsObject) return c == '}' && CloseObject(ref s);
                if (c != ']' || frame.Count < frame.Schema.MinItems) return false;
                Close(ref s);
                return true;
            }
            case Mode.String:
                if (c == '"')
                {
                    // The string ends once it is long enough and its pattern matches — and, as an item of an array of
                    // unique items, once it differs from the strings written before it.
                    var schema = s.Next;
                    if (s.Length < schema.MinLength || schema.Pattern is { } pattern && !pattern.Accepts(s.Pattern)) return false;
                    if (s.ItemText is { } item && s.Frames is { IsObject: false } array)
                    {
                        var written = array.Strings ?? System.Collections.Immutable.ImmutableHashSet<string>.Empty.WithComparer(StringComparer.Ordinal);
                        if (written.Contains(item)) return false;
                        s.Frames = array with { Strings = written.Add(item) };
                        s.ItemText = null;
                    }
                    s.Mode = Mode.After;
                    return true;
                }
                if (c == '\\')
                {
                    // An escape only where some escaped character could follow (a pattern or the length may allow none).
                    s.Mode = Mode.Escape;
                    return CanEscape(s);
                }
                return c >= 0x20 && StringCharacter(ref s, c);
            case Mode.Enum:
            {
                var values = s.Next.Values!;
                if (Narrow(ref s, values, c, out int chosen))
                {
                    // A discriminated union's first key written whole: the object goes on as the branch it names, that
                    // key already written.
                    if (chosen >= 0 && s.Frames is { IsObject: true, Schema.UnionBranches: { } union } frame)
                    {
                        var branch = union[chosen];
                        int at = Array.IndexOf(branch.Keys, frame.Schema.Keys[0]);
                        s.Frames = frame with { Schema = branch, Seen = at >= 0 ? UInt128.One << at : 0 };
                    }
                    return true;
                }
                // A value may end where another goes on (1 and 10): it ends at the first character none continues.
                for (int i = 0; i < values.Length; i++)
                    if ((s.Candidates & (UInt128.One << i)) != 0 && values[i].Length == s.Matched)
                    {
                        if (s.Frames is { IsObject: false } array && array.Schema.UniqueValues == values)
                            s.Frames = array with { Used = array.Used | UInt128.One << i };
                        s.Mode = Mode.After;
                        s.Blanks = 0;
                        return Json(ref s, c);
                    }
                return false;
            }
            case Mode.Minus or Mode.Zero or Mode.Integer or Mode.Dot or Mode.Fraction or Mode.Exponent or Mode.ExponentSign or Mode.ExponentDigits:
                return Number(ref s, c);
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

    /// <summary>A character of a number (or the first after it, which ends it). A number held to bounds is written
    /// without an exponent, and each character must leave a way to a number within them.</summary>
    private bool Number(ref State s, char c)
    {
        bool goesOn = NumberGoesOn(s.Mode, c);
        if (goesOn && ++s.Matched > MaxNumber) return false;
        if (goesOn && s.Number is { } number)
        {
            if (c is 'e' or 'E') return false;
            var next = number + c;
            if (!NumberCharacter(ref s, c)) return false;
            if (!s.Next.Bounds!.Reachable(next, s.IntegerOnly, MaxNumber - next.Length)) return false;
            s.Number = next;
            return true;
        }
        return NumberCharacter(ref s, c);
    }

    /// <summary>The number grammar (RFC 8259) for one character.</summary>
    private bool NumberCharacter(ref State s, char c)
    {
        switch (s.Mode)
        {
            case Mode.Minus:
                if (c == '0') { s.Mode = Mode.Zero; return true; }
                if (char.IsAsciiDigit(c)) { s.Mode = Mode.Integer; return true; }
                return false;
            case Mode.Zero:
            case Mode.Integer:
                if (s.Mode == Mode.Integer && char.IsAsciiDigit(c)) return true;
                if (!s.IntegerOnly && c == '.') { s.Mode = Mode.Dot; return true; }
                if (!s.IntegerOnly && c is 'e' or 'E') { s.Mode = Mode.Exponent; return true; }
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
            default:
                return false;
        }
    }

    /// <summary>A free key's character as written: the declared keys it may still be (<see cref="State.Candidates"/>).</summary>
    private static void NarrowKey(ref State s, char c)
    {
        var keys = s.Frames!.Schema.Keys;
        if (s.Candidates != 0)
        {
            UInt128 left = 0;
            for (int i = 0; i < keys.Length; i++)
                if ((s.Candidates & (UInt128.One << i)) != 0 && keys[i].Length > s.Matched + 1 && keys[i][s.Matched] == c)
                    left |= UInt128.One << i;
            s.Candidates = left;
        }
        s.Matched++;
    }

    /// <summary>A free key's closing quote (once it is long enough and matches <c>propertyNames</c>' pattern): a
    /// declared key takes its schema (once: a second time is refused), any other the schema of
    /// <c>additionalProperties</c>.</summary>
    private static bool EndKey(ref State s)
    {
        var frame = s.Frames!;
        if (frame.Schema.KeyNames is { } names && (s.Length < names.MinLength || names.Pattern is { } pattern && !pattern.Accepts(s.Pattern))) return false;
        var keys = frame.Schema.Keys;
        for (int i = 0; i < keys.Length; i++)
            if ((s.Candidates & (UInt128.One << i)) != 0 && keys[i].Length == s.Matched + 1)
            {
                if ((frame.Seen & (UInt128.One << i)) != 0) return false;
                s.Frames = frame with { Seen = frame.Seen | (UInt128.One << i) };
                s.Next = frame.Schema.KeySchemas[i];
                s.KeyText = null;
                s.Mode = Mode.Colon;
                return true;
            }
        // Not declared: the schema of the first pattern it matches, else additionalProperties' (where keys are held to
        // the patterns, one that matches none cannot end here).
        var matched = s.KeyText is { } key ? frame.Schema.PatternSchema(key) : null;
        if (matched is null && frame.Schema.KeysByPattern) return false;
        s.Next = matched ?? frame.Schema.OtherValues ?? JsonSchema.Any;
        s.KeyText = null;
        s.Mode = Mode.Colon;
        return true;
    }

    /// <summary>A character of a string value (an escape's character once read): within <c>maxLength</c> (code points:
    /// a low surrogate does not count) and keeping its pattern possible in the length left.</summary>
    private static bool StringCharacter(ref State s, char c)
    {
        if (s.ItemText is not null) s.ItemText += c;
        var schema = s.Next;
        if (!char.IsLowSurrogate(c))
        {
            if (s.Length >= schema.MaxLength) return false;
            s.Length++;
        }
        if (schema.Pattern is not { } pattern) return true;
        s.Pattern = pattern.Next(s.Pattern, c);
        int distance = pattern.Distance(s.Pattern);
        return distance != int.MaxValue && (schema.MaxLength == int.MaxValue || (long)s.Length + distance <= schema.MaxLength);
    }

    /// <summary>Whether some escape can follow the backslash that begins one (in <see cref="Mode.Escape"/>).</summary>
    private static bool CanEscape(State s)
    {
        if (s.Next.Pattern is null) return s.Length < s.Next.MaxLength;
        foreach (char e in "\"\\/bfnrt")
        {
            var copy = s;
            if (StringCharacter(ref copy, Unescaped(e)!.Value)) return true;
        }
        return false;
    }

    /// <summary>What a \u escape's hex digit did (<see cref="UnicodeDigit"/>).</summary>
    private enum EscapeStep : byte { Refused, Digit, High, Whole }

    /// <summary>
    /// One hex digit of a \u escape, in a string value or a key, through <paramref name="code"/>: bits 0–2 the digits
    /// left, 3–18 the code unit so far, from 19 a high surrogate written before (less 0xD7FF) whose low one this is.
    /// A surrogate is taken only in a pair — \uD800–\uDBFF then \uDC00–\uDFFF, as JSON writers escape a character
    /// beyond the first plane: a lone one is valid JSON text but no string strict readers (System.Text.Json,
    /// serde_json) take. Each rule is checked at the digit that settles it (the second), so no walk is left with no way
    /// on. <see cref="EscapeStep.High"/>: a high surrogate is whole, a \u low one must follow (the caller's modes read the
    /// backslash and the u, then add 4 digits to <paramref name="code"/>); <see cref="EscapeStep.Whole"/>: the escape is
    /// done, <paramref name="unit"/> its code unit after <paramref name="high"/> (0 unless it ends a pair).
    /// </summary>
    private static EscapeStep UnicodeDigit(ref int code, char c, out char high, out char unit)
    {
        (high, unit) = ('\0', '\0');
        if (!char.IsAsciiHexDigit(c)) return EscapeStep.Refused;
        int left = code & 7, pending = code >> 19, value = ((code >> 3) & 0xFFFF) * 16 + HexValue(c), digit = 4 - left;
        bool paired = pending != 0 ? !((digit == 0 && value != 0xD) || (digit == 1 && value < 0xDC)) : !(digit == 1 && value is >= 0xDC and <= 0xDF);
        if (!paired) return EscapeStep.Refused;
        if (left > 1)
        {
            code = pending << 19 | value << 3 | (left - 1);
            return EscapeStep.Digit;
        }
        if (pending == 0 && char.IsHighSurrogate((char)value))
        {
            code = (value - 0xD7FF) << 19;
            return EscapeStep.High;
        }
        code = 0;
        (high, unit) = (pending == 0 ? '\0' : (char)(pending + 0xD7FF), (char)value);
        return EscapeStep.Whole;
    }

    /// <summary>A hexadecimal digit's value.</summary>
    private static int HexValue(char c) => c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;

    /// <summary>The character a one-letter escape stands for (null: not an escape).</summary>
    private static char? Unescaped(char c) => c switch
    {
        '"' => '"', '\\' => '\\', '/' => '/', 'b' => '\b', 'f' => '\f', 'n' => '\n', 'r' => '\r', 't' => '\t',
        _ => null,
    };

    /// <summary>Whether the object's schema leaves a declared key not yet written.</summary>
    private static bool KeysLeft(Frame frame) => (All(frame.Schema.Keys.Length) & ~frame.Seen) != 0;

    /// <summary>Whether <paramref name="c"/> would continue the number being read (not end it).</summary>
    private static bool NumberGoesOn(Mode mode, char c) =>
        char.IsAsciiDigit(c) || c is '.' or 'e' or 'E' || (c is '+' or '-' && mode == Mode.Exponent) || mode is Mode.Minus or Mode.Dot or Mode.Exponent or Mode.ExponentSign;

    /// <summary>A number ends at the first character that cannot continue it, which then counts as what follows it.</summary>
    private bool EndNumber(ref State s, char c)
    {
        if (s.Number is { } number && !s.Next.Bounds!.Holds(number)) return false;
        s.Number = null;
        s.Mode = Mode.After;
        s.Blanks = 0;
        return Json(ref s, c);
    }

    private static bool Whitespace(ref State s) => ++s.Blanks <= MaxWhitespace;

    private static bool BeginValue(ref State s, char c)
    {
        s.Blanks = 0;
        // Branches (anyOf/oneOf) begin with different characters: this one picks.
        if (s.Next.Pick(c) is not { } schema) return false;
        s.Next = schema;
        if (schema.Values is not null)
        {
            s.Mode = Mode.Enum;
            s.Matched = 0;
            if (!Narrow(ref s, schema.Values, c, out _)) return false;
            // An item of an array of unique items: the values written already are not offered.
            if (s.Frames is { IsObject: false } array && array.Schema.UniqueValues == schema.Values) s.Candidates &= ~array.Used;
            return s.Candidates != 0;
        }
        var allowed = schema.Allowed;
        switch (c)
        {
            case '{': return allowed.HasFlag(JsonSchema.Kinds.Object) && Open(ref s, objects: true);
            case '[': return allowed.HasFlag(JsonSchema.Kinds.Array) && Open(ref s, objects: false);
            case '"':
                if (!allowed.HasFlag(JsonSchema.Kinds.String)) return false;
                s.Mode = Mode.String;
                s.Length = 0;
                s.Pattern = schema.Pattern?.Start ?? 0;
                // An item of an array of unique items: its text is kept to tell it from the strings written before.
                s.ItemText = s.Frames is { IsObject: false, Schema.UniqueItems: true } ? "" : null;
                return true;
            case 't' or 'f':
                if (!allowed.HasFlag(JsonSchema.Kinds.Boolean)) return false;
                s.Mode = c == 't' ? Mode.True : Mode.False;
                s.Matched = 1;
                return true;
            case 'n':
                if (!allowed.HasFlag(JsonSchema.Kinds.Null)) return false;
                s.Mode = Mode.Null;
                s.Matched = 1;
                return true;
            default:
                if (c != '-' && !char.IsAsciiDigit(c) || (allowed & (JsonSchema.Kinds.Number | JsonSchema.Kinds.Integer)) == 0) return false;
                s.IntegerOnly = !allowed.HasFlag(JsonSchema.Kinds.Number);
                s.Mode = c == '-' ? Mode.Minus : c == '0' ? Mode.Zero : Mode.Integer;
                s.Matched = 1;
                s.Number = null;
                if (schema.Bounds is not { } bounds) return true;
                s.Number = c.ToString();
                return bounds.Reachable(s.Number, s.IntegerOnly, MaxNumber - 1);
        }
    }

    private static bool Open(ref State s, bool objects)
    {
        if (s.Depth == MaxDepth) return false;
        s.Frames = new Frame(s.Next, objects, 0, s.Frames);
        s.Depth++;
        s.Mode = objects ? Mode.ObjectOpen : Mode.ArrayOpen;
        if (!objects) s.Next = s.Next.ItemSchema(0);
        s.Blanks = 0;
        return true;
    }

    /// <summary>Closes an object, once every required key (and every key a written key depends on,
    /// <see cref="JsonSchema.RequiredWith"/>) is written and it has <c>minProperties</c> keys.</summary>
    private bool CloseObject(ref State s)
    {
        var frame = s.Frames!;
        if ((frame.Schema.RequiredWith(frame.Seen) & ~frame.Seen) != 0 || frame.Count < frame.Schema.MinProperties) return false;
        Close(ref s);
        return true;
    }

    private void Close(ref State s)
    {
        s.Frames = s.Frames!.Parent;
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

    private static readonly ConditionalWeakTable<string[], (char First, int[] Ids)[]> Grouped = new();

    /// <summary>The token ids of <paramref name="pieces"/> by their text's first character (tokens without text left
    /// out), made once per table.</summary>
    public static (char First, int[] Ids)[] ByFirstCharacter(string[] pieces) => Grouped.GetValue(pieces, p =>
        [.. Enumerable.Range(0, p.Length).Where(id => p[id].Length > 0).GroupBy(id => p[id][0]).Select(g => (g.Key, g.ToArray()))]);
}
