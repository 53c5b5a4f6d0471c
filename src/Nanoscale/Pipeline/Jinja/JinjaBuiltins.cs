using System.Globalization;
using System.Text;
using static Nanoscale.Pipeline.Jinja.JinjaValues;

namespace Nanoscale.Pipeline.Jinja;

/// <summary>
/// The filters, tests, methods and global functions chat templates call, with Python's and Jinja's meanings:
/// filters <c>trim tojson length count string int float lower upper title capitalize default d first last join
/// replace list items reverse sort selectattr rejectattr select reject map dictsort attr abs round indent safe min max sum
/// unique wordcount</c>; tests
/// <c>defined undefined none boolean true false integer float number string mapping iterable sequence callable sameas
/// eq equalto ne lt gt le ge in even odd divisibleby lower upper</c>; string methods <c>strip lstrip rstrip startswith
/// endswith split rsplit splitlines upper lower title capitalize replace find rfind count join</c>; dict methods
/// <c>items keys values get</c>; globals <c>range namespace raise_exception strftime_now dict</c>. A list or dict
/// cannot be changed (transformers renders in Jinja's immutable sandbox). Anything else is an error that names it.
/// </summary>
internal static class JinjaBuiltins
{
    /// <summary>The longest string a template may build (concatenation, repetition).</summary>
    public const int MaxChars = 1 << 24;

    /// <summary>The longest list a template may build (<c>range</c>, concatenation, repetition).</summary>
    public const int MaxItems = 1 << 20;

    private static readonly HashSet<string> FilterNames =
    [
        "trim", "tojson", "length", "count", "string", "safe", "int", "float", "lower", "upper", "title", "capitalize", "default", "d",
        "first", "last", "join", "replace", "list", "items", "reverse", "sort", "unique", "selectattr", "rejectattr", "map", "abs",
        "round", "indent", "min", "max", "sum", "select", "reject", "dictsort", "attr", "wordcount",
    ];

