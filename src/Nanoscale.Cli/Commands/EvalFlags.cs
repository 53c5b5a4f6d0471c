using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Commands;

/// <summary>
/// The flags of the verbs that run a model on (compressed) weights — <c>eval</c> and <c>sweep</c> — defined once and
/// read into one <see cref="EvalOptions"/>: text, window, tokenizer, tensor selection, calibration, threads and KV cache type.
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

    public Option<int?> MaxTokens { get; } = new("--max-tokens") { Description = "Score at most this many tokens of the text (default: all)" };

    public Option<string?> Tokenizer { get; } = CliRunner.TokenizerOption();

    public Option<string?> Include { get; } = CliRunner.IncludeOption();

    public Option<string?> Exclude { get; } = CliRunner.ExcludeOption();

    public Option<string?> Calibration { get; } = CliRunner.CalibrationOption();

    public Option<int> CalibrationTokens { get; } = CliRunner.CalibrationTokensOption();

    public Option<int> Threads { get; } = CliRunner.ThreadsOption();

    public Option<Runtime.KvCacheType> KvCache { get; } = CliRunner.KvCacheOption();

    /// <summary>The flags, in help order.</summary>
    public IEnumerable<Option> All => [Text, Context, MaxTokens, Tokenizer, Include, Exclude, Calibration, CalibrationTokens, Threads, KvCache];

    /// <summary>The options the flags set (<see cref="EvalOptions.Format"/> is the verb's own).</summary>
    public EvalOptions Read(ParseResult parse)
    {
        int? context = parse.GetValue(Context);
        if (context is < 2) throw new InvalidOptionException("--ctx", "must be at least 2");
        int? maxTokens = parse.GetValue(MaxTokens);
        if (maxTokens is < 2) throw new InvalidOptionException("--max-tokens", "must be at least 2 (one to condition on, one to score)");
        return new EvalOptions
        {
            TextPath = parse.GetValue(Text) ?? "",
            ContextLength = context,
            MaxTokens = maxTokens,
            TokenizerPath = parse.GetValue(Tokenizer),
            Include = parse.GetValue(Include),
            Exclude = parse.GetValue(Exclude),
            Parallelism = new(parse.GetValue(Threads)),
            KvCache = parse.GetValue(KvCache),
            CalibrationPath = parse.GetValue(Calibration),
            CalibrationTokens = parse.GetValue(CalibrationTokens),
        };
    }
}
