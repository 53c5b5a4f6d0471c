using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Nanoscale.Pipeline.Jinja;

/// <summary>A name or attribute that is not there: empty when printed, false when tested, an empty sequence when
/// iterated; an error when used any other way (as Jinja's default <c>Undefined</c>).</summary>
internal sealed class Undefined(string description)
{
    public string Description { get; } = description;

    public override string ToString() => "";
}

/// <summary>A Python tuple (<c>(a, b)</c>, a dict's items): a list that prints with parentheses.</summary>
internal sealed class JinjaTuple(IEnumerable<object?> items) : List<object?>(items);

/// <summary>What a lazy Jinja filter (<c>map</c>, <c>select</c>, <c>selectattr</c>, <c>unique</c>, <c>reverse</c>,
/// <c>items</c>) returns, as Python's generators: true whatever it yields, no length or index, never equal to a list,
/// and its items computed only when it is iterated (<see cref="Items"/>), where a failure (a source that cannot be
/// iterated, a test that does not apply) is raised.</summary>
internal sealed class JinjaGenerator(Func<IEnumerable<object?>> produce) : List<object?>
{
    private List<object?>? _items;

    public JinjaGenerator(IEnumerable<object?> items) : this(() => items) { }

    public List<object?> Items => _items ??= [.. produce()];
}

/// <summary>What <c>range(...)</c> returns: its numbers, printed as Python prints a range.</summary>
internal sealed class JinjaRange(long start, long stop, long step) : List<object?>
{
    public override string ToString() => step == 1 ? $"range({start}, {stop})" : $"range({start}, {stop}, {step})";
}

/// <summary>What <c>namespace(...)</c> makes: the one value a template may change after creating it.</summary>
internal sealed class Namespace
{
    public OrderedDictionary<string, object?> Values { get; } = new(StringComparer.Ordinal);
}

/// <summary>A function, macro or bound method a template may call.</summary>
internal sealed class JinjaCallable(string name, Func<IReadOnlyList<object?>, IReadOnlyDictionary<string, object?>, object?> invoke)
{
    public string Name { get; } = name;

    public object? Invoke(IReadOnlyList<object?> arguments, IReadOnlyDictionary<string, object?> named) => invoke(arguments, named);
}