    public static object? Filter(string name, object? value, IReadOnlyList<object?> a, IReadOnlyDictionary<string, object?> n)
    {
        object? Arg(int index, string key, object? fallback = null) => index >= 0 && index < a.Count ? a[index] : n.TryGetValue(key, out var v) ? v : fallback;
        if (!FilterNames.Contains(name)) throw new JinjaException($"no filter named '{name}'", 0, 0);
        if (value is Undefined)
        {
            // As Jinja's default Undefined: an empty string to string filters, an empty sequence to sequence filters,
            // an error to the rest.
            if (name is "trim" or "upper" or "lower" or "title" or "capitalize" or "replace" or "wordcount" or "indent" or "string") value = "";
            else if (name is "length" or "count" or "list" or "join" or "first" or "last" or "reverse" or "sort" or "unique" or "select" or "reject"
                     or "map" or "selectattr" or "rejectattr" or "min" or "max" or "sum" or "items") value = new List<object?>();
            else if (name is not ("default" or "d" or "int" or "float" or "safe"))
                throw new JinjaException($"{Describe(value)} (filter '{name}')", 0, 0);
        }
        switch (name)
        {
            case "trim": return Strip(Str(value), Arg(0, "chars") as string, true, true);
            case "tojson":
                var indent = Arg(0, "indent");
                return ToJson(value, indent is null or Undefined ? null : (int)ToLong(indent), IsTrue(Arg(-1, "sort_keys", false)));
            case "length" or "count": return Length(value);
            case "string": return Str(value);
            case "safe": return value;
            case "int":
                return value switch
                {
                    long or bool or double => ToLong(value),
                    string s when long.TryParse(s.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long i) => i,
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => (long)d,
                    _ => Arg(0, "default", 0L),
                };
            case "float":
                return value switch
                {
                    long or bool or double => ToDouble(value),
                    string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => d,
                    _ => Arg(0, "default", 0.0),
                };
            case "lower": return Str(value).ToLowerInvariant();
            case "upper": return Str(value).ToUpperInvariant();
            case "title": return JinjaTitle(Str(value));
            case "capitalize": return Capitalize(Str(value));
            case "default" or "d":
                bool boolean = IsTrue(Arg(1, "boolean", false));
                return value is Undefined || (boolean && !IsTrue(value)) ? Arg(0, "default_value", "") : value;
            case "first": return Iterate(value) is { Count: > 0 } f ? f[0] : new Undefined("the first item of an empty sequence");
            case "last":
                if (value is JinjaGenerator) throw new JinjaException("a generator has no last item (add |list first)", 0, 0);
                return Iterate(value) is { Count: > 0 } l ? l[^1] : new Undefined("the last item of an empty sequence");
            case "join":
            {
                var attribute = Arg(1, "attribute") as string;
                var items = Iterate(value).Select(x => attribute is null ? x : Attribute(x, attribute));
                return string.Join(Str(Arg(0, "d", "")), items.Select(Str));
            }
            case "replace":
                return Replace(Str(value), Str(Arg(0, "old")), Str(Arg(1, "new")), Arg(2, "count") is long c ? c : -1);
            case "list": return new List<object?>(Iterate(value));
            case "items":
                return value is OrderedDictionary<string, object?> dict ? new JinjaGenerator(dict.Select(p => (object?)new JinjaTuple([p.Key, p.Value])))
                    : value is List<object?> { Count: 0 } ? new JinjaGenerator([])
                    : new JinjaGenerator(() => throw new JinjaException($"a {TypeName(value)} has no item pairs (items needs a mapping)", 0, 0));
            case "reverse":
                // Python reverses eagerly (a value that cannot be iterated is an error now), into an iterator.
                return value is string rs ? string.Concat(CodePoints(rs).Reverse()) : new JinjaGenerator(Enumerable.Reverse(Iterate(value)));
            case "sort":
            {
                var attribute = Arg(2, "attribute") as string;
                bool caseSensitive = IsTrue(Arg(1, "case_sensitive", false));
                var items = new List<object?>(Iterate(value));
                Comparison<object?> order = (x, y) => Order(SortKey(attribute is null ? x : Attribute(x, attribute), caseSensitive),
                    SortKey(attribute is null ? y : Attribute(y, attribute), caseSensitive));
                List<object?> sorted;
                try { sorted = items.Order(Comparer<object?>.Create(order)).ToList(); }
                catch (InvalidOperationException e) when (e.InnerException is JinjaException inner) { throw inner; }
                if (IsTrue(Arg(0, "reverse", false))) sorted.Reverse();
                return sorted;
            }
            case "unique":
            {
                bool caseSensitive = IsTrue(Arg(0, "case_sensitive", false));
                return Lazily(value, items =>
                {
                    var result = new List<object?>();
                    foreach (var item in items)
                        if (!result.Any(r => Equal(SortKey(r, caseSensitive), SortKey(item, caseSensitive)))) result.Add(item);
                    return result;
                });
            }
            case "selectattr" or "rejectattr":
            {
                bool keep = name == "selectattr";
                var attribute = Str(Arg(0, "attribute"));
                var test = a.Count > 1 ? Str(a[1]) : null;
                var testArgs = a.Skip(2).ToList();
                return Lazily(value, items => items.Where(x =>
                {
                    var v = Attribute(x, attribute);
                    return (test is null ? IsTrue(v) : Test(test, v, testArgs)) == keep;
                }));
            }
            case "select" or "reject":
            {
                bool keep = name == "select";
                var test = a.Count > 0 ? Str(a[0]) : null;
                var testArgs = a.Skip(1).ToList();
                return Lazily(value, items => items.Where(x => (test is null ? IsTrue(x) : Test(test, x, testArgs)) == keep));
            }
            case "dictsort":
            {
                if (value is not OrderedDictionary<string, object?> sortable) throw new JinjaException($"dictsort needs a dict, not a {TypeName(value)}", 0, 0);
                bool caseSensitive = IsTrue(Arg(0, "case_sensitive", false)), byValue = Str(Arg(1, "by", "key")) == "value";
                object? Key(KeyValuePair<string, object?> p)
                {
                    var k = byValue ? p.Value : p.Key;
                    return !caseSensitive && k is string t ? t.ToLowerInvariant() : k;
                }
                List<object?> pairs;
                try { pairs = sortable.Order(Comparer<KeyValuePair<string, object?>>.Create((x, y) => Order(Key(x), Key(y)))).Select(p => (object?)new JinjaTuple([p.Key, p.Value])).ToList(); }
                catch (InvalidOperationException e) when (e.InnerException is JinjaException inner) { throw inner; }
                if (IsTrue(Arg(2, "reverse", false))) pairs.Reverse();
                return pairs;
            }
            case "attr":
            {
                // An attribute only, never an item (Jinja's attr): a dict's or string's methods, nothing else here.
                var attribute = Str(Arg(0, "name"));
                return value switch
                {
                    OrderedDictionary<string, object?> d => (object?)DictMethod(d, attribute) ?? new Undefined($"'dict object' has no attribute '{attribute}'"),
                    string text => (object?)StringMethod(text, attribute) ?? new Undefined($"'str object' has no attribute '{attribute}'"),
                    Namespace ns => Attribute(ns, attribute),
                    _ => new Undefined($"'{TypeName(value)} object' has no attribute '{attribute}'"),
                };
            }
            case "wordcount": return (long)Words.Count(Str(value));
            case "map":
                if (n.TryGetValue("attribute", out var attr))
                    return Lazily(value, items => items.Select(x => Attribute(x, Str(attr)) is Undefined && n.TryGetValue("default", out var dv) ? dv : Attribute(x, Str(attr))));
                if (a.Count == 0) throw new JinjaException("map needs a filter name or attribute=", 0, 0);
                return Lazily(value, items => items.Select(x => Filter(Str(a[0]), x, a.Skip(1).ToList(), n)));
            case "abs": return value is double d2 ? Math.Abs(d2) : (object)Math.Abs(ToLong(value));
            case "round":
            {
                int precision = (int)ToLong(Arg(0, "precision", 0L));
                var method = Str(Arg(1, "method", "common"));
                double x = ToDouble(value), scale = Math.Pow(10, precision);
                return method switch
                {
                    "floor" => Math.Floor(x * scale) / scale,
                    "ceil" => Math.Ceiling(x * scale) / scale,
                    // Python's round: an integer stays one; halves go to the even neighbour.
                    _ when value is long or bool && precision >= 0 => (object)ToLong(value),
                    _ => Math.Round(x * scale, MidpointRounding.ToEven) / scale,
                };
            }
            case "indent":
            {
                var width = Arg(0, "width", 4L);
                var pad = width is string ws ? ws : new string(' ', (int)Math.Clamp(ToLong(width), 0, 1000));
                if (value is not string) throw new JinjaException($"indent needs a string, not a {TypeName(value)}", 0, 0);
                bool first = IsTrue(Arg(1, "first", false)), blank = IsTrue(Arg(2, "blank", false));
                var lines = Str(value).Split('\n');
                for (int k = 0; k < lines.Length; k++)
                    if ((k > 0 || first) && (blank || lines[k].Trim().Length > 0)) lines[k] = pad + lines[k];
                return string.Join('\n', lines);
            }
            case "min" or "max":
            {
                var items = Iterate(value);
                if (items.Count == 0) return new Undefined($"the {name} of an empty sequence");
                bool caseSensitive = IsTrue(Arg(0, "case_sensitive", false));
                var best = items[0];
                foreach (var item in items.Skip(1))
                {
                    int order = Order(SortKey(item, caseSensitive), SortKey(best, caseSensitive));
                    if (name == "min" ? order < 0 : order > 0) best = item;
                }
                return best;
            }
            case "sum":
            {
                object? total = Arg(1, "start", 0L);
                foreach (var item in Iterate(value)) total = Arithmetic("+", total, item);
                return total;
            }
            default: throw new InvalidOperationException($"filter '{name}' is listed but not written");
        }
    }

