using System.Diagnostics;
using System.Numerics;
using System.Runtime.Intrinsics;
using Nanoscale.Tensors;

namespace Nanoscale.Runtime;

/// <summary>Why generation stopped.</summary>
public enum StopReason
{
    /// <summary>The requested number of new tokens was reached.</summary>
    Length,

    /// <summary>The model emitted an end token (EOS, BOS as llama2.c's delimiter, or one of <see cref="SamplingOptions.StopTokenIds"/>).</summary>
    EndToken,

    /// <summary>The text reached one of <see cref="SamplingOptions.StopStrings"/>.</summary>
    StopString,

    /// <summary>The model's maximum sequence length was reached.</summary>
    Context,
}

/// <summary>A generated sequence: the prompt's tokens then the new ones, its text and how fast it came.</summary>
/// <param name="Tokens">Prompt tokens (BOS included) followed by generated tokens.</param>
/// <param name="PromptTokens">How many of <paramref name="Tokens"/> came from the prompt.</param>
/// <param name="Text">The decoded text of all tokens (cut before a stop string).</param>
/// <param name="Stop">Why generation stopped.</param>
/// <param name="PromptSeconds">Wall time of the forward pass over the prompt.</param>
/// <param name="GenerateSeconds">Wall time from the end of the prompt to the last new token.</param>
public sealed record GenerationResult(int[] Tokens, int PromptTokens, string Text, StopReason Stop, double PromptSeconds = 0, double GenerateSeconds = 0)
{
    /// <summary>Each generated token's log-probability and its most likely alternatives, when
    /// <see cref="SamplingOptions.LogProbs"/> asked for them.</summary>
    public IReadOnlyList<TokenLogProb>? LogProbs { get; init; }

    /// <summary>The text of the generated tokens alone (<see cref="Text"/> less the prompt's decoded text; cut before a
    /// stop string).</summary>
    public string NewText { get; init; } = "";

    /// <summary>Prompt tokens whose keys and values a kept cache already held, so they did not run (a conversation going
    /// on, or the token factory's prompt caching); counted in <see cref="PromptTokens"/> too.</summary>
    public int CachedPromptTokens { get; init; }

    /// <summary>True when the model emitted an end token before the limit.</summary>
    public bool StoppedAtEnd => Stop == StopReason.EndToken;

    public int GeneratedTokens => Tokens.Length - PromptTokens;

    public double PromptTokensPerSecond => PromptSeconds > 0 ? PromptTokens / PromptSeconds : 0;

    public double GeneratedTokensPerSecond => GenerateSeconds > 0 ? GeneratedTokens / GenerateSeconds : 0;
}

/// <summary>
/// How the next token is chosen. The defaults are greedy decoding (argmax), which tests rely on; a positive
/// <see cref="Temperature"/> samples, after <see cref="RepetitionPenalty"/>, <see cref="TopK"/>, <see cref="TopP"/> and
/// <see cref="MinP"/>, in that order (as transformers' <c>generate</c> applies its logits processors and warpers).
/// </summary>
public sealed record SamplingOptions
{
    /// <summary>0 (default): greedy. Otherwise logits are divided by it before the softmax.</summary>
    public double Temperature { get; init; }

    /// <summary>Keep only the K most likely tokens; 0: all.</summary>
    public int TopK { get; init; }

    /// <summary>Keep the smallest set of most likely tokens whose probabilities sum to at least P; 1: all.</summary>
    public double TopP { get; init; } = 1;

    /// <summary>Keep only tokens at least this fraction as likely as the most likely one (min-p sampling, as vLLM's and
    /// llama.cpp's <c>min_p</c> and transformers' <c>MinPLogitsWarper</c>: on the probabilities after the temperature);
    /// 0: all.</summary>
    public double MinP { get; init; }

    /// <summary>CTRL's penalty (transformers' <c>repetition_penalty</c>): the logit of every token already in the
    /// sequence is divided by it when positive and multiplied by it when negative; 1: none.</summary>
    public double RepetitionPenalty { get; init; } = 1;

