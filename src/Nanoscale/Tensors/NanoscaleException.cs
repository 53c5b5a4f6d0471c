namespace Nanoscale.Tensors;

/// <summary>
/// The base of every error Nanoscale reports about what it was given — a file, a spec string, an option value, a weight —
/// as opposed to a bug. The message is one line that says where (file, tensor, field, byte offset, option) and what was
/// expected and found (STYLE §5, SPEC §15); a front end shows it as it is (the CLI: one line on standard error, exit code
/// 1). Everything else that escapes the library is a bug.
/// </summary>
/// <remarks>
/// The documented set: <c>CheckpointFormatException</c> (a malformed checkpoint or container), <c>LosslessFormatException</c>
/// (a corrupt coded stream), <c>FormatSpecException</c> (a spec string), <c>NonFiniteValueException</c> (a NaN or ±Inf
/// weight), <see cref="InvalidOptionException"/> (an option value that cannot work) and <see cref="InputException"/>
/// (well-formed input that cannot be used as asked). Options are named as the library spells them
/// (<c>EncodeOptions.AllowNonFinite</c>), in <see cref="Option"/> and in the message, so a front end can put its own
/// name for the option (a CLI flag) in their place.
/// </remarks>
public abstract class NanoscaleException(string message, string? option = null, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>The option at fault, or the one that would change the outcome, as the library names it; null when none.</summary>
    public string? Option { get; } = option;
}

/// <summary>An option's value cannot work: a rank larger than the matrix, an invalid regular expression, a dtype a
/// writer does not take. The message is <c>{Option}: {Problem}</c>.</summary>
public sealed class InvalidOptionException(string option, string problem, Exception? inner = null)
    : NanoscaleException($"{option}: {problem}", option, inner)
{
    /// <summary>What is wrong with the value, without the option's name.</summary>
    public string Problem { get; } = problem;
}

/// <summary>Well-formed input that cannot be used as asked: a checkpoint that is already compressed, a text too short
/// to calibrate on, a tensor larger than a coded format takes, a tokenizer format not supported yet.</summary>
public sealed class InputException(string message, string? option = null, Exception? inner = null)
    : NanoscaleException(message, option, inner);
