using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.Runtime;

/// <summary>Sampled generation: the sampler's distribution, its cuts, determinism, stop strings and streaming.</summary>
public class SamplingTests
{
    private static LlamaModel Model => LlamaModelTests.Stories260K.Value;

    private static ITokenizer Tokenizer => LlamaModelTests.Tok512.Value;

    [Fact]
    public void TheSamplerDrawsFromTheSoftmaxOfTheLogitsOverTheTemperature()
    {
        float[] logits = [1f, 2f, 3f, 0f, -1f];
        const double temperature = 0.7;
        var sampler = new Generation.Sampler(new SamplingOptions { Temperature = temperature, Seed = 11 }, logits.Length);
        const int draws = 40_000;
        var counts = new int[logits.Length];
        for (int i = 0; i < draws; i++) counts[sampler.Next(logits, [], 0)]++;
        double z = logits.Sum(l => Math.Exp(l / temperature));
        for (int id = 0; id < logits.Length; id++)
        {
            double p = Math.Exp(logits[id] / temperature) / z, sigma = Math.Sqrt(draws * p * (1 - p));
            Assert.True(Math.Abs(counts[id] - draws * p) <= 4 * sigma + 1, $"token {id}: {counts[id]} draws, expected {draws * p:0}");
        }
    }

    /// <summary>A server holds a sampler per running sequence and draws every step: at a vocabulary of 128K a draw
    /// allocates nothing vocabulary-sized (it used to allocate a megabyte of weights per token), and the draws are the
    /// ones the softmax weights stored in an array give, token for token.</summary>
    [Fact]
    public void DrawingAtALargeVocabularyAllocatesNothingOfItsSize()
    {
        const int vocab = 128_256;
        var random = new Random(3);
        float[] logits = [.. Enumerable.Range(0, vocab).Select(_ => (float)(random.NextDouble() * 12 - 6))];
        foreach (var options in new[]
                 {
                     new SamplingOptions { Temperature = 0.9, Seed = 5 },
                     new SamplingOptions { Temperature = 1, TopP = 0.95, Seed = 5 },
                     new SamplingOptions { Temperature = 1, TopK = 40, Seed = 5 },
                 })
        {
            var sampler = new Generation.Sampler(options, vocab);
            sampler.Next(logits, [], 0); // first draw: the top-k/top-p buffers, made once
            long before = GC.GetAllocatedBytesForCurrentThread();
            var drawn = Enumerable.Range(0, 8).Select(_ => sampler.Next(logits, [], 0)).ToArray();
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.True(allocated < 64 * 1024, $"{allocated} bytes for 8 draws");

            // The same draws as the reference (a whole sort), with the same random numbers.
            var reference = new Random(options.Seed);
            reference.NextDouble();
            foreach (int token in drawn) Assert.Equal(Reference(logits, options, reference.NextDouble()), token);
        }

        // Greedy without penalties reads the logits in place: not even a scratch copy, from the first draw.
        var greedy = new Generation.Sampler(new SamplingOptions { Temperature = 0 }, vocab);
        long start = GC.GetAllocatedBytesForCurrentThread();
        int best = greedy.Next(logits, [], 0);
        Assert.Equal(0, GC.GetAllocatedBytesForCurrentThread() - start);
        Assert.Equal(Array.IndexOf(logits, logits.Max()), best);
    }

    /// <summary>The draw as <see cref="Generation.Sampler"/>'s remarks define it, by a whole sort of the vocabulary (the
    /// sampler sorts only the few tokens it must).</summary>
    private static int Reference(float[] logits, SamplingOptions options, double u)
    {
        int n = logits.Length;
        int[] order = [.. Enumerable.Range(0, n).OrderByDescending(i => logits[i]).ThenBy(i => i)];
        double max = logits[order[0]];
        // The weights are the sampler's one-token form (TheVectorWeightsAreTheScalarOnes and ExpIsCloseToTheLibrarys
        // check it); the scale is 2^min(51, 62 − the vocabulary's bit length).
        double scale = Math.Pow(2, Math.Min(51, 62 - (int)Math.Ceiling(Math.Log2(n + 1))));
        long Weight(int id) => Generation.Sampler.Weight(logits[id], max, options.Temperature, scale);
        long Share(double fraction, long total) => (long)(fraction * total);
        int kept = options.TopK > 0 ? Math.Min(options.TopK, n) : n;
        long considered = 0;
        for (int i = 0; i < kept; i++) considered += Weight(order[i]);
        if (options.TopP < 1)
        {
            long running = 0, target = Share(options.TopP, considered);
            for (int i = 0; i < kept; i++)
                if ((running += Weight(order[i])) >= target)
                {
                    kept = i + 1;
                    break;
                }
        }
        if (options.MinP > 0)
        {
            long floor = Share(options.MinP, Weight(order[0]));
            int atLeast = 1;
            while (atLeast < kept && Weight(order[atLeast]) >= floor) atLeast++;
            kept = atLeast;
        }
        int[] ids = [.. order.Take(kept).Order()];
        long total = 0, sum = 0;
        foreach (int id in ids) total += Weight(id);
        long r = Share(u, total);
        int last = ids[0];
        foreach (int id in ids)
        {
            if (Weight(id) == 0) continue;
            last = id;
            if ((sum += Weight(id)) > r) return id;
        }
        return last;
    }

