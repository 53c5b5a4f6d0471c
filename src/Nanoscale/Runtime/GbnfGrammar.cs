using System.Globalization;
using System.Text;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>
/// A GBNF grammar (llama.cpp's format: <c>name ::= alternatives</c>, <c>root</c> the whole text; literals
/// <c>"…"</c> with escapes, classes <c>[a-z]</c> and <c>[^…]</c>, <c>.</c>, rule references, groups, <c>| * + ?</c> and
/// <c>{m} {m,} {m,n} {,n}</c>, <c># comments</c>, token references <c>&lt;[id]&gt;</c>, <c>&lt;text&gt;</c> and
/// <c>!&lt;…&gt;</c>, which match whole tokens) as a pushdown recognizer over characters, the way llama.cpp's own
/// grammar sampler works: a position in the text is a set of stacks of grammar positions, each with a character element
/// on top; a character moves every stack whose top accepts it and expands the result again. Repetitions become rules of
/// their own (<c>x*</c> is <c>r ::= x r | ε</c>), a reference in last position does not stay on the stack (so a
/// repetition does not grow it), stacks are shared (hash-consed) and deduplicated, and left recursion is refused when the
/// grammar is read, since it would expand forever. Written here because no maintained .NET library reads GBNF and
/// answers whether a beginning can still be completed.
/// </summary>
internal sealed class GbnfGrammar
{
    /// <summary>Stacks per position at most: a grammar whose ambiguity exceeds it refuses the character rather than grow
    /// without bound.</summary>
    public const int MaxStacks = 4096;

    /// <summary>Elements (characters, references) in a grammar at most, repetitions written out.</summary>
    public const int MaxElements = 65536;

    /// <summary>Bytes, about, the positions and stacks met may hold. They are made as the text and the token pieces tried
    /// meet them, so an ambiguous grammar whose stacks deepen with the text (a rule nested in itself at every character)
    /// grows with every step; past this it ends the text with an <see cref="InputException"/> rather than grow without
    /// bound. Read when a grammar is read (a test lowers it).</summary>
    internal static long MaxBytes { get; set; } = 32L << 20;

    private readonly long _maxBytes = MaxBytes;
    private long _bytes;

    // Where a new class of characters begins (every character element's ranges start and end there): the characters of
    // one class move every stack alike, so a position keeps one move for them all (a mask tries tens of thousands of
    // distinct characters).
    private readonly char[] _cuts;

    private abstract record Element;
    private sealed record CharElement(JsonPattern.CharClass Class) : Element;
    // One whole token by its id (llama.cpp's <[id]>, or <text> resolved to an id when read), or with Negated any
    // single token but that one (!<…>): matched only where a token begins, never by characters.
    private sealed record TokenElement(int Id, bool Negated) : Element
    {
        public bool Matches(int id) => (id == Id) != Negated;
    }
    private sealed record RefElement(int Rule) : Element;
    private sealed record EndElement : Element;

    // All alternatives of all rules, flat: each alternative's elements then an EndElement.
    private readonly List<Element> _elements;
    private readonly List<List<int>> _alternatives; // per rule, the index of each alternative's first element
    private readonly object _gate = new();
    private readonly Dictionary<(int, Stack?), Stack> _interned = [];
    private readonly Dictionary<string, Position> _positions = [];

    /// <summary>One stack of grammar positions: the element to match next, then the rest (shared, interned: equal
    /// stacks are one object).</summary>
    internal sealed class Stack(int element, Stack? next, int id)
    {
        public readonly int Element = element;
        public readonly Stack? Next = next;
        public readonly int Id = id;
    }

    /// <summary>A position in the text: the expanded stacks (each with a character on top) and whether the text may end
    /// here (some stack emptied).</summary>
    internal sealed class Position(Stack[] stacks, bool mayEnd)
    {
        public readonly Stack[] Stacks = stacks;
        public readonly bool MayEnd = mayEnd;
        public readonly Dictionary<int, Position?> Moves = []; // by the character (ASCII) or its class beyond (see _cuts)
        public Dictionary<int, Position?>? TokenMoves; // by token id, where a token element is on top of a stack
    }

    /// <summary>The position before any character.</summary>
    public Position Start { get; }