    /// <summary>OpenAI's <c>frequency_penalty</c> (−2 … 2): each token's logit is lowered by this times the number of
    /// times it was generated so far (as vLLM does: the generated tokens, not the prompt); 0: none.</summary>
    public double FrequencyPenalty { get; init; }

    /// <summary>OpenAI's <c>presence_penalty</c> (−2 … 2): the logit of every token generated so far is lowered by this
    /// once; 0: none.</summary>
    public double PresencePenalty { get; init; }

    /// <summary>Record each generated token's log-probability and this many most likely alternatives (0 … 20); null:
    /// none. Log-probabilities are the model's own (log-softmax of its logits, before temperature and penalties).</summary>
    public int? LogProbs { get; init; }

    /// <summary>Seed of the sampler; the same seed, model and prompt give the same text.</summary>
    public int Seed { get; init; }

    /// <summary>Generation stops when the text produced contains one of these; the text is cut before it.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    /// <summary>Token ids that end generation besides the tokenizer's EOS (e.g. <c>generation_config.json</c>'s).</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    /// <summary>Added to the logits of these token ids before each choice (OpenAI's <c>logit_bias</c>: −100 bans a
    /// token, +100 all but forces it; within −100..100), greedy or sampled.</summary>
    public IReadOnlyDictionary<int, double>? LogitBias { get; init; }

    /// <summary>The most alternatives <see cref="LogProbs"/> may ask for.</summary>
    public const int MaxLogProbs = 20;

    /// <summary>Checks the ranges and returns the options.</summary>
    /// <exception cref="InvalidOptionException">A value outside its range.</exception>
    public SamplingOptions Validate()
    {
        if (!(Temperature >= 0) || double.IsInfinity(Temperature)) throw new InvalidOptionException("temperature", $"must be 0 (greedy) or positive, not {Temperature}");
        if (TopK < 0) throw new InvalidOptionException("top-k", $"must be 0 (off) or positive, not {TopK}");
        if (!(TopP > 0 && TopP <= 1)) throw new InvalidOptionException("top-p", $"must be in (0, 1], not {TopP}");
        if (!(MinP >= 0 && MinP <= 1)) throw new InvalidOptionException("min-p", $"must be within 0..1, not {MinP}");
        if (!(RepetitionPenalty > 0) || double.IsInfinity(RepetitionPenalty))
            throw new InvalidOptionException("repetition-penalty", $"must be positive (1 = none), not {RepetitionPenalty}");
        if (!(FrequencyPenalty >= -2 && FrequencyPenalty <= 2)) throw new InvalidOptionException("frequency_penalty", $"must be within -2..2, not {FrequencyPenalty}");
        if (!(PresencePenalty >= -2 && PresencePenalty <= 2)) throw new InvalidOptionException("presence_penalty", $"must be within -2..2, not {PresencePenalty}");
        if (LogProbs is < 0 or > MaxLogProbs) throw new InvalidOptionException("logprobs", $"must be within 0..{MaxLogProbs} alternatives, not {LogProbs}");
        if (StopStrings.Any(string.IsNullOrEmpty)) throw new InvalidOptionException("stop", "a stop string cannot be empty");
        foreach (var (id, value) in LogitBias ?? new Dictionary<int, double>())
            if (id < 0 || !(value >= -100 && value <= 100))
                throw new InvalidOptionException("logit_bias", $"token {id}: a bias within -100..100 for a token id ≥ 0, not {value}");
        return this;
    }
}

/// <summary>A generated token's log-probability under the model and the most likely alternatives at its position
/// (most likely first).</summary>
public sealed record TokenLogProb(int Id, double LogProb, IReadOnlyList<(int Id, double LogProb)> Top)
{
    /// <summary>From the logits the token was chosen from: log-softmax in double.</summary>
    internal static TokenLogProb From(ReadOnlySpan<float> logits, int chosen, int top)
    {
        double max = logits[Kernels.ArgMax(logits)], sum = 0;
        foreach (float v in logits) sum += Math.Exp(v - max);
        double logZ = max + Math.Log(sum);
        var best = new List<(int Id, double LogProb)>(top + 1);
        if (top > 0)
        {
            // The top entries by a partial selection: keep a small sorted list (most likely first, ties by id).
            for (int i = 0; i < logits.Length; i++)
            {
                double lp = logits[i] - logZ;
                if (best.Count == top && lp <= best[^1].LogProb) continue;
                int at = best.Count;
                while (at > 0 && best[at - 1].LogProb < lp) at--;
                best.Insert(at, (i, lp));
                if (best.Count > top) best.RemoveAt(best.Count - 1);
            }
        }
        return new TokenLogProb(chosen, logits[chosen] - logZ, best);
    }
}