/// <summary>
/// The values a template sees and how Python (which Jinja runs on) treats them: <c>null</c> is None, then
/// <see cref="bool"/>, <see cref="long"/>, <see cref="double"/>, <see cref="string"/>, lists
/// (<c>List&lt;object?&gt;</c>, also tuples) and dicts (<c>OrderedDictionary&lt;string, object?&gt;</c>, insertion
/// order kept as Python keeps it), <see cref="Namespace"/>, <see cref="JinjaCallable"/> and <see cref="Undefined"/>.
/// Printing follows Python's <c>str()</c>, <c>tojson</c> its <c>json.dumps(ensure_ascii=False)</c> as transformers
/// calls it.
/// </summary>
internal static class JinjaValues
{
    public static object? FromJson(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.Object => FromJsonObject(element),
        JsonValueKind.Array => element.EnumerateArray().Select(FromJson).ToList(),
        JsonValueKind.String => element.GetString(),
        JsonValueKind.Number => element.TryGetInt64(out long i) ? i : (object)element.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    /// <summary>A .NET value as a template value: <see cref="JsonElement"/>s, strings, booleans, integers and floats,
    /// string-keyed dictionaries and other sequences, null.</summary>
    public static object? FromClr(object? value, int depth = 0) => depth > 64
        ? throw new JinjaException("a template argument nests too deeply", 0, 0)
        : value switch
        {
            null or string or bool or long or double or Undefined or Namespace or JinjaCallable => value,
            JsonElement e => FromJson(e),
            int or short or sbyte or byte or ushort or uint => Convert.ToInt64(value, CultureInfo.InvariantCulture),
            float f => (double)f,
            decimal m => (double)m,
            OrderedDictionary<string, object?> d => d,
            IEnumerable<KeyValuePair<string, object?>> pairs => pairs.Aggregate(new OrderedDictionary<string, object?>(StringComparer.Ordinal),
                (d, p) => { d[p.Key] = FromClr(p.Value, depth + 1); return d; }),
            System.Collections.IEnumerable items => items.Cast<object?>().Select(x => FromClr(x, depth + 1)).ToList(),
            _ => throw new JinjaException($"a {value.GetType().Name} cannot be a template value", 0, 0),
        };

    private static OrderedDictionary<string, object?> FromJsonObject(JsonElement element)
    {
        var dict = new OrderedDictionary<string, object?>(StringComparer.Ordinal);
        foreach (var p in element.EnumerateObject()) dict[p.Name] = FromJson(p.Value);
        return dict;
    }

    public static bool IsTrue(object? value) => value switch
    {
        null or Undefined => false,
        bool b => b,
        long i => i != 0,
        double d => d != 0,
        string s => s.Length > 0,
        JinjaGenerator => true,
        List<object?> l => l.Count > 0,
        OrderedDictionary<string, object?> d => d.Count > 0,
        _ => true,
    };

    public static string TypeName(object? value) => value switch
    {
        null => "NoneType",
        Undefined => "undefined",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        JinjaTuple => "tuple",
        JinjaGenerator => "generator",
        JinjaRange => "range",
        List<object?> => "list",
        OrderedDictionary<string, object?> => "dict",
        Namespace => "Namespace",
        JinjaCallable => "function",
        _ => value.GetType().Name,
    };

    /// <summary>Python's <c>str(value)</c>; undefined is empty, as Jinja prints it.</summary>
    public static string Str(object? value) => value switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(value),
    };

    /// <summary>Python's <c>repr(value)</c> (how a list or dict prints its items).</summary>
    public static string Repr(object? value)
    {
        var text = new StringBuilder();
        Repr(value, text, 0);
        return text.ToString();
    }

    private static void Repr(object? value, StringBuilder text, int depth)
    {
        if (depth > 100) throw new JinjaException("a value nests too deeply to print", 0, 0);
        switch (value)
        {
            case null: text.Append("None"); break;
            case Undefined: break;
            case bool b: text.Append(b ? "True" : "False"); break;
            case long i: text.Append(i.ToString(CultureInfo.InvariantCulture)); break;
            case double d: text.Append(PythonFloat(d)); break;
            case string s:
                char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
                text.Append(quote);
                foreach (char c in s)
                    text.Append(c switch
                    {
                        '\\' => "\\\\",
                        '\n' => "\\n",
                        '\r' => "\\r",
                        '\t' => "\\t",
                        _ when c == quote => "\\" + c,
                        _ when c < ' ' || c == '\x7f' => $"\\x{(int)c:x2}",
                        _ => c.ToString(),
                    });
                text.Append(quote);
                break;
            case JinjaGenerator: text.Append("<generator object>"); break;
            case JinjaRange range: text.Append(range); break;
            case List<object?> list:
                bool tuple = list is JinjaTuple;
                text.Append(tuple ? '(' : '[');
                for (int k = 0; k < list.Count; k++)
                {
                    if (k > 0) text.Append(", ");
                    Repr(list[k], text, depth + 1);
                }
                text.Append(tuple ? (list.Count == 1 ? ",)" : ")") : "]");
                break;
            case OrderedDictionary<string, object?> dict:
                text.Append('{');
                int n = 0;
                foreach (var (key, item) in dict)
                {
                    if (n++ > 0) text.Append(", ");
                    Repr(key, text, depth + 1);
                    text.Append(": ");
                    Repr(item, text, depth + 1);
                }
                text.Append('}');
                break;
            case Namespace: text.Append("<Namespace>"); break;
            case JinjaCallable f: text.Append("<function ").Append(f.Name).Append('>'); break;
            default: text.Append(value); break;
        }
    }