    /// <summary>The sampler finds the tokens its cuts keep without sorting the vocabulary (a heap for top-k, min-p's
    /// floor, top-p's bucket): the same draws as the whole sort, for flat, peaked, tied and masked logits, small and
    /// large vocabularies, and every mix of temperature, top-k, top-p and min-p.</summary>
    [Fact]
    public void TheCutsDrawAsTheWholeSortDoes()
    {
        var random = new Random(17);
        int cases = 0;
        foreach (int vocab in new[] { 1, 2, 7, 300, 5000, 49_152 })
            for (int shape = 0; shape < 4; shape++)
            {
                float[] logits = [.. Enumerable.Range(0, vocab).Select(_ => shape switch
                {
                    0 => (float)(random.NextDouble() * 4),                                        // flat
                    1 => (float)(random.NextDouble() * 3 + (random.NextDouble() < 0.002 ? 9 : 0)), // a few far ahead
                    2 => MathF.Round((float)(random.NextDouble() * 6)),                              // ties everywhere
                    _ => random.NextDouble() < 0.9 ? float.NegativeInfinity : (float)(random.NextDouble() * 8 - 4), // masked
                })];
                if (shape == 3) logits[random.Next(vocab)] = 1; // a masked row keeps one token at least
                foreach (double temperature in new[] { 0.3, 1.0, 1.7 })
                    foreach (int topK in new[] { 0, 1, 5, 40, 1000 })
                        foreach (double topP in new[] { 1, 0.5, 0.9, 0.999 })
                            foreach (double minP in new[] { 0, 0.02, 0.3 })
                            {
                                if (vocab > 5000 && random.Next(8) != 0) continue; // the largest vocabulary: a sample of the mixes
                                var options = new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP, MinP = minP, Seed = cases };
                                var sampler = new Generation.Sampler(options, vocab);
                                var uniform = new Random(cases);
                                for (int draw = 0; draw < 6; draw++)
                                    Assert.True(Reference(logits, options, uniform.NextDouble()) == sampler.Next(logits, [], 0),
                                        $"vocabulary {vocab}, shape {shape}, {options}: draw {draw}");
                                cases++;
                            }
            }
        Assert.True(cases > 1000, $"{cases} cases");
    }

    /// <summary>The weights of a whole vocabulary, four lanes at a time, are the one-token form's bit for bit: random,
    /// tied, masked (−∞), far-below and equal-to-the-maximum logits, every temperature, every tail length.</summary>
    [Fact]
    public void TheVectorWeightsAreTheScalarOnes()
    {
        var random = new Random(9);
        foreach (int n in new[] { 1, 7, 8, 9, 31, 1000, 49_157 })
            foreach (double temperature in new[] { 0.05, 0.7, 1, 2.5 })
            {
                float[] logits = [.. Enumerable.Range(0, n).Select(_ => random.Next(10) switch
                {
                    0 => float.NegativeInfinity,
                    1 => -1e4f,
                    2 => MathF.Round((float)(random.NextDouble() * 4)),
                    _ => (float)((random.NextDouble() * 2 - 1) * 12),
                })];
                logits[random.Next(n)] = 30;
                double max = logits.Max(), scale = Generation.Sampler.Scale(n);
                var weights = new long[n];
                long sum = Generation.Sampler.Weights(logits, max, temperature, scale, weights);
                for (int i = 0; i < n; i++) Assert.Equal(Generation.Sampler.Weight(logits[i], max, temperature, scale), weights[i]);
                Assert.Equal(weights.Sum(), sum);
                Assert.Equal((long)scale, weights.Max()); // the most likely token weighs the scale exactly
            }
    }

    /// <summary>The sampler's own exponential (the same on every machine) is within 3e-13 of the C library's, relatively,
    /// over the range a weight can need (a weight's integer resolves 2^-44 ≈ 6e-14 of the first's at 152K tokens).</summary>
    [Fact]
    public void ExpIsCloseToTheLibrarys()
    {
        var random = new Random(4);
        double worst = 0;
        for (int i = 0; i < 200_000; i++)
        {
            double x = i < 1000 ? -i * 0.1 : -random.NextDouble() * (i % 2 == 0 ? 1 : 100);
            double expected = Math.Exp(x), got = Generation.Sampler.Exp(x);
            worst = Math.Max(worst, Math.Abs(got - expected) / expected);
        }
        Assert.True(worst <= 3e-13, $"relative error {worst}");
        Assert.Equal(1.0, Generation.Sampler.Exp(0));
        Assert.Equal(1.0, Generation.Sampler.Exp(-0.0));
    }

    /// <summary>Top-p's bucket is gathered by its range of weights: each weight lies in its bucket's range, and the
    /// weights just outside it are in other buckets (every binade, the smallest weights, 0).</summary>
    [Fact]
    public void ABucketsRangeHoldsExactlyItsWeights()
    {
        var random = new Random(5);
        var weights = new List<long> { 0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, (1L << 61) - 1, 1L << 61, (1L << 62) - 1, 1L << 62 };
        for (int shift = 0; shift < 62; shift++) weights.AddRange([(1L << shift) + random.NextInt64(1L << shift), (1L << shift) * 2 - 1]);
        foreach (long weight in weights)
        {
            int bucket = Generation.Sampler.Bucket(weight);
            var (low, high) = Generation.Sampler.BucketBounds(bucket);
            Assert.True(low <= weight && weight < high, $"{weight} in bucket {bucket}: [{low}, {high})");
            if (low > 0) Assert.NotEqual(bucket, Generation.Sampler.Bucket(low - 1));
            Assert.NotEqual(bucket, Generation.Sampler.Bucket(high));
        }
    }

    [Fact]
    public void TopKAndTopPKeepOnlyTheMostLikelyTokens()
    {
        float[] logits = [1f, 2f, 3f, 0f, 2.5f];
        var topK = new Generation.Sampler(new SamplingOptions { Temperature = 1, TopK = 2, Seed = 1 }, logits.Length);
        var seen = Enumerable.Range(0, 5000).Select(_ => topK.Next(logits, [], 0)).ToHashSet();
        Assert.Equal([2, 4], seen.Order());

        // Probabilities ∝ e^3, e^2.5, e^2, e^1, e^0: the top two hold 0.46 + 0.28 = 0.74 < 0.8 ≤ the top three's 0.91.
        var topP = new Generation.Sampler(new SamplingOptions { Temperature = 1, TopP = 0.8, Seed = 1 }, logits.Length);
        seen = Enumerable.Range(0, 5000).Select(_ => topP.Next(logits, [], 0)).ToHashSet();
        Assert.Equal([1, 2, 4], seen.Order());
    }

    /// <summary>min-p keeps the tokens at least that fraction as likely as the most likely one, on the probabilities
    /// after the temperature (transformers' MinPLogitsWarper), and composes with top-k.</summary>
    [Fact]
    public void MinPKeepsTokensNearTheMostLikely()
    {
        float[] logits = [1f, 2f, 3f, 0f, 2.5f];
        // Relative to e^3: e^2.5 is 0.61, e^2 0.37, e^1 0.14, e^0 0.05.
        HashSet<int> Seen(SamplingOptions options)
        {
            var sampler = new Generation.Sampler(options with { Seed = 2 }, logits.Length);
            return Enumerable.Range(0, 5000).Select(_ => sampler.Next(logits, [], 0)).ToHashSet();
        }
        Assert.Equal([2, 4], Seen(new SamplingOptions { Temperature = 1, MinP = 0.5 }).Order());
        Assert.Equal([1, 2, 4], Seen(new SamplingOptions { Temperature = 1, MinP = 0.3 }).Order());
        Assert.Equal([0, 1, 2, 4], Seen(new SamplingOptions { Temperature = 2, MinP = 0.3 }).Order()); // e^-1 = 0.37 at T = 2
        Assert.Equal([2], Seen(new SamplingOptions { Temperature = 1, MinP = 1 }).Order());
        Assert.Equal([2, 4], Seen(new SamplingOptions { Temperature = 1, MinP = 0.01, TopK = 2 }).Order());
        Assert.Throws<InvalidOptionException>(() => new SamplingOptions { MinP = 1.5 }.Validate());
    }

    [Fact]
    public void TheRepetitionPenaltyLowersTokensAlreadyInTheText()
    {
        float[] logits = [2f, 1.9f, -1f, -1.05f];
        var sampler = new Generation.Sampler(new SamplingOptions { RepetitionPenalty = 1.2 }, logits.Length);
        Assert.Equal(0, sampler.Next(logits, [], 0));
        Assert.Equal(1, sampler.Next(logits, [0], 0));     // 2 / 1.2 < 1.9
        Assert.Equal(1, sampler.Next([-1f, -1.05f], [0], 0)); // negative logits are multiplied: -1.2 < -1.05
    }

    /// <summary>OpenAI's penalties, over the generated tokens only (the prompt's tokens are not penalised): frequency
    /// by count, presence once.</summary>
    [Fact]
    public void FrequencyAndPresencePenaltiesCountTheGeneratedTokens()
    {
        float[] logits = [2f, 1.5f, 1.4f];
        var frequency = new Generation.Sampler(new SamplingOptions { FrequencyPenalty = 0.3 }, logits.Length);
        Assert.Equal(0, frequency.Next(logits, [0, 0, 0], 3));    // all prompt: no penalty
        Assert.Equal(0, frequency.Next(logits, [9, 0], 1));       // 2 − 0.3 = 1.7 > 1.5
        Assert.Equal(1, frequency.Next(logits, [9, 0, 0], 1));    // 2 − 0.6 = 1.4 < 1.5
        var presence = new Generation.Sampler(new SamplingOptions { PresencePenalty = 0.65 }, logits.Length);
        Assert.Equal(1, presence.Next(logits, [9, 0], 1));        // 2 − 0.65 = 1.35 < 1.5
        Assert.Equal(2, presence.Next(logits, [9, 0, 0, 1], 1));  // once per token: 1.35, 0.85, 1.4
        Assert.Throws<InvalidOptionException>(() => new SamplingOptions { PresencePenalty = 2.5 }.Validate());
        Assert.Throws<InvalidOptionException>(() => new SamplingOptions { LogProbs = 21 }.Validate());
    }

    [Fact]
    public void TheSameSeedGivesTheSameTextAndTopKOfOneIsGreedy()
    {
        var options = new SamplingOptions { Temperature = 1.0, TopP = 0.95, Seed = 42 };
        var a = Generation.Generate(Model, Tokenizer, "Once upon a time", 40, options);
        var b = Generation.Generate(Model, Tokenizer, "Once upon a time", 40, options);
        Assert.Equal(a.Tokens, b.Tokens);
        var others = Enumerable.Range(1, 4).Select(s => Generation.Generate(Model, Tokenizer, "Once upon a time", 40, options with { Seed = s }).Text);
        Assert.Contains(others, t => t != a.Text);

        var greedy = Generation.Greedy(Model, Tokenizer, "Once upon a time", 30);
        var topOne = Generation.Generate(Model, Tokenizer, "Once upon a time", 30, new SamplingOptions { Temperature = 5, TopK = 1, Seed = 9 });
        Assert.Equal(greedy.Tokens, topOne.Tokens);
    }

    [Fact]
    public void AStopStringEndsTheTextBeforeItAndStreamingHandsOutExactlyTheGeneratedText()
    {
        var pieces = new List<string>();
        var result = Generation.Generate(Model, Tokenizer, "Once upon a time", 60, new SamplingOptions { StopStrings = ["Lily"] }, pieces.Add);
        Assert.Equal(StopReason.StopString, result.Stop);
        Assert.Equal("Once upon a time, there was a little girl named ", result.Text);
        Assert.Equal(", there was a little girl named ", string.Concat(pieces));
        Assert.True(result.GeneratedTokensPerSecond > 0 && result.PromptTokensPerSecond > 0);

        pieces.Clear();
        var plain = Generation.Generate(Model, Tokenizer, "Once upon a time", 25, new SamplingOptions(), pieces.Add);
        Assert.Equal(plain.Text, "Once upon a time" + string.Concat(pieces));
        Assert.True(pieces.Count > 5, "the text came in pieces, as it was produced");
    }

    [Theory]
    [InlineData(-1, 0, 1, 1, "temperature")]
    [InlineData(0, -2, 1, 1, "top-k")]
    [InlineData(0, 0, 0, 1, "top-p")]
    [InlineData(0, 0, 1.5, 1, "top-p")]
    [InlineData(0, 0, 1, 0, "repetition-penalty")]
    public void OptionsOutOfRangeAreRefusedByName(double temperature, int topK, double topP, double penalty, string option)
    {
        var e = Assert.Throws<InvalidOptionException>(() =>
            new SamplingOptions { Temperature = temperature, TopK = topK, TopP = topP, RepetitionPenalty = penalty }.Validate());
        Assert.Equal(option, e.Option);
    }
}