/// <summary>Text generation: greedy (argmax, as llama2.c <c>run</c> with temperature 0) or sampled.</summary>
public static class Generation
{
    /// <summary>Greedy decoding; see <see cref="Generate(LlamaModel, ITokenizer, string, int, SamplingOptions, Action{string}?, CancellationToken)"/>.</summary>
    public static GenerationResult Greedy(LlamaModel model, ITokenizer tokenizer, string prompt, int maxNewTokens,
        CancellationToken cancellationToken = default) =>
        Generate(model, tokenizer, prompt, maxNewTokens, new SamplingOptions(), null, cancellationToken);

    /// <summary>
    /// Encodes <paramref name="prompt"/> with BOS (an empty prompt is just BOS), then appends tokens chosen by
    /// <paramref name="sampling"/> until <paramref name="maxNewTokens"/>, an end token, a stop string, or the model's
    /// maximum sequence length. <paramref name="onText"/> receives the new text as it is produced (held back while it
    /// could still be the start of a stop string or ends inside a UTF-8 character).
    /// </summary>
    public static GenerationResult Generate(LlamaModel model, ITokenizer tokenizer, string prompt, int maxNewTokens,
        SamplingOptions sampling, Action<string>? onText = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        return Generate(model, tokenizer, tokenizer.Encode(prompt ?? "", addBos: tokenizer.BosId is not null), maxNewTokens,
            sampling, onText, cancellationToken);
    }

    /// <summary>As <see cref="Generate(LlamaModel, ITokenizer, string, int, SamplingOptions, Action{string}?, CancellationToken)"/>,
    /// from prompt token ids already made (a chat template's special tokens included).</summary>
    /// <remarks>With a <paramref name="constraint"/> (its own, fresh), only the tokens it allows are drawn and the
    /// generation ends when it is complete (<see cref="JsonConstraint"/>: a JSON reply).</remarks>
    public static GenerationResult Generate(LlamaModel model, ITokenizer tokenizer, int[] promptTokens, int maxNewTokens,
        SamplingOptions sampling, Action<string>? onText = null, CancellationToken cancellationToken = default, ITokenConstraint? constraint = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(promptTokens);
        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        sampling = (sampling ?? new SamplingOptions()).Validate();
        GenerationSequence.CheckPrompt(model, promptTokens, maxNewTokens);
        return Run(new GenerationSequence(model, tokenizer, promptTokens, maxNewTokens, sampling, [], onText, cancellationToken, constraint: constraint),
            cancellationToken);
    }

    /// <summary>Runs a sequence whose prompt has run to its end, one token at a time in its own session.</summary>
    internal static GenerationResult Run(GenerationSequence sequence, CancellationToken cancellationToken)
    {
        while (sequence.Advance() is int next)
        {
            cancellationToken.ThrowIfCancellationRequested();
            sequence.Session.Forward([next], sequence.Last, cancellationToken);
        }
        return sequence.Result();
    }

    /// <summary>Chooses the next token from the logits (see <see cref="SamplingOptions"/>).</summary>
    /// <remarks>
    /// The draw, exactly. The tokens in the order most likely first (ties by id) each weigh
    /// <c>exp((logit − max) · (1 / temperature))</c> (in double, by an exponential of our own that is the same on every machine),
    /// held as an integer: times 2^s rounded, s = min(51, 62 − the vocabulary's bit length), so that sums are exact and do
    /// not depend on the order they are taken in. Top-k keeps the order's first k; top-p then the shortest
    /// beginning whose running weight reaches <c>top_p · T0</c> (<c>T0</c>: the weight of the tokens top-k kept, all
    /// without it); min-p the beginning of weights at least <c>min_p</c> times the first's. The draw takes
    /// <c>r = u · total</c> (u uniform in [0, 1) from the sampler's seeded generator, <c>total</c> the kept tokens'
    /// weight; products through a double, truncated) and the first kept token, in id order, whose running weight passes r.
    /// Nothing needs the vocabulary sorted (a sort of 152K tokens was 23 ms a draw, per stream and step on the factory's
    /// one thread): top-k's tokens are found by one pass with a heap of k, top-p's last one in the bucket of weights
    /// (16 a binade) where the running weight reaches its share, whose tokens alone are sorted, and min-p's by its floor.
    /// <c>SamplingTests</c> holds the same draw by a whole sort (the reference twin; tested equal on random logits and
    /// cuts).
    /// </remarks>
    internal sealed class Sampler(SamplingOptions options, int vocab)
    {
        private readonly Random _random = new(options.Seed);