    public static bool Test(string name, object? value, IReadOnlyList<object?> a)
    {
        object? Arg0() => a.Count > 0 ? a[0] : throw new JinjaException($"the test '{name}' needs an argument", 0, 0);
        return name switch
        {
            "defined" => value is not Undefined,
            "undefined" => value is Undefined,
            "none" => value is null,
            "boolean" => value is bool,
            "true" => value is true,
            "false" => value is false,
            "integer" => value is long,
            "float" => value is double,
            "number" => value is long or double or bool,
            "string" => value is string,
            "mapping" => value is OrderedDictionary<string, object?> or Namespace,
            "iterable" => value is string or List<object?> or OrderedDictionary<string, object?> or Namespace,
            "sequence" => value is string or OrderedDictionary<string, object?> || (value is List<object?> && value is not JinjaGenerator),
            "callable" => value is JinjaCallable,
            "sameas" => ReferenceEquals(value, Arg0()) || (value is null && Arg0() is null) || (value is bool x && Arg0() is bool y && x == y),
            "eq" or "equalto" or "==" => Equal(value, Arg0()),
            "ne" or "!=" => !Equal(value, Arg0()),
            "lt" or "lessthan" or "<" => Order(value, Arg0()) < 0,
            "le" or "<=" => Order(value, Arg0()) <= 0,
            "gt" or "greaterthan" or ">" => Order(value, Arg0()) > 0,
            "ge" or ">=" => Order(value, Arg0()) >= 0,
            "in" => Contains(Arg0(), value),
            "even" => ToLong(value) % 2 == 0,
            "odd" => ToLong(value) % 2 != 0,
            "divisibleby" => value is double || Arg0() is double
                ? ToDouble(Arg0()) != 0 && PythonMod(ToDouble(value), ToDouble(Arg0())) == 0
                : ToLong(Arg0()) is long m && m != 0 && ToLong(value) % m == 0,
            "lower" => Cased(Str(value), upper: false),
            "upper" => Cased(Str(value), upper: true),
            _ => throw new JinjaException($"no test named '{name}'", 0, 0),
        };
    }

    /// <summary>Jinja's sort key: strings lower-cased unless the filter is asked to be case sensitive.</summary>
    private static object? SortKey(object? value, bool caseSensitive) => !caseSensitive && value is string s ? s.ToLowerInvariant() : value;

    /// <summary>Python's <c>str.islower()</c>/<c>isupper()</c>: some cased letter, and none of the other case.</summary>
    private static bool Cased(string s, bool upper) =>
        s.Any(char.IsLetter) && s.Any(c => upper ? char.IsUpper(c) : char.IsLower(c)) && !s.Any(c => upper ? char.IsLower(c) : char.IsUpper(c));

    private static readonly System.Text.RegularExpressions.Regex Words = new(@"\w+", System.Text.RegularExpressions.RegexOptions.CultureInvariant);

    /// <summary>A filter Jinja runs as a generator: truthy whatever it yields, no length, no index; a source that cannot
    /// be iterated fails only when the result is iterated (Jinja's laziness).</summary>
    private static JinjaGenerator Lazily(object? source, Func<List<object?>, IEnumerable<object?>> transform) =>
        new(() => transform(Iterate(source)));

