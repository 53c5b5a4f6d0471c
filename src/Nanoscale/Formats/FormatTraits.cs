namespace Nanoscale.Formats;

/// <summary>One option a format accepts: its key, the allowed values (empty = free-form, checked by the factory), and
/// the default, which the canonical spec string leaves out. A <see cref="NestedSpec"/> option takes a spec of its own
/// (<see cref="FormatSpec.Nested"/>), which the table canonicalises when it names a row.</summary>
public sealed record FormatOption(string Key, string Default, IReadOnlyList<string> Values, string Summary, bool NestedSpec = false)
{
    /// <summary><c>round=even|away</c>: the element tie rule every block format takes (SPEC §2).</summary>
    public static FormatOption Round { get; } = new("round", "even", ["even", "away"],
        "element rounding: ties to even, or ties away from zero");

    /// <summary><c>zero=signed|positive</c>: whether a negative value that rounds to zero is stored as −0, as the OCP
    /// reference does (the default), or as +0, one canonical zero that entropy coding packs tighter.</summary>
    public static FormatOption Zero { get; } = new("zero", "signed", ["signed", "positive"],
        "signed: a negative value that rounds to zero keeps its sign (−0, as the OCP reference); positive: every zero is +0");

    /// <summary>True unless the spec says <c>zero=positive</c>.</summary>
    public static bool SignedZero(FormatSpec spec) => spec["zero"]?.Trim().ToLowerInvariant() switch
    {
        null or "signed" => true,
        "positive" => false,
        var other => throw new FormatSpecException(spec.ToString(), $"'{other}' is not a valid zero; valid values: signed, positive"),
    };

    /// <summary>The <see cref="RoundingMode"/> a spec's <c>round</c> option names (ties to even by default).</summary>
    public static RoundingMode Rounding(FormatSpec spec) => spec["round"]?.Trim().ToLowerInvariant() switch
    {
        null or "even" => RoundingMode.NearestEven,
        "away" => RoundingMode.NearestAway,
        var other => throw new FormatSpecException(spec.ToString(), $"'{other}' is not a valid round; valid values: even, away"),
    };
}

/// <summary>
/// One row of the format table that the CLI, the file format and the tests walk: a name, its aliases, what it is,
/// its nominal footprint, its options and a factory from a validated <see cref="FormatSpec"/> to a codec.
/// </summary>
/// <param name="Name">Canonical lower-case name, e.g. <c>mxfp8-e4m3</c>.</param>
/// <param name="Aliases">Other names that mean the same (e.g. <c>mxfp8</c>).</param>
/// <param name="Summary">One line for help texts.</param>
/// <param name="NominalBitsPerWeight">bpw for long rows (block-aligned); the exact value comes from the codec.</param>
/// <param name="Options">Accepted keys, in canonical order.</param>
/// <param name="Create">Builds the codec. The spec it receives has a canonical name and only known keys with allowed
/// values; the second argument is the canonical spec string the codec must report.</param>
public sealed record FormatTraits(
    string Name,
    IReadOnlyList<string> Aliases,
    string Summary,
    double NominalBitsPerWeight,
    IReadOnlyList<FormatOption> Options,
    Func<FormatSpec, string, ICodec> Create);
