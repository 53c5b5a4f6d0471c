using System.CommandLine;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Commands;

/// <summary>The flags of the verbs that generate text — <c>generate</c> and <c>chat</c> — defined once: how many new
/// tokens, and how each is chosen (<see cref="SamplingOptions"/>).</summary>
internal sealed class SamplingFlags
{
    public Option<int> Tokens { get; } = new("--tokens", "-n") { Description = "New tokens to generate", DefaultValueFactory = _ => 64 };

    public Option<double> Temperature { get; } = new("--temperature") { Description = "0 = greedy (default); otherwise sample from softmax(logits / T)", DefaultValueFactory = _ => 0 };

    public Option<int> TopK { get; } = new("--top-k") { Description = "Sample among the K most likely tokens (0 = all)", DefaultValueFactory = _ => 0 };

    public Option<double> TopP { get; } = new("--top-p") { Description = "Sample among the most likely tokens whose probabilities sum to P (1 = all)", DefaultValueFactory = _ => 1 };

    public Option<double> MinP { get; } = new("--min-p") { Description = "Sample among tokens at least this fraction as likely as the most likely one (0 = all)", DefaultValueFactory = _ => 0 };

    public Option<double> Penalty { get; } = new("--repetition-penalty") { Description = "Divide positive (multiply negative) logits of tokens already in the text by R (1 = none)", DefaultValueFactory = _ => 1 };

    public Option<int> Seed { get; } = new("--seed") { Description = "Seed of the sampler (same seed, same text)", DefaultValueFactory = _ => 0 };

    public Option<string[]> Stop { get; } = new("--stop") { Description = "Stop when the text contains this (repeatable); the text is cut before it", AllowMultipleArgumentsPerToken = false };

    public IEnumerable<Option> All => [Tokens, Temperature, TopK, TopP, MinP, Penalty, Seed, Stop];

    /// <summary>The token count asked for (at least 1).</summary>
    public int Count(ParseResult parse) =>
        parse.GetValue(Tokens) is int count and >= 1 ? count : throw new InvalidOptionException("--tokens", "must be at least 1");

    public SamplingOptions Read(ParseResult parse) => new SamplingOptions
    {
        Temperature = parse.GetValue(Temperature),
        TopK = parse.GetValue(TopK),
        TopP = parse.GetValue(TopP),
        MinP = parse.GetValue(MinP),
        RepetitionPenalty = parse.GetValue(Penalty),
        Seed = parse.GetValue(Seed),
        StopStrings = parse.GetValue(Stop) ?? [],
    }.Validate();
}