    /// <summary><c>needle in haystack</c>: a substring, a list item, a dict key.</summary>
    public static bool Contains(object? haystack, object? needle) => haystack switch
    {
        string s => needle is string t ? s.Contains(t, StringComparison.Ordinal)
            : throw new JinjaException($"'in <string>' needs a string on the left, not a {TypeName(needle)}", 0, 0),
        JinjaGenerator generator => generator.Items.Any(x => Equal(x, needle)),
        List<object?> list => list.Any(x => Equal(x, needle)),
        OrderedDictionary<string, object?> dict => needle is List<object?> and not JinjaTuple or OrderedDictionary<string, object?>
            ? throw new JinjaException($"unhashable type: '{TypeName(needle)}'", 0, 0)
            : needle is string k && dict.ContainsKey(k),
        Namespace ns => needle is string k2 && ns.Values.ContainsKey(k2),
        Undefined => false,
        _ => throw new JinjaException($"a {TypeName(haystack)} cannot be searched with 'in'", 0, 0),
    };

    public static object? Length(object? value) => value switch
    {
        JinjaGenerator => throw new JinjaException("a generator has no length (add |list first)", 0, 0),
        string s => (long)CodePoints(s).Count(),
        List<object?> l => (long)l.Count,
        OrderedDictionary<string, object?> d => (long)d.Count,
        Undefined => 0L,
        _ => throw new JinjaException($"a {TypeName(value)} has no length", 0, 0),
    };

    /// <summary>The methods of a list a template may call (none that change it): <c>count</c>, <c>index</c>.</summary>
    private static JinjaCallable? ListMethod(List<object?> list, string name) => list is JinjaGenerator ? null : name switch
    {
        "count" => new JinjaCallable(name, (a, _) => (long)list.Count(x => Equal(x, a.Count > 0 ? a[0] : null))),
        "index" => new JinjaCallable(name, (a, _) => list.FindIndex(x => Equal(x, a.Count > 0 ? a[0] : null)) is var i and >= 0
            ? (long)i : throw new JinjaException($"{Repr(a.Count > 0 ? a[0] : null)} is not in the list", 0, 0)),
        _ => null,
    };

    /// <summary><c>x.name</c> as Jinja reads it: a method of a string or dict, else a dict's item; undefined when absent.</summary>
    public static object? Attribute(object? target, string name) => target switch
    {
        Undefined u => throw new JinjaException($"{u.Description} (reading '.{name}')", 0, 0),
        OrderedDictionary<string, object?> dict => (object?)DictMethod(dict, name) ?? (dict.TryGetValue(name, out var v) ? v : new Undefined($"'dict object' has no attribute '{name}'")),
        Namespace ns => ns.Values.TryGetValue(name, out var v) ? v : new Undefined($"the namespace has no attribute '{name}'"),
        string s => (object?)StringMethod(s, name) ?? new Undefined($"'str object' has no attribute '{name}'"),
        List<object?> list => (object?)ListMethod(list, name) ?? new Undefined($"'{TypeName(list)} object' has no attribute '{name}'"),
        _ => new Undefined($"'{TypeName(target)} object' has no attribute '{name}'"),
    };

    /// <summary><c>x[index]</c>: a dict's item (then its attribute), a list's or string's item from either end.</summary>
    public static object? Item(object? target, object? index)
    {
        switch (target)
        {
            case Undefined u: throw new JinjaException($"{u.Description} (reading [{Repr(index)}])", 0, 0);
            case OrderedDictionary<string, object?> dict:
                return index is string key && dict.TryGetValue(key, out var v) ? v
                    : index is string name && DictMethod(dict, name) is { } method ? method
                    : new Undefined($"'dict object' has no attribute {Repr(index)}");
            case Namespace ns: return index is string k && ns.Values.TryGetValue(k, out var nv) ? nv : new Undefined($"the namespace has no attribute {Repr(index)}");
            case JinjaGenerator: return new Undefined("a generator has no items by index (add |list first)");
            case List<object?> list when index is long or bool:
                long i = ToLong(index);
                if (i < 0) i += list.Count;
                return i >= 0 && i < list.Count ? list[(int)i] : new Undefined($"list index {Repr(index)} out of range");
            case string s when index is long or bool:
                var points = CodePoints(s).ToList();
                long j = ToLong(index);
                if (j < 0) j += points.Count;
                return j >= 0 && j < points.Count ? points[(int)j] : new Undefined($"string index {Repr(index)} out of range");
            default:
                return index is string attribute ? Attribute(target, attribute) : new Undefined($"'{TypeName(target)} object' has no item {Repr(index)}");
        }
    }

