using Nanoscale.Tensors;

namespace Nanoscale.Formats;

/// <summary>
/// A parsed format specification string (SPEC §7): <c>name[:key=value[,key=value…]]</c>. Names and keys are
/// case-insensitive and kept lower-case; values are kept as written (they may contain <c>|</c>, e.g. <c>am=e2m1|e1m2</c>).
/// A value may itself be a spec, one level deep, whose options are separated by <c>;</c> because commas already
/// separate the outer ones: <c>caldera:rank=8,q=mxfp4:scale=mse;round=away,lr=mxint4</c> (<see cref="Nested"/>).
/// This is syntax only; <see cref="FormatRegistry"/> checks names, keys and values.
/// </summary>
public sealed class FormatSpec
{
    /// <summary>Separates the options of a spec.</summary>
    public const char OptionSeparator = ',';

    /// <summary>Separates the options of a spec nested in an option value.</summary>
    public const char NestedOptionSeparator = ';';

    private readonly char _separator;

    private FormatSpec(string name, IReadOnlyList<KeyValuePair<string, string>> options, char separator)
    {
        Name = name;
        Options = options;
        _separator = separator;
    }

    public string Name { get; }

    /// <summary>Options in the order written.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Options { get; }

    /// <summary>The value given for <paramref name="key"/>, or null.</summary>
    public string? this[string key] =>
        Options.FirstOrDefault(o => o.Key == key).Value;

    /// <summary>True for a spec that was the value of another spec's option.</summary>
    public bool IsNested => _separator == NestedOptionSeparator;

    /// <exception cref="FormatSpecException">Empty name, empty option, missing <c>=</c>, or a repeated key.</exception>
    public static FormatSpec Parse(string text) => Parse(text, OptionSeparator);

    /// <summary>The value of <paramref name="key"/> read as a nested spec (options separated by <c>;</c>), or null when
    /// the key is absent.</summary>
    /// <exception cref="FormatSpecException">The value is not a spec, or nests another spec.</exception>
    public FormatSpec? Nested(string key)
    {
        if (this[key] is not { } value) return null;
        if (IsNested) throw new FormatSpecException(ToString(), $"'{key}={value}': a nested spec cannot hold another spec");
        return Parse(value, NestedOptionSeparator);
    }

    /// <summary>This spec without option <paramref name="key"/>.</summary>
    public FormatSpec Without(string key) => new(Name, Options.Where(o => o.Key != key).ToList(), _separator);

    /// <summary>This spec with <paramref name="key"/> set to <paramref name="value"/> (replaced in place, or added last).</summary>
    public FormatSpec With(string key, string value)
    {
        var options = Options.ToList();
        int i = options.FindIndex(o => o.Key == key);
        if (i >= 0) options[i] = new(key, value);
        else options.Add(new(key, value));
        return new FormatSpec(Name, options, _separator);
    }

    /// <summary>A spec from parts already validated (the registry's canonical form).</summary>
    internal static FormatSpec Create(string name, IReadOnlyList<KeyValuePair<string, string>> options, bool nested) =>
        new(name, options, nested ? NestedOptionSeparator : OptionSeparator);

    private static FormatSpec Parse(string text, char separator)
    {
        ArgumentNullException.ThrowIfNull(text);
        string trimmed = text.Trim();
        int colon = trimmed.IndexOf(':');
        string name = (colon < 0 ? trimmed : trimmed[..colon]).Trim().ToLowerInvariant();
        if (name.Length == 0)
            throw new FormatSpecException(text, "the format name is empty (expected name[:key=value,...])");
        var options = new List<KeyValuePair<string, string>>();
        if (colon >= 0)
        {
            foreach (string part in trimmed[(colon + 1)..].Split(separator))
            {
                int eq = part.IndexOf('=');
                string key = (eq < 0 ? part : part[..eq]).Trim().ToLowerInvariant();
                string value = eq < 0 ? "" : part[(eq + 1)..].Trim();
                if (eq < 0 || key.Length == 0 || value.Length == 0)
                    throw new FormatSpecException(text, $"option '{part.Trim()}' is not key=value");
                if (options.Any(o => o.Key == key))
                    throw new FormatSpecException(text, $"option '{key}' is given twice");
                options.Add(new(key, value));
            }
        }
        return new FormatSpec(name, options, separator);
    }

    /// <summary>
    /// Splits a list of spec strings (CLI <c>--formats</c>). Items are separated by <c>,</c> or <c>;</c>, except that a
    /// piece of the form <c>key=value</c> (an <c>=</c> before any <c>:</c>) continues the previous spec: after a comma
    /// as its next option, after a semicolon as the inner option of a nested spec, so
    /// <c>mxfp4,nxfp4:nm=2,am=e2m1|e1m2,nvfp4</c> is three specs and
    /// <c>caldera:rank=8,q=mxfp4:scale=mse;round=away,lr=mxint4</c> is one.
    /// </summary>
    /// <exception cref="FormatSpecException">The list is empty, or an option has no spec before it.</exception>
    public static IReadOnlyList<string> SplitList(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var result = new List<string>();
        foreach (string item in text.Split(';', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            bool firstOfItem = true;
            foreach (string piece in item.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                if (!IsOption(piece))
                    result.Add(piece);
                else if (result.Count > 0 && result[^1].Contains(':'))
                    result[^1] += (firstOfItem ? ";" : ",") + piece;
                else
                    throw new FormatSpecException(text, $"option '{piece}' has no format before it (write NAME:{piece})");
                firstOfItem = false;
            }
        }
        if (result.Count == 0) throw new FormatSpecException(text, "the format list is empty");
        return result;
    }

    /// <summary>A <c>key=value</c> piece: its first <c>=</c> comes before any <c>:</c> (values may hold nested specs).</summary>
    private static bool IsOption(string piece)
    {
        int eq = piece.IndexOf('='), colon = piece.IndexOf(':');
        return eq > 0 && (colon < 0 || colon > eq);
    }

    public override string ToString() =>
        Options.Count == 0 ? Name : $"{Name}:{string.Join(_separator, Options.Select(o => $"{o.Key}={o.Value}"))}";
}

/// <summary>A format specification string that does not parse or names an unknown format, key or value.</summary>
public sealed class FormatSpecException(string spec, string problem)
    : NanoscaleException($"format '{spec}': {problem}")
{
    public string Spec { get; } = spec;

    /// <summary>What is wrong, without the spec.</summary>
    public string Problem { get; } = problem;
}
