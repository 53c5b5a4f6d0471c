using System.Net;
using System.Text.Json;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tensors;
using Nanoscale.Tests.Serve;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>The tests that lower the constraint automata's memory caps (process-wide settings): run alone.</summary>
[CollectionDefinition(nameof(ConstraintCaps), DisableParallelization = true)]
public sealed class ConstraintCaps;

/// <summary>
/// A regular expression or grammar whose automaton grows with every step (an open-ended repetition before a long counted
/// one; a rule nested in itself at every character) ends the text with a clear error at its memory cap instead of growing
/// without bound, and a server answers that as the request's fault and goes on serving; ordinary expressions stay far
/// below the cap after masking a real vocabulary.
/// </summary>
[Collection(nameof(ConstraintCaps))]
public sealed class ConstraintCapTests
{
    private static readonly Lazy<string[]> QwenPieces = new(() => TokenPieces.For(TokenizerLoader.Open(SharedData.Path("tokenizers", "qwen2_5"))));

    /// <summary>Feeds random letters (and masks Qwen's vocabulary at each step, as a sampled token that does not fit
    /// would) until the constraint throws or the text is long.</summary>
    private static Exception? Walk(JsonConstraint.Part part, int characters)
    {
        var constraint = new JsonConstraint(QwenPieces.Value, part);
        var random = new Random(7);
        var logits = new float[QwenPieces.Value.Length];
        try
        {
            for (int i = 0; i < characters; i++)
            {
                if (i % 8 == 0) constraint.Mask(logits);
                constraint.AcceptText(((char)('a' + random.Next(3))).ToString());
            }
            return null;
        }
        catch (InputException e)
        {
            return e;
        }
    }

    /// <summary>Runs <paramref name="body"/> with a process-wide cap set to <paramref name="cap"/>, then puts it back.</summary>
    private static async Task Lowered(Func<long> get, Action<long> set, long cap, Func<Task> body)
    {
        long before = get();
        set(cap);
        try { await body(); }
        finally { set(before); }
    }

    private static Task PatternsCapped(long cap, Func<Task> body) => Lowered(() => JsonPattern.MaxBytes, v => JsonPattern.MaxBytes = v, cap, body);

    [Fact]
    public Task AnExponentialExpressionStopsAtItsCapWithAClearError() => PatternsCapped(1 << 20, () =>
    {
        var failure = Walk(new JsonConstraint.Matches("[a-z]*a[a-z]{24}"), 400);
        Assert.NotNull(failure);
        Assert.Contains("'[a-z]*a[a-z]{24}' needs more than 1 MiB of automaton", failure.Message);
        return Task.CompletedTask;
    });

    [Fact]
    public Task ADeepeningGrammarStopsAtItsCapWithAClearError() => Lowered(() => GbnfGrammar.MaxBytes, v => GbnfGrammar.MaxBytes = v, 1 << 20, () =>
    {
        // Every 'a' may open another "a x b" or be a letter: the stacks deepen with the text.
        var failure = Walk(new JsonConstraint.Grammar("root ::= x+\nx ::= [a-z]+ | \"a\" x \"b\" | [a-z] x"), 2000);
        Assert.NotNull(failure);
        Assert.Contains("the grammar needs more than 1 MiB of parse positions", failure.Message);
        return Task.CompletedTask;
    });

    /// <summary>The formats' expressions and an ordinary one, masked over Qwen's 151,936 pieces at every character of a
    /// value: their automata stay under a megabyte, so the 32 MiB cap is only for expressions that explode.</summary>
    [Fact]
    public void OrdinaryExpressionsStayFarBelowTheCap()
    {
        foreach (var (format, text) in new[] { ("date-time", "2024-05-06T12:34:56.789+02:00"), ("uuid", "123e4567-e89b-12d3-a456-426614174000"), ("email", "ada.lovelace@example.org") })
        {
            var pattern = JsonPattern.ForFormat(format)!;
            int state = pattern.Start;
            foreach (char c in text)
            {
                foreach (var piece in QwenPieces.Value)
                {
                    int s = state;
                    foreach (char p in piece)
                        if ((s = pattern.Next(s, p)) == JsonPattern.Dead) break;
                }
                state = pattern.Next(state, c);
            }
            Assert.True(pattern.Accepts(state), format);
            Assert.True(pattern.Bytes < 1 << 20, $"{format}: {pattern.Bytes} bytes");
        }
    }