    private GbnfGrammar(Parser parsed, string root)
    {
        _elements = parsed.Elements;
        _alternatives = parsed.Alternatives;
        if (!parsed.Rules.TryGetValue(root, out int rootRule)) throw new FormatException($"no rule named '{root}'");
        RefuseLeftRecursion(parsed);
        _cuts = JsonPattern.Cuts(_elements.OfType<CharElement>().SelectMany(e => e.Class.Ranges));
        _named = [.. _elements.OfType<TokenElement>().Select(t => t.Id)];
        TokenIds = [.. _named];
        // The start: one stack holding a reference to the root, expanded.
        _elements.Add(new RefElement(rootRule));
        _elements.Add(new EndElement());
        Start = Expand([Intern(_elements.Count - 2, null)]) ?? throw new FormatException("the grammar matches nothing");
    }

    /// <summary>Reads <paramref name="text"/>; the recognizer starts at <paramref name="root"/>. Token references
    /// (<c>&lt;[id]&gt;</c>; <c>&lt;text&gt;</c>, the token whose text that is, found by <paramref name="tokenId"/>;
    /// either negated with <c>!</c>) match whole tokens.</summary>
    /// <exception cref="FormatException">A syntax error (with line and column), an undefined rule, left recursion, a
    /// token named by text without <paramref name="tokenId"/> or that it does not know.</exception>
    public static GbnfGrammar Parse(string text, string root = "root", Func<string, int?>? tokenId = null) => new(new Parser(text, tokenId), root);

    /// <summary>The position after <paramref name="c"/>, or null when no text that the grammar matches goes on so.</summary>
    public Position? Next(Position from, char c)
    {
        lock (_gate)
        {
            int group = c < 128 ? c : 128 + JsonPattern.ClassOf(_cuts, c); // ASCII by itself: no search
            if (from.Moves.TryGetValue(group, out var known)) return known;
            var moved = new List<Stack?>();
            foreach (var stack in from.Stacks)
                if (_elements[stack.Element] is CharElement element && element.Class.Contains(c)) moved.Add(Intern(stack.Element + 1, stack.Next));
            var next = moved.Count == 0 ? null : Expand(moved);
            // Kept per position: positions live as long as the request's grammar, one per character of text or piece tried.
            Grow(32);
            from.Moves[group] = next;
            return next;
        }
    }

    /// <summary>Whether nothing can follow: the text matches and no stack waits for a character or token.</summary>
    public static bool Finished(Position position) => position.MayEnd && position.Stacks.Length == 0;

    /// <summary>Whether the grammar has token elements at all (<c>&lt;[id]&gt;</c>, <c>&lt;text&gt;</c>, negated).</summary>
    public bool HasTokens => _named.Count > 0;

    /// <summary>The token ids the grammar names (each once).</summary>
    public IReadOnlyList<int> TokenIds { get; }

    private readonly HashSet<int> _named;

    /// <summary>The token elements on top of <paramref name="position"/>'s stacks: (id, negated) each.</summary>
    public IEnumerable<(int Id, bool Negated)> TokensAt(Position position)
    {
        foreach (var stack in position.Stacks)
            if (_elements[stack.Element] is TokenElement token) yield return (token.Id, token.Negated);
    }

    /// <summary>The position after the whole token <paramref name="id"/> taken by the token elements on top of
    /// <paramref name="from"/>'s stacks, or null when none takes it (its text may still fit character by character:
    /// <see cref="Next"/>).</summary>
    public Position? NextToken(Position from, int id)
    {
        if (!HasTokens) return null;
        // Every id the grammar does not name moves alike (only negated elements take it): one move for them all, so
        // asking each of a vocabulary's ids costs one expansion, not one each.
        int key = _named.Contains(id) ? id : -1;
        lock (_gate)
        {
            if (from.TokenMoves?.TryGetValue(key, out var known) == true) return known;
            var moved = new List<Stack?>();
            foreach (var stack in from.Stacks)
                if (_elements[stack.Element] is TokenElement token && (key < 0 ? token.Negated : token.Matches(id)))
                    moved.Add(Intern(stack.Element + 1, stack.Next));
            var next = moved.Count == 0 ? null : Expand(moved);
            Grow(32);
            (from.TokenMoves ??= [])[key] = next;
            return next;
        }
    }

    /// <summary>The position where either of two ways to read the same token leaves the text (its id taken by a token
    /// element, its text character by character): every stack of both.</summary>
    public Position Merge(Position a, Position b)
    {
        lock (_gate)
        {
            IEnumerable<Stack?> stacks = [.. a.Stacks, .. b.Stacks];
            if (a.MayEnd || b.MayEnd) stacks = stacks.Append(null);
            return Expand(stacks)!;
        }
    }