    /// <summary>Python's <c>repr(float)</c>: the shortest digits that read back, <c>.0</c> on whole numbers,
    /// exponents as <c>1e-05</c> / <c>1e+16</c>.</summary>
    public static string PythonFloat(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        // The shortest round-trip digits (.NET's "R"), laid out by repr's rule: positional for exponents -4..15.
        var r = Math.Abs(d).ToString("R", CultureInfo.InvariantCulture);
        int e = r.IndexOf('E');
        var mantissa = e < 0 ? r : r[..e];
        int exponent = e < 0 ? 0 : int.Parse(r[(e + 1)..], CultureInfo.InvariantCulture);
        int dot = mantissa.IndexOf('.');
        var digits = dot < 0 ? mantissa : mantissa.Remove(dot, 1);
        int point = (dot < 0 ? mantissa.Length : dot) + exponent; // digits before the decimal point
        int lead = 0;
        while (lead < digits.Length - 1 && digits[lead] == '0') lead++;
        digits = digits[lead..].TrimEnd('0');
        if (digits.Length == 0) digits = "0";
        point -= lead;
        int scientific = point - 1;
        var sign = d < 0 ? "-" : "";
        if (scientific is >= -4 and < 16)
        {
            if (point <= 0) return $"{sign}0.{new string('0', -point)}{digits}";
            if (point >= digits.Length) return $"{sign}{digits}{new string('0', point - digits.Length)}.0";
            return $"{sign}{digits[..point]}.{digits[point..]}";
        }
        var head = digits.Length > 1 ? $"{digits[0]}.{digits[1..]}" : digits;
        return $"{sign}{head}e{(scientific < 0 ? '-' : '+')}{Math.Abs(scientific):00}";
    }

    /// <summary>transformers' <c>tojson</c>: <c>json.dumps(x, ensure_ascii=False, indent=indent)</c>, keys in their
    /// order unless <paramref name="sortKeys"/>.</summary>
    public static string ToJson(object? value, int? indent = null, bool sortKeys = false)
    {
        var text = new StringBuilder();
        Json(value, text, indent, sortKeys, 0);
        return text.ToString();
    }