        // The draw's vocabulary-sized working arrays, held per thread rather than per sampler: a server holds a sampler
        // per running sequence (64 at 152K tokens would hold ~230 MB), nothing in them outlives a draw, and a thread
        // draws for one sequence at a time. A greedy draw without penalties reads the logits as they are.
        [ThreadStatic] private static float[]? t_logits;   // the adjusted logits (penalties, bias)
        [ThreadStatic] private static long[]? t_weights;   // the tokens' weights (by id, or along top-k's order)
        [ThreadStatic] private static int[]? t_order;      // top-k's tokens, or a bucket's, in the order
        [ThreadStatic] private static long[]? t_buckets;   // the weight per bucket

        private Span<T> Scratch<T>(ref T[]? held, int n)
        {
            if (held is null || held.Length < n) held = new T[Math.Max(n, vocab)];
            return held.AsSpan(0, n);
        }

        /// <param name="logits">The model's logits for the next token.</param>
        /// <param name="sequence">Prompt and generated tokens so far.</param>
        /// <param name="promptLength">How many of <paramref name="sequence"/> are the prompt.</param>
        public int Next(ReadOnlySpan<float> logits, IReadOnlyList<int> sequence, int promptLength)
        {
            bool penalties = options.RepetitionPenalty != 1 || options.FrequencyPenalty != 0 || options.PresencePenalty != 0 || options.LogitBias is { Count: > 0 };
            if (options.Temperature == 0 && !penalties) return Kernels.ArgMax(logits);
            var x = Scratch(ref t_logits, logits.Length);
            logits.CopyTo(x);
            if (options.RepetitionPenalty != 1)
            {
                float penalty = (float)options.RepetitionPenalty;
                foreach (int id in sequence.Distinct())
                    if ((uint)id < (uint)x.Length) x[id] = x[id] > 0 ? x[id] / penalty : x[id] * penalty;
            }
            if (options.FrequencyPenalty != 0 || options.PresencePenalty != 0)
            {
                var counts = new Dictionary<int, int>();
                for (int i = promptLength; i < sequence.Count; i++) counts[sequence[i]] = counts.GetValueOrDefault(sequence[i]) + 1;
                foreach (var (id, count) in counts)
                    if ((uint)id < (uint)x.Length) x[id] -= (float)(count * options.FrequencyPenalty + options.PresencePenalty);
            }
            if (options.LogitBias is { } bias)
                foreach (var (id, value) in bias)
                    if ((uint)id < (uint)x.Length) x[id] += (float)value;
            if (options.Temperature == 0) return Kernels.ArgMax(x);
            return Sample(x);
        }

