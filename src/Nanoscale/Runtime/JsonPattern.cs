using System.Globalization;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>
/// A JSON Schema <c>pattern</c> (ECMA-262 regular expression, unanchored unless it writes <c>^</c>/<c>$</c>) as a
/// deterministic automaton over a string's characters, built lazily from a Thompson NFA: <see cref="JsonConstraint"/>
/// feeds it each character of a string value and refuses a character after which no completion can match, so the
/// string that closes always matches. The subset: literals and escapes (<c>\d \w \s \D \W \S</c>, <c>\t \n \r \f \v \0</c>,
/// <c>\xHH</c>, <c>\uHHHH</c>, escaped punctuation), <c>.</c>, classes with ranges and negation, groups (capturing,
/// <c>(?:)</c>, named), alternation, the quantifiers <c>* + ? {n} {n,} {n,m}</c> (lazy or not: the same language) and
/// the anchors <c>^ $</c>. Lookaround, backreferences, word boundaries and <c>\cX</c> are outside it
/// (<see cref="TryCompile"/> gives null, and the string is left free). Where .NET's and ECMAScript's classes differ
/// (<c>\s</c>, <c>\w</c>, <c>.</c>), the narrower is taken, so what the automaton allows matches under both.
/// Written here because .NET's <c>Regex</c> cannot say whether a prefix can still be completed to a match.
/// </summary>
internal sealed class JsonPattern
{
    /// <summary>NFA states at most (a counted repetition is written out).</summary>
    public const int MaxStates = 4096;

    public const int Dead = -1;

    /// <summary>Bytes, about, the lazily built DFA may hold (its states' members, transition tables and keys). States are
    /// made as the text and the token pieces tried meet them, so an expression whose DFA is exponential (an open-ended
    /// repetition followed by a long counted one) grows with every step; past this it ends the text with an
    /// <see cref="InputException"/> rather than grow without bound. The formats' and ordinary expressions' DFAs stay
    /// far below a megabyte. Read when a pattern is compiled (a test lowers it).</summary>
    internal static long MaxBytes { get; set; } = 32L << 20;

    private readonly long _maxBytes = MaxBytes;
    private long _bytes;

    // Where a new class of characters begins: every character class's range starts and ends there, so the characters
    // between two cuts move every NFA state alike, and a DFA state keeps one move for them all beyond ASCII (a mask
    // tries tens of thousands of distinct characters; one move each made the formats' automata ~15 MB).
    private readonly char[] _cuts;

    /// <summary>The sorted, distinct places where <paramref name="ranges"/> begin and end (one past).</summary>
    internal static char[] Cuts(IEnumerable<(char Low, char High)> ranges)
    {
        var cuts = new SortedSet<char>();
        foreach (var (low, high) in ranges)
        {
            cuts.Add(low);
            if (high < char.MaxValue) cuts.Add((char)(high + 1));
        }
        return [.. cuts];
    }

    /// <summary>The class of <paramref name="c"/> among <paramref name="cuts"/>: how many cuts are at or below it.</summary>
    internal static int ClassOf(char[] cuts, char c)
    {
        int i = Array.BinarySearch(cuts, c);
        return i >= 0 ? i + 1 : ~i;
    }

    /// <summary>Bytes, about, the DFA holds now.</summary>
    internal long Bytes
    {
        get
        {
            lock (_gate) return _bytes;
        }
    }

    // The NFA: per state, a character class to move on (null: none) and its target, and epsilon edges; anchors are
    // epsilon edges taken only at the start (^) or only at the end ($).
    private readonly CharClass?[] _class;
    private readonly int[] _target;
    private readonly List<int>[] _epsilon;
    private readonly List<int>[] _atStart;
    private readonly List<int>[] _atEnd;
    private readonly int _final;
    private readonly int[] _distance; // characters at least from a state to a match (int.MaxValue: none)

    private readonly object _gate = new();
    private readonly List<DfaState> _states = [];
    private readonly Dictionary<string, int> _ids = [];

