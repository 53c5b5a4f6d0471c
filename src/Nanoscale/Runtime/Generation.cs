using System.Diagnostics;
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
    internal sealed class Sampler(SamplingOptions options, int vocab)
    {
        private readonly Random _random = new(options.Seed);
        // Made at the first draw that needs them: a server holds a sampler per running sequence, and at a vocabulary of
        // 128K these are half a megabyte (the adjusted logits: penalties or a temperature), half a megabyte and a
        // megabyte (top-k / top-p) each; a greedy draw without penalties reads the logits as they are.
        private float[]? _scratch;
        private int[]? _order;
        private double[]? _kept;

        /// <param name="logits">The model's logits for the next token.</param>
        /// <param name="sequence">Prompt and generated tokens so far.</param>
        /// <param name="promptLength">How many of <paramref name="sequence"/> are the prompt.</param>
        public int Next(ReadOnlySpan<float> logits, IReadOnlyList<int> sequence, int promptLength)
        {
            bool penalties = options.RepetitionPenalty != 1 || options.FrequencyPenalty != 0 || options.PresencePenalty != 0 || options.LogitBias is { Count: > 0 };
            if (options.Temperature == 0 && !penalties) return Kernels.ArgMax(logits);
            var x = (_scratch ??= new float[vocab]).AsSpan(0, logits.Length);
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

        /// <summary>Temperature, top-k, top-p, min-p, then one draw from what is left (probabilities in double).</summary>
        private int Sample(Span<float> logits)
        {
            int n = logits.Length;
            if (options.TopK == 0 && options.TopP >= 1 && options.MinP == 0)
            {
                // Nothing cut: in id order, no sort, and nothing allocated (a vocabulary-sized array per token would be
                // a large-object allocation per stream and step): the weights are computed again for the draw, the
                // same numbers in the same order as the sum.
                double top = logits[Kernels.ArgMax(logits)], sum = 0;
                for (int i = 0; i < n; i++) sum += Math.Exp((logits[i] - top) / options.Temperature);
                double r = _random.NextDouble() * sum;
                for (int i = 0; i < n; i++)
                {
                    r -= Math.Exp((logits[i] - top) / options.Temperature);
                    if (r < 0) return i;
                }
                return n - 1;
            }
            var order = (_order ??= new int[vocab]).AsSpan(0, n);
            for (int i = 0; i < n; i++) order[i] = i;
            // Most likely first; ties by id, so the order never depends on the sort's stability. The logits are this
            // sampler's scratch (Next copied them there), so the comparison reads that array.
            var keys = _scratch!;
            order.Sort((a, b) => keys[b].CompareTo(keys[a]) is var c && c != 0 ? c : a.CompareTo(b));
            int kept = options.TopK > 0 ? Math.Min(options.TopK, n) : n;
            double max = logits[order[0]], temperature = options.Temperature, total = 0;
            var p = (_kept ??= new double[vocab]).AsSpan(0, kept);
            for (int i = 0; i < kept; i++) total += p[i] = Math.Exp((logits[order[i]] - max) / temperature);
            if (options.TopP < 1)
            {
                double cumulative = 0;
                for (int i = 0; i < kept; i++)
                {
                    cumulative += p[i] / total;
                    if (cumulative >= options.TopP)
                    {
                        kept = i + 1;
                        break;
                    }
                }
                total = 0;
                for (int i = 0; i < kept; i++) total += p[i];
            }
            if (options.MinP > 0)
            {
                // p[0] is the most likely token's weight (the order is by logit): the kept tokens are a prefix.
                double floor = options.MinP * p[0];
                int atLeast = 1;
                while (atLeast < kept && p[atLeast] >= floor) atLeast++;
                if (atLeast < kept)
                {
                    kept = atLeast;
                    total = 0;
                    for (int i = 0; i < kept; i++) total += p[i];
                }
            }
            double u = _random.NextDouble() * total;
            for (int i = 0; i < kept; i++)
            {
                u -= p[i];
                if (u < 0) return order[i];
            }
            return order[kept - 1];
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
