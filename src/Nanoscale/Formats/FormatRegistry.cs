namespace Nanoscale.Formats;

/// <summary>
/// A table of named formats (SPEC §7) and the spec-string front door: <see cref="Create(string)"/> parses, validates
/// names, keys and values against the table, and builds the codec with its canonical spec string. The machinery only:
/// the rows come from each format's folder (<see cref="Mx.MxFormats"/>, <see cref="Nv.NvFp4Formats"/>,
/// <see cref="Nx.NxfpFormats"/>, and the container codecs), and the one table of the library is put together in
/// <c>Nanoscale.Codecs.CodecRegistry</c>.
/// </summary>
/// <remarks>
/// Immutable. Canonical form: the canonical name, then only options that differ from their default, in the row's key
/// order; a choice value lower-cased; a nested spec (<see cref="FormatOption.NestedSpec"/>) canonical in turn when its
/// name is in the table. Aliases resolve to the canonical name in <see cref="ICodec.Spec"/>.
/// </remarks>
public sealed class FormatRegistry
{
    private readonly Dictionary<string, FormatTraits> _byName = new(StringComparer.Ordinal);

    public FormatRegistry(IEnumerable<FormatTraits> traits)
    {
        var list = new List<FormatTraits>();
        foreach (FormatTraits t in traits)
        {
            foreach (string name in t.Aliases.Prepend(t.Name))
                if (!_byName.TryAdd(name, t))
                    throw new ArgumentException($"format name '{name}' is registered twice", nameof(traits));
            list.Add(t);
        }
        Traits = list;
    }

    /// <summary>Every registered format, in registration order.</summary>
    public IReadOnlyList<FormatTraits> Traits { get; }

    /// <summary>All accepted names (canonical and aliases), sorted.</summary>
    public IEnumerable<string> Names => _byName.Keys.Order(StringComparer.Ordinal);

    /// <summary>A new registry with <paramref name="more"/> added.</summary>
    public FormatRegistry With(params FormatTraits[] more) => new(Traits.Concat(more));

    /// <summary>True when <paramref name="name"/> is a canonical name or alias of the table.</summary>
    public bool Contains(string name) => _byName.ContainsKey(name.Trim().ToLowerInvariant());

    /// <summary>The traits for a canonical name or alias.</summary>
    /// <exception cref="FormatSpecException">Unknown name (the message lists the valid names).</exception>
    public FormatTraits Find(string name) =>
        _byName.TryGetValue(name.Trim().ToLowerInvariant(), out FormatTraits? t)
            ? t
            : throw new FormatSpecException(name, $"unknown format '{name}'; valid names: {string.Join(", ", Names)}");

    /// <summary>Parses <paramref name="spec"/> and builds its codec.</summary>
    /// <exception cref="FormatSpecException">Bad syntax, unknown name, key or value; the message lists what is valid.</exception>
    public ICodec Create(string spec) => Create(FormatSpec.Parse(spec));

    /// <summary>Builds the codec of a parsed (possibly nested) spec.</summary>
    /// <exception cref="FormatSpecException">Unknown name, key or value; the message lists what is valid.</exception>
    public ICodec Create(FormatSpec spec)
    {
        var (traits, canonical) = Canonicalize(spec);
        // A nested spec builds the same codec as its top-level form, and the codec reports the top-level spec string.
        FormatSpec topLevel = FormatSpec.Create(canonical.Name, canonical.Options, nested: false);
        return traits.Create(topLevel, topLevel.ToString());
    }

    /// <summary>Validates a spec against its row and returns the row and the spec's canonical form.</summary>
    /// <exception cref="FormatSpecException">Unknown name, key or value; the message lists what is valid.</exception>
    public (FormatTraits Traits, FormatSpec Canonical) Canonicalize(FormatSpec spec)
    {
        string text = spec.ToString();
        if (!_byName.TryGetValue(spec.Name, out FormatTraits? traits))
            throw new FormatSpecException(text, $"unknown format '{spec.Name}'; valid names: {string.Join(", ", Names)}");
        foreach (var (key, value) in spec.Options)
        {
            FormatOption? option = traits.Options.FirstOrDefault(o => o.Key == key);
            if (option is null)
                throw new FormatSpecException(text, traits.Options.Count == 0
                    ? $"'{traits.Name}' takes no options (found '{key}')"
                    : $"unknown option '{key}' for '{traits.Name}'; valid keys: " +
                      string.Join(", ", traits.Options.Select(o => $"{o.Key} ({string.Join('|', o.Values)}, default {o.Default})")));
            if (option.Values.Count > 0 && !option.Values.Contains(value.ToLowerInvariant()))
                throw new FormatSpecException(text,
                    $"'{value}' is not a valid {key} for '{traits.Name}'; valid values: {string.Join(", ", option.Values)}");
        }
        var canonical = new List<KeyValuePair<string, string>>();
        foreach (FormatOption option in traits.Options)
        {
            string? value = spec[option.Key];
            if (value is null) continue;
            if (option.Values.Count > 0) value = value.ToLowerInvariant();
            else if (option.NestedSpec) value = CanonicalNested(spec, option.Key);
            if (value != option.Default)
                canonical.Add(new(option.Key, value));
        }
        return (traits, FormatSpec.Create(traits.Name, canonical, spec.IsNested));
    }

    /// <summary>A nested spec in canonical form when its name is in the table; as written (name lower-cased) when not,
    /// for values the row's factory knows on its own (e.g. a caldera grid <c>int4</c>).</summary>
    private string CanonicalNested(FormatSpec spec, string key)
    {
        FormatSpec nested = spec.Nested(key)!;
        try
        {
            return _byName.ContainsKey(nested.Name) ? Canonicalize(nested).Canonical.ToString() : nested.ToString();
        }
        catch (FormatSpecException e)
        {
            throw new FormatSpecException(spec.ToString(), $"{key}: {e.Problem}");
        }
    }
}