    /// <summary>Python's <c>sequence[start:stop:step]</c> on a list or string.</summary>
    public static object? Slice(object? target, object? start, object? stop, object? step)
    {
        long stride = step is null or Undefined ? 1 : ToLong(step);
        if (stride == 0) throw new JinjaException("a slice step cannot be zero", 0, 0);
        List<object?> items = target switch
        {
            List<object?> list => list,
            string s => CodePoints(s).Cast<object?>().ToList(),
            Undefined u => throw new JinjaException($"{u.Description} (slicing it)", 0, 0),
            // Jinja subscripts a slice directly (not through its getitem): anything else fails, as in Python.
            _ => throw new JinjaException($"'{TypeName(target)}' object cannot be sliced", 0, 0),
        };
        if (target is JinjaGenerator) throw new JinjaException("a generator cannot be sliced (add |list first)", 0, 0);
        long count = items.Count;
        long Bound(object? v, long fallback)
        {
            if (v is null or Undefined) return fallback;
            long x = ToLong(v);
            if (x < 0) x += count;
            return stride > 0 ? Math.Clamp(x, 0, count) : Math.Clamp(x, -1, count - 1);
        }
        long from = Bound(start, stride > 0 ? 0 : count - 1), to = Bound(stop, stride > 0 ? count : -1);
        var result = new List<object?>();
        for (long k = from; stride > 0 ? k < to : k > to; k += stride) result.Add(items[(int)k]);
        return target is string ? string.Concat(result.Cast<string>()) : target is JinjaTuple ? new JinjaTuple(result) : result;
    }

    /// <summary><c>+ - * / // % **</c> with Python's meaning on numbers, strings and lists.</summary>
    public static object? Arithmetic(string op, object? left, object? right)
    {
        if (op == "%" && left is string format) return Format(format, right is Undefined ? new OrderedDictionary<string, object?>() : right);
        if (left is Undefined lu) throw new JinjaException($"{lu.Description} (in '{op}')", 0, 0);
        if (right is Undefined ru) throw new JinjaException($"{ru.Description} (in '{op}')", 0, 0);
        if (IsNumber(left) && IsNumber(right))
        {
            bool real = left is double || right is double;
            if (op == "/")
            {
                double divisor = ToDouble(right);
                return divisor == 0 ? throw new JinjaException("division by zero", 0, 0) : ToDouble(left) / divisor;
            }
            if (op == "**") return !real && ToLong(right) >= 0 ? IntegerPower(ToLong(left), ToLong(right)) : Math.Pow(ToDouble(left), ToDouble(right));
            if (real)
            {
                double x = ToDouble(left), y = ToDouble(right);
                if (op is "//" or "%" && y == 0) throw new JinjaException("division by zero", 0, 0);
                return op switch { "+" => x + y, "-" => x - y, "*" => x * y, "//" => PythonFloorDiv(x, y), _ => PythonMod(x, y) };
            }
            long a = ToLong(left), b = ToLong(right);
            if (op is "//" or "%" && b == 0) throw new JinjaException("division by zero", 0, 0);
            try
            {
                return op switch
                {
                    "+" => checked(a + b),
                    "-" => checked(a - b),
                    "*" => checked(a * b),
                    "//" => FloorDiv(a, b),
                    _ => a - b * FloorDiv(a, b),
                };
            }
            catch (OverflowException) { throw new JinjaException("an integer overflowed", 0, 0); }
        }
        switch (op, left, right)
        {
            case (_, JinjaGenerator or JinjaRange, _) or (_, _, JinjaGenerator or JinjaRange):
                throw new JinjaException($"unsupported operand types for {op}: '{TypeName(left)}' and '{TypeName(right)}'", 0, 0);
            case ("+", string x, string y): return CappedChars(x.Length + (long)y.Length) ? x + y : null;
            case ("+", List<object?> x, List<object?> y): return CappedItems(x.Count + (long)y.Count) ? x.Concat(y).ToList() : null;
            case ("*", string x, long or bool): return Repeat(x, ToLong(right));
            case ("*", long or bool, string y): return Repeat(y, ToLong(left));
            case ("*", long or bool, List<object?> y):
                return Arithmetic("*", y, left);
            case ("*", List<object?> x, long or bool):
                long times = Math.Max(0, ToLong(right));
                if (x.Count == 0 || times == 0) return new List<object?>();
                return CappedItems(times > MaxItems ? long.MaxValue : x.Count * times) ? Enumerable.Range(0, (int)times).SelectMany(_ => x).ToList() : null;
        }
        throw new JinjaException($"unsupported operand types for {op}: '{TypeName(left)}' and '{TypeName(right)}'", 0, 0);
    }

    private static object IntegerPower(long x, long n)
    {
        long result = 1;
        try
        {
            while (n > 0)
            {
                if ((n & 1) != 0) result = checked(result * x);
                n >>= 1;
                if (n > 0) x = checked(x * x);
            }
        }
        catch (OverflowException) { throw new JinjaException("an integer overflowed", 0, 0); }
        return result;
    }

