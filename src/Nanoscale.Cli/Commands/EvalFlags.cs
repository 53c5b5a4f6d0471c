using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Commands;

/// <summary>
/// The flags of the verbs that run a model on (compressed) weights — <c>eval</c> and <c>sweep</c> — defined once and
/// read into one <see cref="EvalOptions"/>: text, window, tokenizer, tensor selection, calibration and threads.
/// </summary>
internal sealed class EvalFlags
{
    public EvalFlags(bool textRequired, string textDescription, string contextDescription)
    {
        Text = new Option<string?>("--text") { Description = textDescription, Required = textRequired };
        Context = new Option<int?>("--ctx") { Description = contextDescription };
    }

    public Option<string?> Text { get; }

    public Option<int?> Context { get; }

    public Option<string?> Tokenizer { get; } = CliRunner.TokenizerOption();

    public Option<string?> Include { get; } = CliRunner.IncludeOption();

    public Option<string?> Exclude { get; } = CliRunner.ExcludeOption();

    public Option<string?> Calibration { get; } = CliRunner.CalibrationOption();

    public Option<int> CalibrationTokens { get; } = CliRunner.CalibrationTokensOption();

    public Option<int> Threads { get; } = CliRunner.ThreadsOption();

    /// <summary>The flags, in help order.</summary>
    public IEnumerable<Option> All => [Text, Context, Tokenizer, Include, Exclude, Calibration, CalibrationTokens, Threads];

    /// <summary>The options the flags set (<see cref="EvalOptions.Format"/> is the verb's own).</summary>
    public EvalOptions Read(ParseResult parse)
    {
        int? context = parse.GetValue(Context);
        if (context is < 2) throw new InvalidOptionException("--ctx", "must be at least 2");
        return new EvalOptions
        {
            TextPath = parse.GetValue(Text) ?? "",
            ContextLength = context,
            TokenizerPath = parse.GetValue(Tokenizer),
            Include = parse.GetValue(Include),
            Exclude = parse.GetValue(Exclude),
            Parallelism = new(parse.GetValue(Threads)),
            CalibrationPath = parse.GetValue(Calibration),
            CalibrationTokens = parse.GetValue(CalibrationTokens),
        };
    }
}
