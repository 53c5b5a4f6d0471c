namespace Nanoscale.Formats;

/// <summary>One option a format accepts: its key, the allowed values (empty = free-form, checked by the factory), and
/// the default, which the canonical spec string leaves out.</summary>
public sealed record FormatOption(string Key, string Default, IReadOnlyList<string> Values, string Summary);

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