    private Stack Intern(int element, Stack? next)
    {
        if (_interned.TryGetValue((element, next), out var known)) return known;
        Grow(96);
        var stack = new Stack(element, next, _interned.Count);
        _interned[(element, next)] = stack;
        return stack;
    }

    /// <summary>Expands stacks until a character is on top of each (references replaced by their alternatives, ends
    /// popped); null when none remains and the text may not end either.</summary>
    private Position? Expand(IEnumerable<Stack?> from)
    {
        var result = new List<Stack>();
        bool mayEnd = false;
        var work = new Stack<Stack?>(from);
        var seen = new HashSet<Stack>(ReferenceEqualityComparer.Instance);
        while (work.Count > 0)
        {
            var stack = work.Pop();
            if (stack is null)
            {
                mayEnd = true;
                continue;
            }
            if (!seen.Add(stack)) continue;
            if (seen.Count > MaxStacks * 4) break; // bounded work: what is found stands
            switch (_elements[stack.Element])
            {
                case CharElement or TokenElement:
                    if (result.Count < MaxStacks) result.Add(stack);
                    break;
                case EndElement:
                    work.Push(stack.Next);
                    break;
                case RefElement reference:
                {
                    // A reference in last position leaves nothing to come back to: its rule's alternatives take its place.
                    var rest = _elements[stack.Element + 1] is EndElement ? stack.Next : Intern(stack.Element + 1, stack.Next);
                    foreach (int first in _alternatives[reference.Rule])
                        work.Push(_elements[first] is EndElement ? rest : Intern(first, rest));
                    break;
                }
            }
        }
        if (result.Count == 0 && !mayEnd) return null;
        // Equal positions are one object, so what was learnt of one (its moves) serves every way to reach it.
        result.Sort((a, b) => a.Id.CompareTo(b.Id));
        var key = (mayEnd ? "e" : "") + string.Join(',', result.Select(r => r.Id));
        if (_positions.TryGetValue(key, out var position)) return position;
        Grow(160 + 8 * result.Count + 2 * key.Length);
        return _positions[key] = new Position([.. result], mayEnd);
    }

    private void Grow(long bytes)
    {
        if ((_bytes += bytes) <= _maxBytes) return;
        throw new InputException($"the grammar needs more than {_maxBytes >> 20} MiB of parse positions here ({_positions.Count} positions, " +
            $"{_interned.Count} stacks met): too costly to follow further; a grammar whose rules do not nest deeper with every character is needed");
    }

    /// <summary>Refuses a rule that can reach itself before any character (it would expand forever).</summary>
    private void RefuseLeftRecursion(Parser parsed)
    {
        int rules = _alternatives.Count;
        // Nullable rules, to a fixed point.
        var nullable = new bool[rules];
        for (bool changed = true; changed;)
        {
            changed = false;
            for (int r = 0; r < rules; r++)
                if (!nullable[r] && _alternatives[r].Any(first => NullableFrom(first, nullable)))
                    changed = nullable[r] = true;
        }
        // Rules each rule can begin with, and whether the reference is its alternative's last element (a tail
        // reference replaces the rule on the stack; any other leaves its continuation there, so the stack grows).
        var leftmost = new List<(int Rule, bool Tail)>[rules];
        for (int r = 0; r < rules; r++)
        {
            leftmost[r] = [];
            foreach (int first in _alternatives[r])
                for (int e = first; _elements[e] is RefElement reference; e++)
                {
                    leftmost[r].Add((reference.Rule, _elements[e + 1] is EndElement));
                    if (!nullable[reference.Rule]) break;
                }
        }
        // Left recursion that expands forever: a rule reaching itself before any character through at least one
        // reference that is not a tail (x* where x may be empty is r ::= x r | ε, a tail: expanded once, not refused).
        for (int r = 0; r < rules; r++)
        {
            var seen = new HashSet<(int, bool)>();
            var work = new Stack<(int Rule, bool Grew)>(leftmost[r].Select(e => (e.Rule, !e.Tail)));
            while (work.Count > 0)
            {
                var (next, grew) = work.Pop();
                if (next == r && grew) throw new FormatException($"{parsed.NameOf(r)} is left-recursive (it can begin with itself)");
                if (seen.Add((next, grew)))
                    foreach (var (m, tail) in leftmost[next]) work.Push((m, grew || !tail));
            }
        }
    }