        /// <summary>Temperature, top-k, top-p, min-p, then one draw from what is left (see the class's remarks).</summary>
        private int Sample(Span<float> logits)
        {
            int n = logits.Length;
            double temperature = options.Temperature, scale = Scale(n);
            var q = Scratch(ref t_weights, n);
            if (options.TopK > 0)
            {
                // Top-k's tokens by a heap; the cuts along their order; the draw through the kept ones in id order.
                int k = Math.Min(options.TopK, n);
                var best = Scratch(ref t_order, n)[..k];
                Best(logits, best);
                double max = logits[best[0]];
                long considered = 0;
                for (int i = 0; i < k; i++) considered += q[i] = Weight(logits[best[i]], max, temperature, scale);
                int count = Keep(q[..k], considered);
                best[..count].Sort(q[..count]);
                long kept = 0;
                foreach (long weight in q[..count]) kept += weight;
                long r = Share(_random.NextDouble(), kept), running = 0;
                int last = 0;
                for (int i = 0; i < count; i++)
                    if (q[i] > 0 && (running += q[last = i]) > r) break;
                return best[last];
            }
            double top = logits[Kernels.ArgMax(logits)];
            bool bucketed = options.TopP < 1;
            var buckets = (t_buckets ??= new long[Buckets + 1]).AsSpan();
            if (bucketed) buckets.Clear();
            // The first's weight is scale exactly (exp(0) = 1).
            long minimum = options.MinP > 0 ? Share(options.MinP, (long)scale) : 0, atLeastMinimum = 0;
            long all = Weights(logits, top, temperature, scale, q);
            if (bucketed || minimum > 0)
                for (int i = 0; i < n; i++)
                {
                    long weight = q[i];
                    atLeastMinimum += weight & ~((weight - minimum) >> 63); // without a branch: flat logits mispredict it
                    if (bucketed) buckets[Bucket(weight)] += weight;
                }
            // The last token top-p keeps (-1: all of them) lies in the bucket where the running weight reaches its
            // share; only that bucket's tokens are sorted into the order.
            int boundary = -1;
            long topP = all;
            if (bucketed)
            {
                long target = Share(options.TopP, all), before = 0;
                int b = 0;
                while (b <= Buckets && before + buckets[b] < target) before += buckets[b++];
                if (b <= Buckets)
                {
                    var members = Scratch(ref t_order, n);
                    int count = 0;
                    var (low, high) = BucketBounds(b);
                    for (int i = 0; i < n; i++)
                        if ((ulong)(q[i] - low) < (ulong)(high - low)) members[count++] = i;
                    Sort(logits, members[..count]);
                    for (int i = 0; i < count && boundary < 0; i++)
                        if ((before += q[members[i]]) >= target) (boundary, topP) = (members[i], before);
                }
            }
            // Every token top-p keeps weighs at least its last one: where that is at least min-p's floor, top-p's is the
            // shorter cut (kept: heavier than its last one, or as heavy and not after it), else min-p's.
            bool byTopP = boundary >= 0 && q[boundary] >= minimum;
            long bound = byTopP ? q[boundary] : 0, least = byTopP ? bound + 1 : Math.Max(minimum, 1);
            long u = Share(_random.NextDouble(), byTopP ? topP : minimum > 0 ? atLeastMinimum : all), sum = 0;
            int drawn = -1;
            for (int i = 0; i < n; i++)
            {
                long weight = q[i], take = weight & ~((weight - least) >> 63); // weight ≥ least, without a branch
                if (byTopP && weight == bound && (i == boundary || Before(logits, i, boundary))) take = weight;
                if ((sum += take) > u) return i;
                drawn += (i - drawn) & (int)(-take >> 63); // the last kept token with a weight
            }
            return drawn;
        }

        // Weights in fixed point, the most likely token's 2^s with s = min(51, 62 − bits(vocabulary)): their sums are exact
        // and cannot overflow, so a sum does not depend on the order it is taken in, and a cut found by buckets is the one
        // a walk along the whole order finds. (At 152K tokens a weight below 2^-44 of the first's is 0: never drawn.)
        internal static double Scale(int n) => Math.ScaleB(1.0, Math.Min(51, 62 - (BitOperations.Log2((uint)n) + 1)));

        /// <summary>A token's weight: <see cref="Exp(double)"/> of <c>(logit − max) · (1 / temperature)</c> times the scale, rounded to
        /// the nearest integer (ties to even: adding 2^52 rounds it, and the integer is then the low bits).</summary>
        internal static long Weight(float logit, double max, double temperature, double scale) =>
            BitConverter.DoubleToInt64Bits(Exp(((double)logit - max) * (1 / temperature)) * scale + RoundMagic) - RoundMagicBits;

