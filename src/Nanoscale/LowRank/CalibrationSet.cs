namespace Nanoscale.LowRank;

/// <summary>
/// Per linear weight (by tensor name) the input Hessian measured on calibration text. Weights that read the same
/// input (q/k/v of one layer; gate/up) share one <see cref="Hessian"/> object. Immutable once built.
/// </summary>
public sealed class CalibrationSet
{
    private readonly Func<string, Hessian?>? _load;
    private readonly IReadOnlyList<string> _names;

    internal CalibrationSet(IReadOnlyDictionary<string, Hessian> hessians, long tokens, string source)
    {
        Hessians = hessians;
        _names = [.. hessians.Keys];
        Tokens = tokens;
        Source = source;
    }

    /// <summary>A set whose Hessians are loaded one at a time when asked for (<paramref name="load"/>, e.g. from a
    /// calibration cache on disk), so a large model's Hessians are never all in memory.</summary>
    internal CalibrationSet(IReadOnlyList<string> names, Func<string, Hessian?> load, long tokens, string source)
    {
        Hessians = new Dictionary<string, Hessian>();
        _names = names;
        _load = load;
        Tokens = tokens;
        Source = source;
    }

    /// <summary>Tokens the model ran over.</summary>
    public long Tokens { get; }

    /// <summary>Where the text came from (for reports).</summary>
    public string Source { get; }

    /// <summary>Weights the calibration saw.</summary>
    public IEnumerable<string> TensorNames => _names;

    /// <summary>The Hessians held in memory (empty for a set loaded on demand).</summary>
    internal IReadOnlyDictionary<string, Hessian> Hessians { get; }

    /// <summary>The Hessian for a weight, or null when the calibration did not see it (then codecs use H = I).</summary>
    internal Hessian? Find(string tensorName) =>
        _load is not null ? _load(tensorName) : Hessians.TryGetValue(tensorName, out var h) ? h : null;
}
