namespace Nanoscale.LowRank;

/// <summary>
/// Per linear weight (by tensor name) the input Hessian measured on calibration text. Weights that read the same
/// input (q/k/v of one layer; gate/up) share one <see cref="Hessian"/> object. Immutable once built.
/// </summary>
public sealed class CalibrationSet
{
    internal CalibrationSet(IReadOnlyDictionary<string, Hessian> hessians, long tokens, string source)
    {
        Hessians = hessians;
        Tokens = tokens;
        Source = source;
    }

    /// <summary>Tokens the model ran over.</summary>
    public long Tokens { get; }

    /// <summary>Where the text came from (for reports).</summary>
    public string Source { get; }

    /// <summary>Weights the calibration saw.</summary>
    public IEnumerable<string> TensorNames => Hessians.Keys;

    internal IReadOnlyDictionary<string, Hessian> Hessians { get; }

    /// <summary>The Hessian for a weight, or null when the calibration did not see it (then codecs use H = I).</summary>
    internal Hessian? Find(string tensorName) => Hessians.TryGetValue(tensorName, out var h) ? h : null;
}
