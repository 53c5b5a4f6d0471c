using System.Diagnostics;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>One multiple-choice item: a context, its candidate continuations and the index of the right one.</summary>
public sealed record ChoiceItem(string Context, IReadOnlyList<string> Choices, int Answer);

/// <summary>An item's scores: each choice's summed log-likelihood and the choices picked by sum and by length-normalised sum.</summary>
public sealed record ChoiceScore(double[] LogLikelihoods, int Picked, int PickedNormalised, int Answer);

/// <summary>
/// Zero-shot multiple-choice accuracy. <paramref name="Accuracy"/> picks the choice with the largest summed
/// log-likelihood (lm-evaluation-harness's <c>acc</c>), <paramref name="AccuracyNormalised"/> the largest per character
/// of the choice (<c>acc_norm</c>); each with its standard error (sample standard deviation over √n).
/// </summary>
public sealed record MultipleChoiceResult(
    int Items, double Accuracy, double AccuracyStderr, double AccuracyNormalised, double AccuracyNormalisedStderr,
    long ScoredTokens, TimeSpan Elapsed, IReadOnlyList<ChoiceScore> Scores);

/// <summary>
/// Scores multiple-choice items as lm-evaluation-harness's <c>loglikelihood</c> requests do: trailing spaces of the
/// context move to the continuation; the continuation's tokens are those of <c>encode(context + choice)</c> after the
/// tokens of <c>encode(context)</c> (so a word keeps the token it has in running text); each choice's score is the sum
/// of log p(token | everything before) over those tokens. The sequence starts with BOS when the tokenizer has one (as
/// perplexity does here); a sequence longer than the model's maximum keeps its end.
/// </summary>
public static class MultipleChoice
{
    public static MultipleChoiceResult Evaluate(LlamaModel model, ITokenizer tokenizer, IReadOnlyList<ChoiceItem> items,
        IProgress<(long Done, long Total)>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        var clock = Stopwatch.StartNew();
        var scores = new List<ChoiceScore>(items.Count);
        long scored = 0;
        for (int i = 0; i < items.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var item = items[i];
            var lls = new double[item.Choices.Count];
            for (int c = 0; c < lls.Length; c++)
            {
                var (sequence, continuation) = Encode(tokenizer, item.Context, item.Choices[c], model.Config.MaxSeqLen);
                lls[c] = LogLikelihood(model, sequence, continuation, cancellationToken);
                scored += continuation;
            }
            int picked = ArgMax(lls, _ => 1);
            int normalised = ArgMax(lls, c => Math.Max(1, item.Choices[c].EnumerateRunes().Count()));
            scores.Add(new ChoiceScore(lls, picked, normalised, item.Answer));
            progress?.Report((i + 1, items.Count));
        }
        var (acc, accErr) = MeanAndStderr(scores.Select(s => s.Picked == s.Answer ? 1.0 : 0.0).ToList());
        var (norm, normErr) = MeanAndStderr(scores.Select(s => s.PickedNormalised == s.Answer ? 1.0 : 0.0).ToList());
        return new MultipleChoiceResult(items.Count, acc, accErr, norm, normErr, scored, clock.Elapsed, scores);
    }

    /// <summary>The token sequence to run and how many tokens at its end are the continuation's.</summary>
    internal static (int[] Sequence, int Continuation) Encode(ITokenizer tokenizer, string context, string choice, int maxLength)
    {
        int spaces = context.Length - context.TrimEnd().Length;
        if (spaces > 0)
        {
            choice = context[^spaces..] + choice;
            context = context[..^spaces];
        }
        bool bos = tokenizer.BosId is not null;
        int[] whole = tokenizer.Encode(context + choice, bos);
        int[] head = tokenizer.Encode(context, bos);
        int shared = 0;
        while (shared < head.Length && shared < whole.Length && head[shared] == whole[shared]) shared++;
        int continuation = whole.Length - shared;
        if (continuation == 0)
            throw new InvalidOptionException("tasks", $"the choice \"{choice}\" adds no token to its context");
        if (whole.Length > maxLength) whole = whole[^maxLength..];
        return (whole, Math.Min(continuation, whole.Length - 1));
    }

    /// <summary>Σ log p(sequence[t] | sequence[..t]) over the last <paramref name="continuation"/> tokens.</summary>
    private static double LogLikelihood(LlamaModel model, int[] sequence, int continuation, CancellationToken cancellationToken)
    {
        int vocab = model.Config.VocabSize, inputs = sequence.Length - 1;
        var session = model.CreateSession(Math.Max(1, inputs));
        var logits = new float[inputs * vocab];
        session.Forward(sequence.AsSpan(0, inputs), logits, cancellationToken);
        double sum = 0;
        for (int t = inputs - continuation; t < inputs; t++)
        {
            sum -= Kernels.NegativeLogLikelihood(logits.AsSpan(t * vocab, vocab), sequence[t + 1]);
        }
        return sum;
    }

    private static int ArgMax(double[] lls, Func<int, double> length)
    {
        int best = 0;
        for (int c = 1; c < lls.Length; c++)
            if (lls[c] / length(c) > lls[best] / length(best)) best = c;
        return best;
    }

    private static (double Mean, double Stderr) MeanAndStderr(IReadOnlyList<double> x)
    {
        if (x.Count == 0) return (double.NaN, double.NaN);
        double mean = x.Average();
        if (x.Count < 2) return (mean, double.NaN);
        double variance = x.Sum(v => (v - mean) * (v - mean)) / (x.Count - 1);
        return (mean, Math.Sqrt(variance / x.Count));
    }
}