    private static void Json(object? value, StringBuilder text, int? indent, bool sortKeys, int depth)
    {
        if (depth > 100) throw new JinjaException("a value nests too deeply for tojson", 0, 0);
        switch (value)
        {
            case null or Undefined: text.Append("null"); break;
            case bool b: text.Append(b ? "true" : "false"); break;
            case long i: text.Append(i.ToString(CultureInfo.InvariantCulture)); break;
            case double d:
                text.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : PythonFloat(d));
                break;
            case string s: JsonString(s, text); break;
            case JinjaGenerator: throw new JinjaException("a generator cannot be written as JSON (add |list first)", 0, 0);
            case List<object?> list:
                if (list.Count == 0) { text.Append("[]"); break; }
                text.Append('[');
                for (int k = 0; k < list.Count; k++)
                {
                    if (k > 0) text.Append(indent is null ? ", " : ",");
                    NewLine(text, indent, depth + 1);
                    Json(list[k], text, indent, sortKeys, depth + 1);
                }
                NewLine(text, indent, depth);
                text.Append(']');
                break;
            case OrderedDictionary<string, object?> dict:
                if (dict.Count == 0) { text.Append("{}"); break; }
                text.Append('{');
                var pairs = sortKeys ? dict.OrderBy(p => p.Key, StringComparer.Ordinal).ToList() : dict.ToList();
                for (int k = 0; k < pairs.Count; k++)
                {
                    if (k > 0) text.Append(indent is null ? ", " : ",");
                    NewLine(text, indent, depth + 1);
                    JsonString(pairs[k].Key, text);
                    text.Append(": ");
                    Json(pairs[k].Value, text, indent, sortKeys, depth + 1);
                }
                NewLine(text, indent, depth);
                text.Append('}');
                break;
            case Namespace ns: Json(ns.Values, text, indent, sortKeys, depth); break;
            default: throw new JinjaException($"a {TypeName(value)} cannot be written as JSON", 0, 0);
        }
    }

    private static void NewLine(StringBuilder text, int? indent, int depth)
    {
        if (indent is int n) text.Append('\n').Append(' ', n * depth);
    }

    private static void JsonString(string s, StringBuilder text)
    {
        text.Append('"');
        foreach (char c in s)
            switch (c)
            {
                case '"': text.Append("\\\""); break;
                case '\\': text.Append("\\\\"); break;
                case '\n': text.Append("\\n"); break;
                case '\r': text.Append("\\r"); break;
                case '\t': text.Append("\\t"); break;
                case '\b': text.Append("\\b"); break;
                case '\f': text.Append("\\f"); break;
                default:
                    if (c < ' ') text.Append($"\\u{(int)c:x4}");
                    else text.Append(c);
                    break;
            }
        text.Append('"');
    }

    /// <summary>Python's <c>==</c>: numbers by value (<c>True == 1</c>), strings ordinally, lists and dicts item by item.</summary>
    public static bool Equal(object? a, object? b)
    {
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (IsNumber(a) && IsNumber(b)) return a is double || b is double ? ToDouble(a) == ToDouble(b) : ToLong(a) == ToLong(b);
        return (a, b) switch
        {
            (null, null) => true,
            (string x, string y) => x == y,
            (JinjaGenerator, _) or (_, JinjaGenerator) => ReferenceEquals(a, b),
            (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => Equal(p.First, p.Second)),
            (OrderedDictionary<string, object?> x, OrderedDictionary<string, object?> y) =>
                x.Count == y.Count && x.All(p => y.TryGetValue(p.Key, out var v) && Equal(p.Value, v)),
            _ => ReferenceEquals(a, b),
        };
    }

    /// <summary>Python's ordering of two numbers, two strings or two lists; anything else is an error.</summary>
    public static int Order(object? a, object? b)
    {
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a).CompareTo(ToDouble(b)) : ToLong(a).CompareTo(ToLong(b));
        if (a is string x && b is string y) return string.CompareOrdinal(x, y) switch { < 0 => -1, > 0 => 1, _ => 0 };
        if (a is List<object?> l && b is List<object?> m)
        {
            for (int k = 0; k < Math.Min(l.Count, m.Count); k++)
                if (!Equal(l[k], m[k])) return Order(l[k], m[k]);
            return l.Count.CompareTo(m.Count);
        }
        throw new JinjaException($"a {TypeName(a)} and a {TypeName(b)} cannot be ordered", 0, 0);
    }

    public static bool IsNumber(object? v) => v is long or double or bool;

    public static long ToLong(object? v) => v switch
    {
        long i => i,
        bool b => b ? 1 : 0,
        double d => (long)d,
        _ => throw new JinjaException($"a number expected, not a {TypeName(v)}", 0, 0),
    };

    public static double ToDouble(object? v) => v switch
    {
        double d => d,
        long i => i,
        bool b => b ? 1 : 0,
        _ => throw new JinjaException($"a number expected, not a {TypeName(v)}", 0, 0),
    };

    /// <summary>What a <c>for</c> loop walks: a list's items, a dict's keys, a string's characters; undefined is empty.</summary>
    public static List<object?> Iterate(object? value) => value switch
    {
        JinjaGenerator generator => generator.Items,
        List<object?> list => list,
        OrderedDictionary<string, object?> dict => dict.Keys.Cast<object?>().ToList(),
        Namespace ns => ns.Values.Keys.Cast<object?>().ToList(),
        string s => JinjaBuiltins.CodePoints(s).Cast<object?>().ToList(),
        Undefined => [],
        _ => throw new JinjaException($"a {TypeName(value)} cannot be iterated", 0, 0),
    };
}