    /// <summary>Python's <c>format % values</c> for the conversions templates might use (<c>%s %r %d %i %%</c>): a tuple
    /// gives one value per conversion, anything else is one value; a list or dict beside a format without conversions is
    /// accepted and ignored, as Python does.</summary>
    private static string Format(string format, object? values)
    {
        var args = values is JinjaTuple tuple ? tuple : (List<object?>)[values];
        var text = new StringBuilder();
        int used = 0;
        for (int k = 0; k < format.Length; k++)
        {
            if (format[k] != '%') { text.Append(format[k]); continue; }
            if (++k >= format.Length) throw new JinjaException("incomplete format", 0, 0);
            char conversion = format[k];
            if (conversion == '%') { text.Append('%'); continue; }
            if (used >= args.Count) throw new JinjaException("not enough arguments for format string", 0, 0);
            var arg = args[used++];
            text.Append(conversion switch
            {
                's' => Str(arg),
                'r' => Repr(arg),
                'd' or 'i' => IsNumber(arg) ? ToLong(arg).ToString(CultureInfo.InvariantCulture)
                    : throw new JinjaException($"%{conversion} format: a real number is required, not {TypeName(arg)}", 0, 0),
                _ => throw new JinjaException($"the format conversion %{conversion} is not supported here", 0, 0),
            });
        }
        bool ignorable = used == 0 && values is (List<object?> and not JinjaTuple) or OrderedDictionary<string, object?>;
        if (used < args.Count && !ignorable) throw new JinjaException("not all arguments converted during string formatting", 0, 0);
        return text.ToString();
    }

    /// <summary>Python's float <c>%</c> (CPython's float_divmod): fmod, moved to the divisor's sign.</summary>
    private static double PythonMod(double x, double y)
    {
        double mod = x % y; // C#'s % on doubles is C's fmod
        if (mod != 0) { if ((y < 0) != (mod < 0)) mod += y; }
        else mod = Math.CopySign(0.0, y);
        return mod;
    }

    /// <summary>Python's float <c>//</c> (CPython's float_divmod), which can differ from floor(x / y) by one.</summary>
    private static double PythonFloorDiv(double x, double y)
    {
        double mod = x % y, div = (x - mod) / y;
        if (mod != 0 && (y < 0) != (mod < 0)) div -= 1.0;
        if (div == 0) return Math.CopySign(0.0, x / y);
        double floor = Math.Floor(div);
        return div - floor > 0.5 ? floor + 1.0 : floor;
    }

    private static long FloorDiv(long a, long b)
    {
        long q = a / b;
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
    }

    private static bool CappedChars(long length) =>
        length <= MaxChars ? true : throw new JinjaException($"a string longer than {MaxChars} characters", 0, 0);

    private static bool CappedItems(long count) =>
        count <= MaxItems ? true : throw new JinjaException($"a list of more than {MaxItems} items", 0, 0);

    private static string Repeat(string s, long times) =>
        times <= 0 || s.Length == 0 ? "" : CappedChars(times > MaxChars ? long.MaxValue : s.Length * times) ? string.Concat(Enumerable.Repeat(s, (int)times)) : "";

    /// <summary>The global functions; <paramref name="now"/> is the clock <c>strftime_now</c> reads.</summary>
    public static IReadOnlyDictionary<string, object?> Globals(Func<DateTime> now) => new Dictionary<string, object?>
    {
        ["range"] = new JinjaCallable("range", (a, _) =>
        {
            if (a.Count is < 1 or > 3) throw new JinjaException("range takes 1 to 3 arguments", 0, 0);
            long start = a.Count > 1 ? ToLong(a[0]) : 0, stop = ToLong(a.Count > 1 ? a[1] : a[0]), step = a.Count > 2 ? ToLong(a[2]) : 1;
            if (step == 0) throw new JinjaException("range's step cannot be zero", 0, 0);
            long count = step > 0 ? Math.Max(0, (stop - start + step - 1) / step) : Math.Max(0, (start - stop - step - 1) / -step);
            CappedItems(count);
            var list = new JinjaRange(start, stop, step);
            for (long k = 0; k < count; k++) list.Add(start + k * step);
            return list;
        }),
        ["namespace"] = new JinjaCallable("namespace", (a, named) =>
        {
            var ns = new Namespace();
            foreach (var arg in a)
                if (arg is OrderedDictionary<string, object?> d) foreach (var (k, v) in d) ns.Values[k] = v;
            foreach (var (k, v) in named) ns.Values[k] = v;
            return ns;
        }),
        ["dict"] = new JinjaCallable("dict", (a, named) =>
        {
            var dict = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
            foreach (var arg in a)
                if (arg is OrderedDictionary<string, object?> d) foreach (var (k, v) in d) dict[k] = v;
            foreach (var (k, v) in named) dict[k] = v;
            return dict;
        }),
        ["raise_exception"] = new JinjaCallable("raise_exception", (a, _) =>
            throw new JinjaException(a.Count > 0 ? Str(a[0]) : "the chat template raised an exception", 0, 0, raised: true)),
        ["strftime_now"] = new JinjaCallable("strftime_now", (a, _) => Strftime(now(), a.Count > 0 ? Str(a[0]) : "%Y-%m-%d %H:%M:%S")),
    };