    private bool NullableFrom(int first, bool[] nullable)
    {
        for (int e = first; ; e++)
            switch (_elements[e])
            {
                case EndElement: return true;
                case CharElement or TokenElement: return false;
                case RefElement reference when !nullable[reference.Rule]: return false;
            }
    }

    /// <summary>The GBNF reader: rules into flat element lists, groups and repetitions into rules of their own.</summary>
    private sealed class Parser
    {
        private readonly string _text;
        private int _at;
        public readonly List<Element> Elements = [];
        public readonly List<List<int>> Alternatives = [];
        public readonly Dictionary<string, int> Rules = [];
        private readonly HashSet<int> _defined = [];
        private readonly List<string> _names = [];
        private readonly Dictionary<int, (int Line, int Column)> _firstUse = [];

        private readonly Func<string, int?>? _tokenId;

        public Parser(string text, Func<string, int?>? tokenId = null)
        {
            _text = text;
            _tokenId = tokenId;
            Space(newlines: true);
            while (_at < _text.Length)
            {
                int at = _at;
                var name = Name();
                Space(newlines: false);
                if (!_text.AsSpan(_at).StartsWith("::=")) throw Error("expected '::='");
                _at += 3;
                Space(newlines: true);
                int rule = RuleId(name, at);
                if (!_defined.Add(rule)) throw Error($"rule '{name}' is defined twice", at);
                _current = name;
                Define(rule, Alternation(nested: false));
                Space(newlines: false);
                if (_at < _text.Length && _text[_at] is not ('\n' or '\r')) throw Error("expected the end of the line");
                Space(newlines: true);
            }
            foreach (var (rule, (line, column)) in _firstUse)
                if (!_defined.Contains(rule) && _names[rule] is { } n && !n.StartsWith('\0'))
                    throw new FormatException($"undefined rule '{n}' (line {line}, column {column})");
        }

        public string NameOf(int rule) => _names[rule].StartsWith('\0') ? $"a group or repetition in rule '{_names[rule][1..]}'" : $"rule '{_names[rule]}'";

        private string _current = "";
        private int _depth;

        /// <summary>Groups nested in a rule at most (the reader recurses once per group).</summary>
        private const int MaxNesting = 64;

        private int RuleId(string name, int at)
        {
            if (Rules.TryGetValue(name, out int id)) return id;
            id = NewRule(name);
            Rules[name] = id;
            _firstUse[id] = LineColumn(at);
            return id;
        }

        private int NewRule(string name)
        {
            Alternatives.Add([]);
            _names.Add(name);
            return Alternatives.Count - 1;
        }

        /// <summary>Writes a rule's alternatives (each a list of elements) into the flat list.</summary>
        private void Define(int rule, List<List<Element>> alternatives)
        {
            foreach (var sequence in alternatives)
            {
                if (Elements.Count + sequence.Count + 1 > MaxElements) throw Error($"the grammar is larger than {MaxElements} elements");
                Alternatives[rule].Add(Elements.Count);
                Elements.AddRange(sequence);
                Elements.Add(new EndElement());
            }
        }

        /// <summary>An anonymous rule for a group or repetition.</summary>
        private int Auxiliary(List<List<Element>> alternatives)
        {
            int rule = NewRule("\0" + _current);
            _defined.Add(rule);
            Define(rule, alternatives);
            return rule;
        }

        private List<List<Element>> Alternation(bool nested)
        {
            var alternatives = new List<List<Element>> { Sequence(nested) };
            while (_at < _text.Length && _text[_at] == '|')
            {
                _at++;
                Space(newlines: true);
                alternatives.Add(Sequence(nested));
            }
            return alternatives;
        }