        /// <summary>Every token's <see cref="Weight"/> into <paramref name="weights"/>, and their sum: four at a time in
        /// 256-bit vectors, the same operations in the same order as the one-token form, so equal bit for bit
        /// (<c>SamplingTests.TheVectorWeightsAreTheScalarOnes</c>). The exponential of every token was most of a draw's
        /// cost (1.2 ms of 1.3 at 152K tokens with <c>Math.Exp</c>).</summary>
        internal static long Weights(ReadOnlySpan<float> logits, double max, double temperature, double scale, Span<long> weights)
        {
            int n = logits.Length, i = 0;
            long sum = 0;
            if (Vector256.IsHardwareAccelerated && n >= 8)
            {
                var total = Vector256<long>.Zero;
                var (vMax, vInverse, vScale, vMagic, vMagicBits) = (Vector256.Create(max), Vector256.Create(1 / temperature), Vector256.Create(scale),
                    Vector256.Create(RoundMagic), Vector256.Create(RoundMagicBits));
                for (; i + 8 <= n; i += 8)
                {
                    var (low, high) = Vector256.Widen(Vector256.Create(logits.Slice(i, 8)));
                    var first = (Exp((low - vMax) * vInverse) * vScale + vMagic).AsInt64() - vMagicBits;
                    var second = (Exp((high - vMax) * vInverse) * vScale + vMagic).AsInt64() - vMagicBits;
                    first.CopyTo(weights.Slice(i, 4));
                    second.CopyTo(weights.Slice(i + 4, 4));
                    total += first + second;
                }
                sum = Vector256.Sum(total);
            }
            for (; i < n; i++) sum += weights[i] = Weight(logits[i], max, temperature, scale);
            return sum;
        }

        private const double RoundMagic = 4503599627370496.0; // 2^52
        private static readonly long RoundMagicBits = BitConverter.DoubleToInt64Bits(RoundMagic);

        // e^x for x ≤ 0: x = k·ln 2 + r with |r| ≤ ln 2 / 2 (k by adding 1.5·2^52, which rounds to an integer; ln 2 in two
        // parts, fdlibm's, the first exact times k), e^r by its Taylor series to r^10 (relative error below 3e-13, far
        // finer than a weight's integer needs: 2^-44 of the first's at 152K tokens), times 2^k
        // built in the exponent bits. Only additions, multiplications and bit moves, each rounded as IEEE 754 says, so the
        // same on every machine and in every lane (Math.Exp is the C library's). Below −100 the weight is 0 at any scale.
        private const double Log2E = 1.4426950408889634, Ln2High = 6.93147180369123816490e-01, Ln2Low = 1.90821492927058770002e-10;
        private const double Shifter = 6755399441055744.0; // 1.5 · 2^52
        private static readonly long ShifterBits = BitConverter.DoubleToInt64Bits(Shifter);

        /// <summary>e^x for x ≤ 0 (within 3e-13 of <c>Math.Exp</c>, relatively), the one-number form.</summary>
        internal static double Exp(double x)
        {
            x = Math.Max(x, -100);
            double t = x * Log2E + Shifter, k = t - Shifter;
            long power = BitConverter.DoubleToInt64Bits(t) - ShifterBits;
            double r = x - k * Ln2High - k * Ln2Low;
            double p = 1.0 / 3628800;
            p = p * r + 1.0 / 362880;
            p = p * r + 1.0 / 40320;
            p = p * r + 1.0 / 5040;
            p = p * r + 1.0 / 720;
            p = p * r + 1.0 / 120;
            p = p * r + 1.0 / 24;
            p = p * r + 1.0 / 6;
            p = p * r + 0.5;
            p = p * r + 1;
            p = p * r + 1;
            return p * BitConverter.Int64BitsToDouble((power + 1023) << 52);
        }