    private static JinjaCallable? DictMethod(OrderedDictionary<string, object?> dict, string name) => name switch
    {
        "items" => new JinjaCallable("items", (_, _) => dict.Select(p => (object?)new JinjaTuple([p.Key, p.Value])).ToList()),
        "keys" => new JinjaCallable("keys", (_, _) => dict.Keys.Cast<object?>().ToList()),
        "values" => new JinjaCallable("values", (_, _) => dict.Values.ToList()),
        "get" => new JinjaCallable("get", (a, _) =>
            a.Count > 0 && a[0] is string k && dict.TryGetValue(k, out var v) ? v : a.Count > 1 ? a[1] : null),
        _ => null,
    };

    private static JinjaCallable? StringMethod(string s, string name)
    {
        object? Arg(IReadOnlyList<object?> a, int index, IReadOnlyDictionary<string, object?> n, string key) =>
            index < a.Count ? a[index] : n.TryGetValue(key, out var v) ? v : null;
        return name switch
        {
            "strip" or "lstrip" or "rstrip" => new JinjaCallable(name, (a, n) =>
                Strip(s, Arg(a, 0, n, "chars") as string, name != "rstrip", name != "lstrip")),
            "startswith" or "endswith" => new JinjaCallable(name, (a, n) =>
            {
                var affix = Arg(a, 0, n, name == "startswith" ? "prefix" : "suffix");
                var options = affix is List<object?> list ? list.Select(Str).ToList() : [affix is string t ? t : throw new JinjaException($"{name} needs a string", 0, 0)];
                return options.Any(o => name == "startswith" ? s.StartsWith(o, StringComparison.Ordinal) : s.EndsWith(o, StringComparison.Ordinal));
            }),
            "split" or "rsplit" => new JinjaCallable(name, (a, n) => Split(s, Arg(a, 0, n, "sep") as string, Arg(a, 1, n, "maxsplit") is long m ? m : -1, name == "rsplit")),
            "splitlines" => new JinjaCallable(name, (_, _) =>
                s.Replace("\r\n", "\n").Split('\n', '\r').Cast<object?>().ToList() is var lines && lines.Count > 0 && s.EndsWith('\n') ? lines[..^1] : lines),
            "upper" => new JinjaCallable(name, (_, _) => s.ToUpperInvariant()),
            "lower" => new JinjaCallable(name, (_, _) => s.ToLowerInvariant()),
            "title" => new JinjaCallable(name, (_, _) => Title(s)),
            "capitalize" => new JinjaCallable(name, (_, _) => Capitalize(s)),
            "replace" => new JinjaCallable(name, (a, n) => Replace(s, Str(Arg(a, 0, n, "old")), Str(Arg(a, 1, n, "new")), Arg(a, 2, n, "count") is long c ? c : -1)),
            "find" => new JinjaCallable(name, (a, n) => (long)s.IndexOf(Str(Arg(a, 0, n, "sub")), StringComparison.Ordinal)),
            "rfind" => new JinjaCallable(name, (a, n) => (long)s.LastIndexOf(Str(Arg(a, 0, n, "sub")), StringComparison.Ordinal)),
            "count" => new JinjaCallable(name, (a, n) =>
            {
                var sub = Str(Arg(a, 0, n, "sub"));
                if (sub.Length == 0) return (long)CodePoints(s).Count() + 1;
                long count = 0;
                for (int at = s.IndexOf(sub, StringComparison.Ordinal); at >= 0; at = s.IndexOf(sub, at + sub.Length, StringComparison.Ordinal)) count++;
                return count;
            }),
            "join" => new JinjaCallable(name, (a, _) => string.Join(s, Iterate(a.Count > 0 ? a[0] : null).Select(x =>
                x as string ?? throw new JinjaException($"join needs strings, not a {TypeName(x)}", 0, 0)))),
            _ => null,
        };
    }

    private static bool IsPythonSpace(char c) => char.IsWhiteSpace(c) || c is >= '\x1c' and <= '\x1f';

    private static string Strip(string s, string? chars, bool left, bool right)
    {
        Func<char, bool> drop = chars is null ? IsPythonSpace : chars.Contains;
        int start = 0, end = s.Length;
        if (left) while (start < end && drop(s[start])) start++;
        if (right) while (end > start && drop(s[end - 1])) end--;
        return s[start..end];
    }