    public string Source { get; }

    /// <summary>The automaton's state before any character.</summary>
    public int Start { get; }

    private sealed class DfaState(int[] members, bool acceptsAll, bool acceptsAtEnd, int distance, bool continues)
    {
        public readonly bool Continues = continues;     // some character can follow
        public readonly int[] Members = members;
        public readonly bool AcceptsAll = acceptsAll;    // a match was found: any continuation still matches
        public readonly bool AcceptsAtEnd = acceptsAtEnd; // the string may end here
        public readonly int Distance = distance;        // characters at least to a match
        public readonly int[] Ascii = Enumerable.Repeat(-2, 128).ToArray(); // -2: not computed yet
        public Dictionary<int, int>? Other; // beyond ASCII: by the character's class (see _cuts)
    }

    private JsonPattern(string source, Builder nfa, int start, int final)
    {
        Source = source;
        int n = nfa.Count;
        _class = [.. nfa.Classes];
        _target = [.. nfa.Targets];
        _epsilon = [.. nfa.Epsilon];
        _atStart = [.. nfa.AtStart];
        _atEnd = [.. nfa.AtEnd];
        _final = final;
        _distance = Distances(n);
        _cuts = Cuts(_class.Where(c => c is not null).SelectMany(c => c!.Ranges));
        Start = Intern(Closure([start], atStart: true));
    }

    /// <summary>The automaton of <paramref name="pattern"/>, or null when it is outside the subset or too large.</summary>
    /// <param name="pattern">The expression.</param>
    /// <param name="shown">How an error names it (the expression as the user wrote it, before anchors were added).</param>
    public static JsonPattern? TryCompile(string pattern, string? shown = null)
    {
        try
        {
            var builder = new Builder();
            var parser = new Parser(pattern, builder);
            var body = parser.Parse();
            // Unanchored at the start: any characters may come first (a state that loops on every character).
            int loop = builder.Add();
            builder.Classes[loop] = CharClass.All;
            builder.Targets[loop] = loop;
            builder.Epsilon[loop].Add(body.Start);
            int final = builder.Add();
            builder.Epsilon[body.End].Add(final);
            int start = builder.Add();
            builder.Epsilon[start].Add(loop);
            return new JsonPattern(shown ?? pattern, builder, start, final);
        }
        catch (FormatException)
        {
            return null;
        }
    }