        private List<Element> Sequence(bool nested)
        {
            var sequence = new List<Element>();
            while (_at < _text.Length)
            {
                char c = _text[_at];
                if (c is '|' or ')' or '\n' or '\r' && !(nested && c is '\n' or '\r')) break;
                if (nested && c is '\n' or '\r') { Space(newlines: true); continue; }
                int start = sequence.Count;
                if (c == '"') sequence.AddRange(Literal());
                else if (c == '[') sequence.Add(new CharElement(Class()));
                else if (c == '.')
                {
                    _at++;
                    sequence.Add(new CharElement(JsonPattern.CharClass.All));
                }
                else if (c == '(')
                {
                    _at++;
                    if (++_depth > MaxNesting) throw Error($"groups nested deeper than {MaxNesting}");
                    Space(newlines: true);
                    var inner = Alternation(nested: true);
                    _depth--;
                    if (_at >= _text.Length || _text[_at] != ')') throw Error("expected ')'");
                    _at++;
                    sequence.Add(new RefElement(Auxiliary(inner)));
                }
                else if (IsWordCharacter(c))
                {
                    int at = _at;
                    sequence.Add(new RefElement(RuleId(Name(), at)));
                }
                else if (c == '<' || c == '!' && _at + 1 < _text.Length && _text[_at + 1] == '<') sequence.Add(Token());
                else throw Error($"unexpected '{c}'");
                Space(newlines: nested);
                Repetition(sequence, start, nested);
            }
            return sequence;
        }

        /// <summary>A token reference (llama.cpp's, from its PR 17816): <c>&lt;[id]&gt;</c> by id, <c>&lt;text&gt;</c> the token
        /// whose text is all of it (brackets included, as <c>&lt;|im_end|&gt;</c> or <c>&lt;think&gt;</c>), each negated with a
        /// leading <c>!</c> (any one token but that).</summary>
        private TokenElement Token()
        {
            int at = _at;
            bool negated = _text[_at] == '!';
            if (negated) _at++;
            int close = _text.IndexOf('>', _at + 1);
            int line = _text.IndexOfAny(['\n', '\r'], _at);
            if (close < 0 || line >= 0 && line < close) throw Error("a token reference without its closing '>'");
            string inside = _text[(_at + 1)..close];
            _at = close + 1;
            if (inside.StartsWith('[') && inside.EndsWith(']'))
            {
                if (!int.TryParse(inside.AsSpan(1, inside.Length - 2), NumberStyles.None, CultureInfo.InvariantCulture, out int id))
                    throw Error($"a bad token id '<{inside}>'", at);
                return new TokenElement(id, negated);
            }
            string name = "<" + inside + ">";
            if (inside.Length == 0) throw Error("an empty token reference '<>'", at);
            if (_tokenId is null) throw Error($"the token {name} is named by its text, which needs the model's tokenizer here (use <[id]>)", at);
            return new TokenElement(_tokenId(name) ?? throw Error($"no single token of the model's vocabulary is {name}", at), negated);
        }

        /// <summary>A repetition operator after the last atom (elements <paramref name="start"/>.. of the sequence).</summary>
        private void Repetition(List<Element> sequence, int start, bool nested)
        {
            if (_at >= _text.Length || _text[_at] is not ('*' or '+' or '?' or '{')) return;
            if (sequence.Count == start) throw Error("a repetition with nothing to repeat");
            var atom = sequence.GetRange(start, sequence.Count - start);
            sequence.RemoveRange(start, sequence.Count - start);
            int min, max; // max −1: unbounded
            char op = _text[_at++];
            if (op == '*') (min, max) = (0, -1);
            else if (op == '+') (min, max) = (1, -1);
            else if (op == '?') (min, max) = (0, 1);
            else (min, max) = Braces();
            Space(newlines: nested);
            if (min > 1000 || max > 1000) throw Error("a repetition count over 1000");
            for (int i = 0; i < min; i++) sequence.AddRange(atom);
            if (max == -1)
            {
                // r ::= atom r | ε
                int rule = NewRule("\0" + _current);
                _defined.Add(rule);
                Define(rule, [[.. atom, new RefElement(rule)], []]);
                sequence.Add(new RefElement(rule));
            }
            else if (max > min)
            {
                // (atom (atom (…)?)?)? written inside out
                int rule = Auxiliary([[.. atom], []]);
                for (int i = min + 1; i < max; i++) rule = Auxiliary([[.. atom, new RefElement(rule)], []]);
                sequence.Add(new RefElement(rule));
            }
            if (_at < _text.Length && _text[_at] is '*' or '+' or '?') throw Error("a repeated repetition operator");
        }