        /// <summary><see cref="Exp(double)"/> in four lanes: the same operations in the same order.</summary>
        private static Vector256<double> Exp(Vector256<double> x)
        {
            x = Vector256.Max(x, Vector256.Create(-100.0));
            var shifter = Vector256.Create(Shifter);
            var t = x * Vector256.Create(Log2E) + shifter;
            var k = t - shifter;
            var power = t.AsInt64() - Vector256.Create(ShifterBits);
            var r = x - k * Vector256.Create(Ln2High) - k * Vector256.Create(Ln2Low);
            var p = Vector256.Create(1.0 / 3628800);
            p = p * r + Vector256.Create(1.0 / 362880);
            p = p * r + Vector256.Create(1.0 / 40320);
            p = p * r + Vector256.Create(1.0 / 5040);
            p = p * r + Vector256.Create(1.0 / 720);
            p = p * r + Vector256.Create(1.0 / 120);
            p = p * r + Vector256.Create(1.0 / 24);
            p = p * r + Vector256.Create(1.0 / 6);
            p = p * r + Vector256.Create(0.5);
            p = p * r + Vector256<double>.One;
            p = p * r + Vector256<double>.One;
            return p * Vector256.ShiftLeft(power + Vector256.Create(1023L), 52).AsDouble();
        }

        /// <summary><c>fraction · total</c>, truncated (through a double).</summary>
        private static long Share(double fraction, long total) => (long)(fraction * total);

        // Buckets of weights, along the order: 16 per binade (the four bits after the leading one), 64 binades; the last
        // one for weight 0.
        private const int Buckets = 64 * 16;

        internal static int Bucket(long weight)
        {
            if (weight == 0) return Buckets;
            int zeros = BitOperations.LeadingZeroCount((ulong)weight);
            return zeros * 16 + 15 - (int)(((ulong)weight << zeros) >> 59 & 0xF);
        }

        /// <summary>The weights in bucket <paramref name="b"/>: [low, high).</summary>
        internal static (long Low, long High) BucketBounds(int b)
        {
            if (b >= Buckets) return (0, 1);
            int zeros = b / 16, bits = 15 - b % 16;
            long low = (long)(((ulong)(16 | bits) << 59) >> zeros);
            return (low, low + Math.Max(1L, (1L << 59) >> zeros));
        }

        /// <summary>How many of the order's first tokens (weights <paramref name="q"/>, summing to
        /// <paramref name="considered"/>) top-p and min-p keep.</summary>
        private int Keep(ReadOnlySpan<long> q, long considered)
        {
            int kept = q.Length;
            if (options.TopP < 1)
            {
                long target = Share(options.TopP, considered), running = 0;
                for (int i = 0; i < q.Length; i++)
                    if ((running += q[i]) >= target)
                    {
                        kept = i + 1;
                        break;
                    }
            }
            if (options.MinP > 0)
            {
                long floor = Share(options.MinP, q[0]);
                int atLeast = 1;
                while (atLeast < kept && q[atLeast] >= floor) atLeast++;
                kept = atLeast;
            }
            return kept;
        }

        /// <summary>The <paramref name="best"/>.Length most likely tokens, in the order: one pass keeping the best so far
        /// in a heap whose root is the one that comes last.</summary>
        private static void Best(ReadOnlySpan<float> logits, Span<int> best)
        {
            int k = best.Length;
            for (int i = 0; i < k; i++)
            {
                best[i] = i;
                for (int at = i; at > 0 && Before(logits, best[(at - 1) / 2], best[at]); at = (at - 1) / 2)
                    (best[at], best[(at - 1) / 2]) = (best[(at - 1) / 2], best[at]);
            }
            for (int i = k; i < logits.Length; i++)
            {
                if (!Before(logits, i, best[0])) continue;
                best[0] = i;
                for (int at = 0; ;)
                {
                    int last = at, left = 2 * at + 1, right = left + 1;
                    if (left < k && Before(logits, best[last], best[left])) last = left;
                    if (right < k && Before(logits, best[last], best[right])) last = right;
                    if (last == at) break;
                    (best[at], best[last]) = (best[last], best[at]);
                    at = last;
                }
            }
            Sort(logits, best);
        }

        /// <summary>Whether token <paramref name="a"/> comes before <paramref name="b"/>: more likely, or as likely and
        /// of a lower id.</summary>
        private static bool Before(ReadOnlySpan<float> logits, int a, int b) =>
            logits[a].CompareTo(logits[b]) is var c && (c > 0 || c == 0 && a < b);

        /// <summary>Sorts token ids into the order (the logits are the thread's scratch array, which the comparison reads).</summary>
        private static void Sort(ReadOnlySpan<float> logits, Span<int> ids)
        {
            var keys = t_logits!;
            ids.Sort((a, b) => keys[b].CompareTo(keys[a]) is var c && c != 0 ? c : a.CompareTo(b));
        }
    }