    /// <summary>
    /// The pattern a JSON Schema <c>format</c> stands for (null: a format left free): <c>date</c>, <c>time</c> and
    /// <c>date-time</c> as RFC 3339 writes them (a day of February at most 28, no leap second and no year 0000: a
    /// narrower set, every member valid), <c>duration</c> (RFC 3339's appendix A), <c>uuid</c>, <c>ipv4</c>, <c>ipv6</c> (its full form of
    /// eight groups), <c>hostname</c> (labels of 1–63 letters, digits and inner hyphens) and <c>email</c> (a dotted
    /// local part of letters, digits, '_', '+', '-' — one dot at most, 64 characters at most — at a host name with a top-level domain of letters).
    /// </summary>
    public static JsonPattern? ForFormat(string format) => format switch
    {
        "date" => TryCompile("^" + Date + "$"),
        "time" => TryCompile("^" + Time + "$"),
        "date-time" => TryCompile("^" + Date + "T" + Time + "$"),
        "duration" => TryCompile(@"^P(?:(?:\d+D|\d+M(?:\d+D)?|\d+Y(?:\d+M(?:\d+D)?)?)(?:" + DurationTime + ")?|" + DurationTime + @"|\d+W)$"),
        "uuid" => TryCompile("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
        "ipv4" => TryCompile(@"^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$"),
        "ipv6" => TryCompile("^(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}$"),
        "hostname" => TryCompile("^" + Label + @"(?:\." + Label + ")*$"),
        "email" => TryCompile(@"^[A-Za-z0-9_+-]{1,32}(?:\.[A-Za-z0-9_+-]{1,31})?@(?:" + Label + @"\.)+[A-Za-z]{2,63}$"),
        _ => null,
    };

    // Years 0001–9999: RFC 3339 allows 0000, but .NET's DateTime, Python's datetime and JsonSchema.Net's validator do not
    // (a walk test met it).
    private const string Date = @"(?:[1-9]\d{3}|0[1-9]\d{2}|00[1-9]\d|000[1-9])-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)";
    private const string Time = @"(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,9})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)";
    private const string DurationTime = @"T(?:\d+H(?:\d+M(?:\d+S)?)?|\d+M(?:\d+S)?|\d+S)";
    private const string Label = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";

    /// <summary>The state after <paramref name="c"/>, or <see cref="Dead"/> when no match can follow.</summary>
    public int Next(int state, char c)
    {
        if (state == Dead) return Dead;
        lock (_gate)
        {
            var from = _states[state];
            if (from.AcceptsAll) return state;
            if (c < 128 && from.Ascii[c] != -2) return from.Ascii[c];
            int group = c < 128 ? c : ClassOf(_cuts, c);
            if (c >= 128 && from.Other is { } other && other.TryGetValue(group, out int known)) return known;
            var moved = new List<int>();
            foreach (int s in from.Members)
                if (_class[s] is { } cls && cls.Contains(c)) moved.Add(_target[s]);
            int next = moved.Count == 0 ? Dead : Intern(Closure(moved, atStart: false));
            if (next != Dead && _states[next].Distance == int.MaxValue) next = Dead;
            // Every DFA state met is kept: a pattern lives as long as its request's schema, and each new state costs a
            // character of text or of a token piece tried.
            if (c < 128) from.Ascii[c] = next;
            else
            {
                (from.Other ??= [])[group] = next;
                Grow(32);
            }
            return next;
        }
    }

    /// <summary>Whether the string may end in <paramref name="state"/> (it matches).</summary>
    public bool Accepts(int state)
    {
        if (state == Dead) return false;
        lock (_gate) return _states[state].AcceptsAll || _states[state].AcceptsAtEnd;
    }

    /// <summary>Whether some character can follow in <paramref name="state"/> (a whole match of an anchored pattern may
    /// admit none: the text is then finished).</summary>
    public bool Continues(int state)
    {
        if (state == Dead) return false;
        lock (_gate) return _states[state].Continues;
    }

    /// <summary>Characters at least from <paramref name="state"/> to a match (int.MaxValue: none).</summary>
    public int Distance(int state)
    {
        if (state == Dead) return int.MaxValue;
        lock (_gate) return _states[state].Distance;
    }

    private SortedSet<int> Closure(IEnumerable<int> from, bool atStart)
    {
        var set = new SortedSet<int>();
        var stack = new Stack<int>(from);
        while (stack.Count > 0)
        {
            int s = stack.Pop();
            if (!set.Add(s)) continue;
            foreach (int t in _epsilon[s]) stack.Push(t);
            if (atStart) foreach (int t in _atStart[s]) stack.Push(t);
        }
        return set;
    }

    private int Intern(SortedSet<int> members)
    {
        var key = string.Join(',', members);
        if (_ids.TryGetValue(key, out int id)) return id;
        bool all = members.Contains(_final);
        // The end may come where the final state is reached through '$' edges (and epsilons) without a character.
        bool atEnd = all || EndReaches(members);
        int distance = all || atEnd ? 0 : members.Min(s => _distance[s]);
        // A character can follow where a member moves on a character to a state from which a match is still possible.
        bool continues = all || members.Any(s => _class[s] is { IsEmpty: false } && _distance[_target[s]] != int.MaxValue);
        Grow(160 + 4 * members.Count + 4 * 128 + 2 * key.Length);
        _states.Add(new DfaState([.. members], all, atEnd, distance, continues));
        _ids[key] = _states.Count - 1;
        return _states.Count - 1;
    }

    private void Grow(long bytes)
    {
        if ((_bytes += bytes) <= _maxBytes) return;
        throw new InputException($"the regular expression '{(Source.Length > 80 ? Source[..77] + "..." : Source)}' needs more than " +
            $"{_maxBytes >> 20} MiB of automaton here ({_states.Count} states met): too costly to follow further; an expression without " +
            "a long counted repetition after an open-ended one is needed");
    }

    private bool EndReaches(IEnumerable<int> members)
    {
        var seen = new HashSet<int>();
        var stack = new Stack<int>(members);
        while (stack.Count > 0)
        {
            int s = stack.Pop();
            if (s == _final) return true;
            if (!seen.Add(s)) continue;
            foreach (int t in _epsilon[s]) stack.Push(t);
            foreach (int t in _atEnd[s]) stack.Push(t);
        }
        return false;
    }

    /// <summary>Per NFA state, characters at least to a match: 0 where the final state is reached without a character
    /// (through '$' edges too), else a character edge costs 1 and an epsilon edge 0 ('$' edges end the string, so only
    /// the first case takes them; '^' edges are passed only in the start's closure).</summary>
    private int[] Distances(int n)
    {
        var distance = new int[n];
        Array.Fill(distance, int.MaxValue);
        var incomingEpsilon = new List<int>[n];
        var incomingEnd = new List<int>[n];
        var incomingChar = new List<int>[n];
        for (int s = 0; s < n; s++) (incomingEpsilon[s], incomingEnd[s], incomingChar[s]) = ([], [], []);
        for (int s = 0; s < n; s++)
        {
            foreach (int t in _epsilon[s]) incomingEpsilon[t].Add(s);
            foreach (int t in _atEnd[s]) incomingEnd[t].Add(s);
            if (_class[s] is { IsEmpty: false }) incomingChar[_target[s]].Add(s);
        }
        // Distance 0: the states that reach the final one through epsilon and '$' edges alone.
        var deque = new LinkedList<int>();
        distance[_final] = 0;
        var zero = new Stack<int>([_final]);
        while (zero.Count > 0)
        {
            int t = zero.Pop();
            deque.AddLast(t);
            foreach (int s in incomingEpsilon[t].Concat(incomingEnd[t]))
                if (distance[s] != 0)
                {
                    distance[s] = 0;
                    zero.Push(s);
                }
        }
        // 0-1 breadth-first search over the reversed edges.
        while (deque.Count > 0)
        {
            int t = deque.First!.Value;
            deque.RemoveFirst();
            foreach (int s in incomingEpsilon[t])
                if (distance[t] < distance[s])
                {
                    distance[s] = distance[t];
                    deque.AddFirst(s);
                }
            foreach (int s in incomingChar[t])
                if (distance[t] + 1 < distance[s])
                {
                    distance[s] = distance[t] + 1;
                    deque.AddLast(s);
                }
        }
        return distance;
    }

    /// <summary>The NFA under construction.</summary>
    private sealed class Builder
    {
        public readonly List<CharClass?> Classes = [];
        public readonly List<int> Targets = [];
        public readonly List<List<int>> Epsilon = [];
        public readonly List<List<int>> AtStart = [];
        public readonly List<List<int>> AtEnd = [];
        public int Count => Classes.Count;

        public int Add()
        {
            if (Count >= MaxStates) throw new FormatException("the pattern's automaton is too large");
            Classes.Add(null);
            Targets.Add(-1);
            Epsilon.Add([]);
            AtStart.Add([]);
            AtEnd.Add([]);
            return Count - 1;
        }
    }

    /// <summary>A fragment of the NFA: one entry state and one exit state.</summary>
    private readonly record struct Fragment(int Start, int End);

    /// <summary>Recursive descent over the pattern, building fragments as it goes (a repeated atom is re-parsed to copy it).</summary>
    private sealed class Parser(string text, Builder nfa)
    {
        private int _at;
        private int _depth;

        public Fragment Parse()
        {
            var whole = Alternation();
            if (_at != text.Length) throw new FormatException("unbalanced parenthesis");
            return whole;
        }

        private Fragment Alternation()
        {
            var first = Sequence();
            if (!Peek('|')) return first;
            int start = nfa.Add(), end = nfa.Add();
            nfa.Epsilon[start].Add(first.Start);
            nfa.Epsilon[first.End].Add(end);
            while (Peek('|'))
            {
                _at++;
                var next = Sequence();
                nfa.Epsilon[start].Add(next.Start);
                nfa.Epsilon[next.End].Add(end);
            }
            return new(start, end);
        }

        private Fragment Sequence()
        {
            int start = nfa.Add();
            int end = start;
            while (_at < text.Length && text[_at] != '|' && text[_at] != ')')
            {
                var piece = Quantified();
                nfa.Epsilon[end].Add(piece.Start);
                end = piece.End;
            }
            return new(start, end);
        }

        private Fragment Quantified()
        {
            int atomStart = _at;
            var atom = Atom();
            int atomEnd = _at;
            if (_at >= text.Length) return atom;
            int min, max; // max −1: unbounded
            char q = text[_at];
            if (q == '*') (min, max) = (0, -1);
            else if (q == '+') (min, max) = (1, -1);
            else if (q == '?') (min, max) = (0, 1);
            else if (q == '{' && TryBraces(out min, out max, out int length)) _at += length - 1;
            else return atom;
            _at++;
            if (Peek('?')) _at++; // lazy: the same language
            if (max != -1 && max < min) throw new FormatException("a repetition's maximum below its minimum");
            if (Peek('*') || Peek('+') || Peek('{') && TryBraces(out _, out _, out _)) throw new FormatException("a repeated quantifier");
            int after = _at;
            // Copies of the atom: re-parse its text for each further copy.
            Fragment Copy(bool first)
            {
                if (first) return atom;
                _at = atomStart;
                var copy = Atom();
                if (_at != atomEnd) throw new FormatException("an atom that reads differently twice");
                return copy;
            }
            int start = nfa.Add();
            int end = start;
            bool firstUsed = false;
            for (int i = 0; i < min; i++)
            {
                var c = Copy(!firstUsed);
                firstUsed = true;
                nfa.Epsilon[end].Add(c.Start);
                end = c.End;
            }
            if (max == -1)
            {
                var c = Copy(!firstUsed);
                int loop = nfa.Add();
                nfa.Epsilon[end].Add(loop);
                nfa.Epsilon[loop].Add(c.Start);
                nfa.Epsilon[c.End].Add(loop);
                end = loop;
            }
            else
            {
                int exit = nfa.Add();
                for (int i = min; i < max; i++)
                {
                    var c = Copy(!firstUsed);
                    firstUsed = true;
                    nfa.Epsilon[end].Add(exit);
                    nfa.Epsilon[end].Add(c.Start);
                    end = c.End;
                }
                nfa.Epsilon[end].Add(exit);
                end = exit;
            }
            _at = after;
            return new(start, end);
        }

        /// <summary>A quantifier <c>{n}</c>, <c>{n,}</c> or <c>{n,m}</c> at the cursor (else '{' is a literal, as
        /// ECMAScript's Annex B reads it).</summary>
        private bool TryBraces(out int min, out int max, out int length)
        {
            (min, max, length) = (0, 0, 0);
            int close = text.IndexOf('}', _at);
            if (close < 0) return false;
            var inside = text.AsSpan(_at + 1, close - _at - 1);
            int comma = inside.IndexOf(',');
            var low = comma < 0 ? inside : inside[..comma];
            if (low.Length == 0 || low.Length > 4 || !int.TryParse(low, NumberStyles.None, CultureInfo.InvariantCulture, out min)) return false;
            if (comma < 0) max = min;
            else if (comma == inside.Length - 1) max = -1;
            else if (inside.Length - comma - 1 > 4 || !int.TryParse(inside[(comma + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out max)) return false;
            length = close - _at + 1;
            return true;
        }

        private Fragment Atom()
        {
            char c = text[_at++];
            switch (c)
            {
                case '(':
                {
                    if (Peek('?'))
                    {
                        if (_at + 1 < text.Length && text[_at + 1] == ':') _at += 2;
                        else if (_at + 1 < text.Length && text[_at + 1] == '<' && _at + 2 < text.Length && text[_at + 2] is not ('=' or '!'))
                        {
                            int close = text.IndexOf('>', _at);
                            if (close < 0) throw new FormatException("an unclosed group name");
                            _at = close + 1;
                        }
                        else throw new FormatException("lookaround is outside the subset");
                    }
                    if (++_depth > 64) throw new FormatException("groups nested too deep");
                    var inner = Alternation();
                    _depth--;
                    if (!Peek(')')) throw new FormatException("an unclosed group");
                    _at++;
                    return inner;
                }
                case ')' or '*' or '+' or '?':
                    throw new FormatException($"'{c}' with nothing to apply to");
                case '^' or '$':
                {
                    int start = nfa.Add(), end = nfa.Add();
                    (c == '^' ? nfa.AtStart : nfa.AtEnd)[start].Add(end);
                    return new(start, end);
                }
                case '.':
                    return Class(CharClass.Dot);
                case '[':
                    return Class(Bracket());
                case '\\':
                    return Class(Escape(inClass: false));
                default:
                    return Class(CharClass.Of(c, c));
            }
        }

        private Fragment Class(CharClass cls)
        {
            int start = nfa.Add(), end = nfa.Add();
            nfa.Classes[start] = cls;
            nfa.Targets[start] = end;
            return new(start, end);
        }

        private CharClass Bracket()
        {
            bool negated = Peek('^');
            if (negated) _at++;
            var ranges = new List<(char, char)>();
            while (true)
            {
                if (_at >= text.Length) throw new FormatException("an unclosed class");
                char c = text[_at];
                if (c == ']') { _at++; break; } // "[]" matches nothing in ECMAScript, "[^]" anything
                var low = ClassAtom();
                if (Peek('-') && _at + 1 < text.Length && text[_at + 1] != ']')
                {
                    _at++;
                    var high = ClassAtom();
                    if (low.Single is not { } lo || high.Single is not { } hi || hi < lo) throw new FormatException("a bad class range");
                    ranges.Add((lo, hi));
                }
                else ranges.AddRange(low.Ranges);
            }
            var set = new CharClass(ranges);
            return negated ? set.Complement() : set;
        }

        private CharClass ClassAtom()
        {
            char c = text[_at++];
            if (c != '\\') return CharClass.Of(c, c);
            return Escape(inClass: true);
        }

        private CharClass Escape(bool inClass)
        {
            if (_at >= text.Length) throw new FormatException("a pattern that ends in '\\'");
            char c = text[_at++];
            switch (c)
            {
                case 'd': return CharClass.Digit;
                case 'D': return CharClass.Digit.Complement();
                case 'w': return CharClass.Word;
                case 'W': return CharClass.NotWord;
                case 's': return CharClass.Space;
                case 'S': return CharClass.NotSpace;
                case 't': return CharClass.Of('\t', '\t');
                case 'n': return CharClass.Of('\n', '\n');
                case 'r': return CharClass.Of('\r', '\r');
                case 'f': return CharClass.Of('\f', '\f');
                case 'v': return CharClass.Of('\v', '\v');
                case '0' when !(_at < text.Length && char.IsAsciiDigit(text[_at])): return CharClass.Of('\0', '\0');
                case 'b' when inClass: return CharClass.Of('\b', '\b');
                case 'x' or 'u':
                {
                    char h = Hex(c == 'x' ? 2 : 4);
                    return CharClass.Of(h, h);
                }
                default:
                    // Escaped punctuation is itself; letters and digits are classes, assertions or references
                    // outside the subset.
                    if (char.IsAsciiLetterOrDigit(c)) throw new FormatException($"'\\{c}' is outside the subset");
                    return CharClass.Of(c, c);
            }
        }

        private char Hex(int digits)
        {
            if (_at + digits > text.Length || !int.TryParse(text.AsSpan(_at, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int value))
                throw new FormatException("a bad hex escape");
            _at += digits;
            return (char)value;
        }

        private bool Peek(char c) => _at < text.Length && text[_at] == c;
    }

    /// <summary>A set of UTF-16 code units as sorted, disjoint ranges.</summary>
    internal sealed class CharClass
    {
        private readonly (char Low, char High)[] _ranges;

        public CharClass(IEnumerable<(char Low, char High)> ranges)
        {
            var sorted = ranges.OrderBy(r => r.Low).ToList();
            var merged = new List<(char, char)>();
            foreach (var (low, high) in sorted)
            {
                if (merged.Count > 0 && low <= merged[^1].Item2 + 1)
                    merged[^1] = (merged[^1].Item1, (char)Math.Max(merged[^1].Item2, high));
                else merged.Add((low, high));
            }
            _ranges = [.. merged];
        }

        public IReadOnlyList<(char Low, char High)> Ranges => _ranges;

        public bool IsEmpty => _ranges.Length == 0;

        public char? Single => _ranges.Length == 1 && _ranges[0].Low == _ranges[0].High ? _ranges[0].Low : null;

        public static CharClass Of(char low, char high) => new([(low, high)]);

        public bool Contains(char c)
        {
            int lo = 0, hi = _ranges.Length - 1;
            while (lo <= hi)
            {
                int mid = (lo + hi) >> 1;
                if (c < _ranges[mid].Low) hi = mid - 1;
                else if (c > _ranges[mid].High) lo = mid + 1;
                else return true;
            }
            return false;
        }

        public CharClass Complement()
        {
            var result = new List<(char, char)>();
            int next = 0;
            foreach (var (low, high) in _ranges)
            {
                if (low > next) result.Add(((char)next, (char)(low - 1)));
                next = high + 1;
            }
            if (next <= char.MaxValue) result.Add(((char)next, char.MaxValue));
            return new(result);
        }

        private static CharClass Where(Func<char, bool> member)
        {
            var ranges = new List<(char, char)>();
            int start = -1;
            for (int c = 0; c <= char.MaxValue + 1; c++)
            {
                bool inside = c <= char.MaxValue && member((char)c);
                if (inside && start < 0) start = c;
                else if (!inside && start >= 0)
                {
                    ranges.Add(((char)start, (char)(c - 1)));
                    start = -1;
                }
            }
            return new(ranges);
        }

        public static readonly CharClass All = Of('\0', char.MaxValue);
        public static readonly CharClass Digit = Of('0', '9');

        /// <summary>ECMAScript's <c>\w</c> (ASCII); .NET's is wider, so these match under both.</summary>
        public static readonly CharClass Word = new([('0', '9'), ('A', 'Z'), ('_', '_'), ('a', 'z')]);

        /// <summary>Not a word character under either: no letter, digit, mark or connector of any script.</summary>
        public static readonly CharClass NotWord = Where(c => !(char.IsLetterOrDigit(c) || c == '_'
            || CharUnicodeInfo.GetUnicodeCategory(c) is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark
                or UnicodeCategory.EnclosingMark or UnicodeCategory.ConnectorPunctuation or UnicodeCategory.LetterNumber));

        /// <summary>Whitespace under both: the ASCII blanks (ECMAScript's and .NET's <c>\s</c> differ beyond them).</summary>
        public static readonly CharClass Space = new([('\t', '\r'), (' ', ' ')]);

        /// <summary>Not whitespace under either.</summary>
        public static readonly CharClass NotSpace = Where(c => !char.IsWhiteSpace(c) && c != '\uFEFF');

        /// <summary><c>.</c>: any character but the line ends of either (\n, \r, U+2028, U+2029).</summary>
        public static readonly CharClass Dot = new CharClass([('\n', '\n'), ('\r', '\r'), ('\u2028', '\u2029')]).Complement();
    }
}