    /// <summary>Over HTTP: the request whose expression passes the cap gets a 400 naming it (or, once its stream has
    /// begun, an error event and the stream's end), and the server serves the next request.</summary>
    [Fact]
    public Task AServerAnswersACostlyExpressionAsTheRequestsFault() => PatternsCapped(256 << 10, async () =>
    {
        using var dir = new TempDir();
        await using var served = await ServedModel.Start(new CompletionService(LoadedModel.Open(SampleModels.Qwen25(dir, 1024)), "qwen"));
        const string Body = """{"prompt": "Answer:", "max_tokens": 200, "temperature": 1, "seed": 3, "guided_regex": "[a-z]*a[a-z]{24}" """;
        var (status, text) = await served.Post("/v1/completions", Body + "}");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        var error = JsonDocument.Parse(text).RootElement.GetProperty("error");
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Contains("too costly to follow", error.GetProperty("message").GetString());

        (status, text) = await served.Post("/v1/completions", Body + ", \"stream\": true}");
        if (status == HttpStatusCode.OK)
        {
            var events = text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("data: [DONE]", events[^1]);
            Assert.Contains("too costly to follow", JsonDocument.Parse(events[^2]["data: ".Length..]).RootElement.GetProperty("error").GetProperty("message").GetString());
        }
        else
        {
            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.Contains("too costly to follow", text);
        }

        (status, text) = await served.Post("/v1/completions", """{"prompt": "Answer:", "max_tokens": 4, "guided_regex": "[A-Z]{2}"}""");
        Assert.True(status == HttpStatusCode.OK, text);
        Assert.Equal(0, served.Service.InService);
    });

    /// <summary>A constraint that takes <paramref name="milliseconds"/> to check each token (a stand-in for a pathological
    /// pattern or grammar).</summary>
    private sealed class SlowConstraint(int milliseconds) : ITokenConstraint
    {
        public bool Allows(int id)
        {
            Thread.Sleep(milliseconds);
            return true;
        }

        public int Mask(Span<float> logits) => logits.Length;

        public void Accept(int id) { }

        public bool Complete => false;
    }

    /// <summary>A constraint whose first choice waits for <paramref name="gate"/> (then free).</summary>
    private sealed class GatedConstraint(SemaphoreSlim gate) : ITokenConstraint
    {
        private bool _opened;

        public bool Allows(int id)
        {
            Open();
            return true;
        }

        public int Mask(Span<float> logits)
        {
            Open();
            return logits.Length;
        }

        private void Open()
        {
            if (_opened) return;
            gate.Wait();
            _opened = true;
        }

        public void Accept(int id) { }

        public bool Complete => false;
    }

    /// <summary>Runs <paramref name="body"/> with the constraint time caps set, then puts them back.</summary>
    private static async Task TimeCapped(TimeSpan perToken, TimeSpan total, Func<Task> body)
    {
        var before = (GenerationSequence.MaxConstraintTimePerToken, GenerationSequence.MaxConstraintTime);
        (GenerationSequence.MaxConstraintTimePerToken, GenerationSequence.MaxConstraintTime) = (perToken, total);
        try { await body(); }
        finally { (GenerationSequence.MaxConstraintTimePerToken, GenerationSequence.MaxConstraintTime) = before; }
    }

