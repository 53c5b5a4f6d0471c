namespace Nanoscale.LowRank;

/// <summary>
/// Per linear weight (by tensor name) the input Hessian measured on calibration text. Weights that read the same
/// input (q/k/v of one layer; gate/up) share one <see cref="Hessian"/> object. Immutable once built.
/// </summary>
public sealed class CalibrationSet(IReadOnlyDictionary<string, Hessian> hessians, long tokens, string source)
{
    /// <summary>Tokens the model ran over.</summary>
    public long Tokens { get; } = tokens;

    /// <summary>Where the text came from (for reports).</summary>
    public string Source { get; } = source;

    public IReadOnlyDictionary<string, Hessian> Hessians { get; } = hessians;

    /// <summary>The Hessian for a weight, or null when the calibration did not see it (then codecs use H = I).</summary>
    public Hessian? Find(string tensorName) => Hessians.TryGetValue(tensorName, out var h) ? h : null;
}