    /// <summary>
    /// The text of the sequence as it grows. New tokens are decoded incrementally, as Hugging Face's <c>DecodeStream</c>
    /// and vLLM do: the tokens from <c>_prefix</c> to <c>_read</c> decode to a known text, and with each new token the
    /// tokens from <c>_prefix</c> on are decoded again; what follows the known text is new once it does not end inside a
    /// UTF-8 character, and the window then moves on. Decoding the whole sequence at every token instead cost time that
    /// grew with its length (GPT-2-style BPE: 22 µs a token at 64 tokens, 89 at 256, 888 at 2,048, on the factory's one
    /// worker thread for every sequence of a step) against ~8 µs for two short windows. Stop strings are looked for in
    /// the new text and the characters before it where one could start; text is handed out once it can no longer change
    /// (not inside a character, not a possible start of a stop string). <c>TextStreamTests</c> checks the pieces against
    /// one decode of the whole sequence for every tokenizer in ../shared/data.
    /// </summary>
    internal sealed class TextStream
    {
        /// <summary>Prompt tokens decoded before the first new one, so it is decoded in context (vLLM takes five).</summary>
        private const int ContextTokens = 5;

        private readonly ITokenizer _tokenizer;
        private readonly IReadOnlyList<string> _stops;
        private readonly Action<string>? _onText;
        private readonly string _promptText;
        private readonly int _holdBack;
        private readonly System.Text.StringBuilder _generated = new();
        private string _unfinished = ""; // decoded after the known text but ending inside a character
        private int _prefix, _read, _emitted;

        public TextStream(ITokenizer tokenizer, int[] prompt, IReadOnlyList<string> stops, Action<string>? onText)
        {
            _tokenizer = tokenizer;
            _stops = stops;
            _onText = onText;
            _promptText = tokenizer.Decode(prompt);
            _holdBack = stops.Count == 0 ? 0 : stops.Max(s => s.Length) - 1;
            _read = prompt.Length;
            _prefix = Math.Max(0, prompt.Length - ContextTokens);
        }

        /// <summary>The prompt's text followed by the generated text.</summary>
        public string FullText => _promptText + _generated + _unfinished;

        /// <summary>The text of the new tokens alone (<see cref="FullText"/> without the prompt's).</summary>
        public string NewText => _generated.ToString() + _unfinished;

        /// <summary>Takes the whole sequence after a new token; true when a stop string has appeared.</summary>
        public bool Add(List<int> tokens)
        {
            var all = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(tokens);
            string known = _read > _prefix ? _tokenizer.Decode(all[_prefix.._read]) : "";
            string text = _tokenizer.Decode(all[_prefix..]);
            if (text.Length <= known.Length) return false;
            string added = text[known.Length..];
            if (added[^1] == '\uFFFD') // inside a character: wait for its other bytes
            {
                _unfinished = added;
                return false;
            }
            _unfinished = "";
            int before = _generated.Length;
            _generated.Append(added);
            _prefix = _read;
            _read = all.Length;
            if (_stops.Count > 0)
            {
                // A stop string ends in the added text: it starts at most its length − 1 characters before it.
                int from = Math.Max(0, before - _holdBack);
                string tail = _generated.ToString(from, _generated.Length - from);
                int at = -1;
                foreach (var stop in _stops)
                {
                    int found = tail.IndexOf(stop, StringComparison.Ordinal);
                    if (found >= 0 && (at < 0 || found < at)) at = found;
                }
                if (at >= 0)
                {
                    _generated.Length = from + at;
                    Emit(_generated.Length);
                    return true;
                }
            }
            Emit(_generated.Length - _holdBack);
            return false;
        }

        public void Finish()
        {
            _generated.Append(_unfinished);
            _unfinished = "";
            Emit(_generated.Length);
        }

        private void Emit(int upTo)
        {
            if (_onText is null || upTo <= _emitted) return;
            _onText(_generated.ToString(_emitted, upTo - _emitted));
            _emitted = upTo;
        }
    }
}