    /// <summary>A constraint too slow for one token, or too slow over a request, ends that request with a clear error
    /// naming the cap (a server answers it as the request's fault); another request in the same batch finishes as its
    /// solo generation.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public Task AConstraintTooSlowEndsItsRequestAndNotTheBatch(bool perToken) =>
        TimeCapped(perToken ? TimeSpan.FromMilliseconds(20) : TimeSpan.FromSeconds(5), perToken ? TimeSpan.FromSeconds(60) : TimeSpan.FromMilliseconds(150), async () =>
        {
            var checkpoint = Nanoscale.IO.CheckpointLoader.Open(SharedData.Stories260K);
            var model = LlamaModel.Load(checkpoint);
            var tokenizer = Llama2cTokenizer.Load(SharedData.Tok512);
            using var factory = new TokenFactory(model, tokenizer, maxBatch: 4);
            int[] prompt = tokenizer.Encode("Once upon a time", addBos: true);
            var slow = factory.SubmitAsync(prompt, 40, new SamplingOptions(), constraint: new SlowConstraint(60));
            var plain = factory.SubmitAsync(prompt, 40, new SamplingOptions());
            var failure = await Assert.ThrowsAsync<InputException>(() => slow);
            Assert.Contains(perToken ? "ms a token): too costly to follow" : "s a request): too costly to follow", failure.Message);
            Assert.Equal(Generation.Generate(model, tokenizer, prompt, 40, new SamplingOptions()).Tokens, (await plain).Tokens);
        });

    /// <summary>A constraint slow from its very first choice does not hold the batch either: a constrained sequence's choice
    /// starts beside the step and goes on there once it takes longer than <see cref="TokenFactory.SetAsideAfter"/>. Here
    /// the first choice waits until the free request in the same batch has finished all its tokens (it never would,
    /// were the batch waiting for that choice); then both have the tokens each gives alone.</summary>
    [Fact]
    public Task AConstraintSlowFromItsFirstTokenDoesNotHoldTheBatch() => TimeCapped(TimeSpan.FromSeconds(60), TimeSpan.FromSeconds(120), async () =>
    {
        var model = LlamaModel.Load(Nanoscale.IO.CheckpointLoader.Open(SharedData.Stories260K));
        var tokenizer = Llama2cTokenizer.Load(SharedData.Tok512);
        using var factory = new TokenFactory(model, tokenizer, maxBatch: 4);
        using var gate = new SemaphoreSlim(0);
        int[] prompt = tokenizer.Encode("Once upon a time", addBos: true);
        var gated = factory.SubmitAsync(prompt, 12, new SamplingOptions(), constraint: new GatedConstraint(gate));
        var plain = factory.SubmitAsync(prompt, 60, new SamplingOptions());
        try
        {
            var done = await plain.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(Generation.Generate(model, tokenizer, prompt, 60, new SamplingOptions()).Tokens, done.Tokens);
            Assert.False(gated.IsCompleted);
        }
        finally
        {
            gate.Release();
        }
        var alone = Generation.Generate(model, tokenizer, prompt, 12, new SamplingOptions(), constraint: new SlowConstraint(0));
        Assert.Equal(alone.Tokens, (await gated).Tokens);
        Assert.Equal(0, factory.Active);
    });

    /// <summary>A constraint slow at every token but below its caps does not hold the batch: after its first slow choice
    /// the sequence chooses beside the batch (<see cref="TokenFactory.SetAsideAfter"/>), so a free request in the same
    /// batch finishes long before it — which, without that, waited for every mask — both with the tokens each gives
    /// alone.</summary>
    [Fact]
    public Task ASlowConstraintChoosesBesideTheBatch() => TimeCapped(TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(60), async () =>
    {
        var model = LlamaModel.Load(Nanoscale.IO.CheckpointLoader.Open(SharedData.Stories260K));
        var tokenizer = Llama2cTokenizer.Load(SharedData.Tok512);
        using var factory = new TokenFactory(model, tokenizer, maxBatch: 4);
        int[] prompt = tokenizer.Encode("Once upon a time", addBos: true);
        var slow = factory.SubmitAsync(prompt, 12, new SamplingOptions(), constraint: new SlowConstraint(150));
        var plain = await factory.SubmitAsync(prompt, 60, new SamplingOptions());
        Assert.False(slow.IsCompleted, "the free request waited for the slow constraint's masks");
        Assert.Equal(Generation.Generate(model, tokenizer, prompt, 60, new SamplingOptions()).Tokens, plain.Tokens);
        var alone = Generation.Generate(model, tokenizer, prompt, 12, new SamplingOptions(), constraint: new SlowConstraint(0));
        Assert.Equal(alone.Tokens, (await slow).Tokens);
        Assert.Equal(0, factory.Active);
    });
}