    private static List<object?> Split(string s, string? separator, long maxSplit, bool fromRight)
    {
        if (separator is { Length: 0 }) throw new JinjaException("empty separator", 0, 0);
        List<string> parts;
        if (separator is null)
        {
            var words = new List<string>();
            int k = 0;
            while (k < s.Length)
            {
                while (k < s.Length && IsPythonSpace(s[k])) k++;
                if (k >= s.Length) break;
                int start = k;
                while (k < s.Length && !IsPythonSpace(s[k])) k++;
                words.Add(s[start..k]);
            }
            if (maxSplit >= 0 && words.Count > maxSplit + 1)
            {
                // The rest keeps its inner whitespace (Python returns the remainder as it stands).
                if (!fromRight)
                {
                    int at = 0, seen = 0;
                    while (seen < maxSplit) { while (IsPythonSpace(s[at])) at++; while (!IsPythonSpace(s[at])) at++; seen++; }
                    while (IsPythonSpace(s[at])) at++;
                    words = [.. words.Take((int)maxSplit), s[at..].TrimEnd()];
                }
                else
                {
                    int at = s.Length, seen = 0;
                    while (seen < maxSplit) { while (IsPythonSpace(s[at - 1])) at--; while (!IsPythonSpace(s[at - 1])) at--; seen++; }
                    while (IsPythonSpace(s[at - 1])) at--;
                    words = [s[..at].TrimStart(), .. words.Skip(words.Count - (int)maxSplit)];
                }
            }
            parts = words;
        }
        else
        {
            parts = [.. s.Split(separator)];
            if (maxSplit >= 0 && parts.Count > maxSplit + 1)
                parts = fromRight
                    ? [string.Join(separator, parts.Take(parts.Count - (int)maxSplit)), .. parts.Skip(parts.Count - (int)maxSplit)]
                    : [.. parts.Take((int)maxSplit), string.Join(separator, parts.Skip((int)maxSplit))];
        }
        return parts.Cast<object?>().ToList();
    }

    private static string Replace(string s, string old, string replacement, long count)
    {
        if (count < 0) return old.Length == 0 ? string.Concat(CodePoints(s).Select(c => replacement + c)) + replacement : s.Replace(old, replacement, StringComparison.Ordinal);
        var text = new StringBuilder();
        int at = 0;
        for (long k = 0; k < count; k++)
        {
            int next = s.IndexOf(old, at, StringComparison.Ordinal);
            if (next < 0 || old.Length == 0) break;
            text.Append(s, at, next - at).Append(replacement);
            at = next + old.Length;
        }
        return text.Append(s, at, s.Length - at).ToString();
    }

    private static readonly System.Text.RegularExpressions.Regex WordBeginnings = new(@"([-\s({\[<]+)", System.Text.RegularExpressions.RegexOptions.CultureInvariant);

    /// <summary>Jinja's <c>title</c> filter (not Python's <c>str.title</c>): each piece after spaces, dashes and opening
    /// brackets gets its first character upper-cased and the rest lower-cased.</summary>
    private static string JinjaTitle(string s) => string.Concat(WordBeginnings.Split(s).Where(p => p.Length > 0)
        .Select(p => char.ToUpperInvariant(p[0]) + p[1..].ToLowerInvariant()));

    private static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    private static string Title(string s)
    {
        var text = new StringBuilder(s.Length);
        bool previousCased = false;
        foreach (char c in s)
        {
            text.Append(previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousCased = char.IsLetter(c);
        }
        return text.ToString();
    }

    /// <summary>Python's <c>strftime</c> for the directives templates use (<c>%d %-d %e %b %B %m %y %Y %H %I %M %S %p %a %A %j %%</c>).</summary>
    public static string Strftime(DateTime time, string format)
    {
        var text = new StringBuilder();
        for (int k = 0; k < format.Length; k++)
        {
            if (format[k] != '%' || k + 1 >= format.Length) { text.Append(format[k]); continue; }
            char d = format[++k];
            bool unpadded = d == '-' && k + 1 < format.Length;
            if (unpadded) d = format[++k];
            var inv = CultureInfo.InvariantCulture;
            string Pad(int v) => unpadded ? v.ToString(inv) : v.ToString("00", inv);
            text.Append(d switch
            {
                'd' => Pad(time.Day),
                'e' => time.Day.ToString(inv).PadLeft(2),
                'm' => Pad(time.Month),
                'y' => Pad(time.Year % 100),
                'Y' => time.Year.ToString(inv),
                'H' => Pad(time.Hour),
                'I' => Pad(time.Hour % 12 == 0 ? 12 : time.Hour % 12),
                'M' => Pad(time.Minute),
                'S' => Pad(time.Second),
                'p' => time.Hour < 12 ? "AM" : "PM",
                'b' => time.ToString("MMM", inv),
                'B' => time.ToString("MMMM", inv),
                'a' => time.ToString("ddd", inv),
                'A' => time.ToString("dddd", inv),
                'j' => unpadded ? time.DayOfYear.ToString(inv) : time.DayOfYear.ToString("000", inv),
                '%' => "%",
                _ => throw new JinjaException($"strftime_now: %{d} is not supported", 0, 0),
            });
        }
        return text.ToString();
    }

    public static string Describe(object? value) => value is Undefined u ? u.Description : Repr(value);

    /// <summary>A string's code points (Python counts and indexes code points, not UTF-16 units).</summary>
    public static IEnumerable<string> CodePoints(string s)
    {
        for (int k = 0; k < s.Length; k++)
        {
            if (char.IsHighSurrogate(s[k]) && k + 1 < s.Length && char.IsLowSurrogate(s[k + 1]))
            {
                yield return s.Substring(k, 2);
                k++;
            }
            else yield return s[k].ToString();
        }
    }
}