        private (int Min, int Max) Braces()
        {
            int close = _text.IndexOf('}', _at);
            if (close < 0) throw Error("expected '}'");
            var inside = _text[_at..close].Replace(" ", "");
            _at = close + 1;
            int comma = inside.IndexOf(',');
            static int Number(string s, int otherwise) =>
                s.Length == 0 ? otherwise : int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : throw new FormatException($"a bad repetition count '{s}'");
            try
            {
                if (comma < 0) return inside.Length > 0 ? (Number(inside, 0), Number(inside, 0)) : throw new FormatException("an empty repetition count");
                int min = Number(inside[..comma], 0), max = Number(inside[(comma + 1)..], -1);
                if (max != -1 && max < min) throw new FormatException("a repetition's maximum below its minimum");
                return (min, max);
            }
            catch (FormatException e)
            {
                throw Error(e.Message);
            }
        }

        private List<Element> Literal()
        {
            _at++; // the opening quote
            var elements = new List<Element>();
            while (true)
            {
                if (_at >= _text.Length || _text[_at] is '\n' or '\r') throw Error("an unclosed string");
                char c = _text[_at];
                if (c == '"')
                {
                    _at++;
                    return elements;
                }
                foreach (char unit in Character())
                    elements.Add(new CharElement(JsonPattern.CharClass.Of(unit, unit)));
            }
        }

        private JsonPattern.CharClass Class()
        {
            _at++; // '['
            bool negated = _at < _text.Length && _text[_at] == '^';
            if (negated) _at++;
            var ranges = new List<(char, char)>();
            while (true)
            {
                if (_at >= _text.Length) throw Error("an unclosed character class");
                if (_text[_at] == ']')
                {
                    _at++;
                    break;
                }
                var low = Single(Character());
                if (_at + 1 < _text.Length && _text[_at] == '-' && _text[_at + 1] != ']')
                {
                    _at++;
                    var high = Single(Character());
                    if (high < low) throw Error("a class range whose end is before its start");
                    ranges.Add((low, high));
                }
                else ranges.Add((low, low));
            }
            var set = new JsonPattern.CharClass(ranges);
            return negated ? set.Complement() : set;
        }

        private char Single(string units) =>
            units.Length == 1 ? units[0] : throw Error("characters beyond U+FFFF in a class are not supported");

        /// <summary>One character of a literal or class, escapes read (as UTF-16 units).</summary>
        private string Character()
        {
            char c = _text[_at++];
            if (c != '\\') return c.ToString();
            if (_at >= _text.Length) throw Error("a lone '\\'");
            char e = _text[_at++];
            switch (e)
            {
                case 'n': return "\n";
                case 'r': return "\r";
                case 't': return "\t";
                case '\\' or '"' or '[' or ']' or '-' or '^' or '/' or '\'': return e.ToString();
                case 'x': return Hex(2);
                case 'u': return Hex(4);
                case 'U': return Hex(8);
                default: throw Error($"an unknown escape '\\{e}'");
            }
        }

        private string Hex(int digits)
        {
            if (_at + digits > _text.Length || !int.TryParse(_text.AsSpan(_at, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int value)
                || value > 0x10FFFF)
                throw Error("a bad hex escape");
            _at += digits;
            return char.ConvertFromUtf32(value is >= 0xD800 and <= 0xDFFF ? 0xFFFD : value);
        }

        private string Name()
        {
            int start = _at;
            while (_at < _text.Length && IsWordCharacter(_text[_at])) _at++;
            if (_at == start) throw Error("expected a rule name");
            return _text[start.._at];
        }

        private static bool IsWordCharacter(char c) => char.IsAsciiLetterOrDigit(c) || c is '-' or '_';

        /// <summary>Blanks and comments; newlines too when <paramref name="newlines"/> (inside parentheses, after
        /// '::=' and '|').</summary>
        private void Space(bool newlines)
        {
            while (_at < _text.Length)
            {
                char c = _text[_at];
                if (c is ' ' or '\t' || newlines && c is '\n' or '\r') _at++;
                else if (c == '#')
                    while (_at < _text.Length && _text[_at] is not ('\n' or '\r')) _at++;
                else break;
            }
        }

        private (int Line, int Column) LineColumn(int at)
        {
            int line = 1, column = 1;
            for (int i = 0; i < at && i < _text.Length; i++)
                if (_text[i] == '\n') (line, column) = (line + 1, 1);
                else column++;
            return (line, column);
        }

        private FormatException Error(string message, int? at = null)
        {
            var (line, column) = LineColumn(at ?? _at);
            return new FormatException($"{message} (line {line}, column {column})");
        }
    }
}
