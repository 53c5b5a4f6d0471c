using System.Text;
using CsCheck;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// GBNF grammars (llama.cpp's format) as constrained decoding holds text to them: whole matches, the text's end where
/// the grammar is satisfied, repetitions, groups, classes and escapes, clear errors, and walks that never get stuck.
/// <c>GrammarAgreesWithLlamaCpp</c> (Interop) compares the allowed tokens with llama.cpp's own grammar sampler.
/// </summary>
public class GbnfGrammarTests
{
    private static JsonConstraint Held(string grammar) => new([], new JsonConstraint.Grammar(grammar));

    /// <summary>Whether the whole text fits and the grammar may end there.</summary>
    private static bool Matches(string grammar, string text)
    {
        var constraint = Held(grammar);
        return Support.ConstraintText.Feed(constraint, text) && constraint.MayEnd;
    }

    private const string Arithmetic = """
        # a comment
        root  ::= expr
        expr  ::= term (("+" | "-") term)*
        term  ::= factor (("*" | "/") factor)*
        factor ::= [0-9]+ | "(" ws expr ws ")"   # nested
        ws ::= [ \t]{0,2}
        """;

    [Theory]
    [InlineData("1", true)]
    [InlineData("12+3*(4-5)", true)]
    [InlineData("( 1 )", true)]
    [InlineData("(  1  )", true)]
    [InlineData("(   1)", false)]
    [InlineData("1+", false)]
    [InlineData("+1", false)]
    [InlineData("(1", false)]
    [InlineData("1)", false)]
    [InlineData("", false)]
    public void ArithmeticIsMatchedWhole(string text, bool expected) => Assert.Equal(expected, Matches(Arithmetic, text));

    [Fact]
    public void LiteralsClassesAndRepetitions()
    {
        const string Grammar = """
            root ::= greeting " " name punct{1,3} tail?
            greeting ::= "hi" | "hello" | "h\x69!"
            name ::= [A-Z] [a-z]{2,} | "\u00e9mile"
            punct ::= [.!?]
            tail ::= "\n" [^\n"]* "\""
            """;
        Assert.True(Matches(Grammar, "hi Bob."));
        Assert.True(Matches(Grammar, "hello Alice!!!"));
        Assert.True(Matches(Grammar, "hi! émile?"));
        Assert.True(Matches(Grammar, "hi Bob.\nanything 'here' é\""));
        Assert.False(Matches(Grammar, "hi Bo."));
        Assert.False(Matches(Grammar, "hi Bob!!!!"));
        Assert.False(Matches(Grammar, "hey Bob."));
        Assert.False(Matches(Grammar, "hi Bob.\nno end"));
    }

    /// <summary>The text may end wherever the grammar is satisfied and is complete where nothing can follow; a
    /// nullable repetition does not expand forever.</summary>
    [Fact]
    public void EndsWhereTheGrammarIsSatisfied()
    {
        var digits = Held("root ::= [0-9]+");
        Assert.False(digits.MayEnd);
        digits.AcceptText("42");
        Assert.True(digits.MayEnd);
        Assert.False(digits.Complete);
        var closed = Held("root ::= \"yes\" | \"no\"");
        closed.AcceptText("no");
        Assert.True(closed.Complete);
        var nullable = Held("root ::= (\"a\"? \" \"?)* \"!\""); // a repeated part that may be empty: expanded once
        nullable.AcceptText("a  a a!");
        Assert.True(nullable.Complete);
        var spaced = Held("root ::= (\"a\" \" \"?)* \"!\"");
        spaced.AcceptText("a aa a !");
        Assert.False(spaced.AllowsText("!"));
        Assert.True(spaced.Complete);
        var nested = Held("root ::= item (\",\" item)*\nitem ::= \"[\" (item (\",\" item)*)? \"]\" | [a-z]");
        nested.AcceptText("[a,[b,[]],c]");
        Assert.True(nested.MayEnd);
    }

    [Theory]
    [InlineData("root ::= foo", "undefined rule 'foo'")]
    [InlineData("root ::= \"a\"\nroot ::= \"b\"", "defined twice")]
    [InlineData("root ::= expr\nexpr ::= expr \"+\" \"1\" | \"1\"", "left-recursive")]
    [InlineData("root ::= a\na ::= b? a \"x\"\nb ::= \"y\"", "left-recursive")]
    [InlineData("root ::= (\"x\" | list \",\")\nlist ::= (root)+ \";\"", "is left-recursive")]
    [InlineData("root ::= \"abc", "unclosed string")]
    [InlineData("root ::= [a-", "unclosed character class")]
    [InlineData("root ::= (\"a\"", "expected ')'")]
    [InlineData("root = \"a\"", "expected '::='")]
    [InlineData("root ::= \"a\"{3,1}", "maximum below its minimum")]
    [InlineData("root ::= <[1000]>", "names token <[1000]>, beyond the model's 0 tokens")]
    [InlineData("root ::= \"a\" <|im_end|>", "named by its text, which needs the model's tokenizer here (use <[id]>) (line 1, column 14)")]
    [InlineData("root ::= <[x1]>", "a bad token id '<[x1]>'")]
    [InlineData("root ::= !<[1]\n", "without its closing '>'")]
    [InlineData("start ::= \"a\"", "no rule named 'root'")]
    [InlineData("root ::= \"\\q\"", "unknown escape")]
    public void BadGrammarsAreRefusedWithWhereAndWhy(string grammar, string words)
    {
        var e = Assert.Throws<ArgumentException>(() => Held(grammar));
        Assert.Contains(words, e.Message);
    }

    /// <summary>Token references (llama.cpp's <c>&lt;[id]&gt;</c>, <c>&lt;text&gt;</c>, <c>!&lt;…&gt;</c>) on Qwen2.5's real
    /// tokenizer: a named token is allowed whole where the grammar has it (a control token too, whose text is empty), no
    /// other token is, and its text written out character by character is not it; a negated one allows every token
    /// but its own; the mask equals asking each token; an unknown text is refused by name.</summary>
    [Fact]
    public void TokenReferencesMatchWholeTokensByTheirIds()
    {
        using var tokenizer = HuggingFaceTokenizer.Load(SharedData.Path("tokenizers", "qwen2_5", "tokenizer.json"));
        var pieces = TokenPieces.For(tokenizer);
        var ids = JsonConstraint.Grammar.TokenIdsOf(tokenizer);
        int start = ids("<|im_start|>")!.Value, end = ids("<|im_end|>")!.Value;
        Assert.Equal("", pieces[start]);
        JsonConstraint Held(string grammar) => new(pieces, new JsonConstraint.Grammar(grammar, TokenId: ids));
        int[] Allowed(JsonConstraint c)
        {
            var logits = new float[pieces.Length];
            var each = new float[pieces.Length];
            int count = c.Mask(logits);
            Assert.Equal(c.MaskEach(each), count);
            Assert.Equal(each, logits);
            return [.. Enumerable.Range(0, logits.Length).Where(i => !float.IsNegativeInfinity(logits[i]))];
        }

        // By text and by id: the same element.
        foreach (var grammar in new[] { "root ::= \"Hi\" <|im_start|> \"x\"", $"root ::= \"Hi\" <[{start}]> \"x\"" })
        {
            var c = Held(grammar);
            c.AcceptText("Hi");
            Assert.Equal([start], Allowed(c));
            Assert.False(c.AllowsText("<|im_start|>")); // its text, character by character, is not the token
            c.Accept(start);
            Assert.False(c.Complete);
            Assert.True(c.AllowsText("x"));
            c.AcceptText("x");
            Assert.True(c.Complete);
        }

        // Negated: anything but <|im_end|>, then <|im_end|> ends it.
        var open = Held("root ::= \"a\" (!<|im_end|>)* <|im_end|>");
        open.AcceptText("a");
        Assert.Equal(pieces.Length, Allowed(open).Length); // every token: the negation's, and im_end by its own element
        open.Accept(start);                                // a control token, by the negation
        open.Accept(tokenizer.Encode("hello", addBos: false)[0]);
        Assert.False(open.MayEnd);
        open.Accept(end);
        Assert.True(open.Complete);

        // A token whose text also fits character by character goes on both ways.
        int hi = tokenizer.Encode("Hi", addBos: false) is [int one] ? one : throw new InvalidOperationException("'Hi' is one Qwen token");
        var both = Held($"root ::= <[{hi}]> \"!\" | \"Hi?\"");
        both.Accept(hi);
        Assert.True(both.AllowsText("!") && both.AllowsText("?"));
        Assert.False(both.AllowsText("x"));

        // Where nearly every token fits (any character, or any token but one), the mask asks every id (one move serves
        // all the ids the grammar does not name).
        var any = Held("root ::= (. | !<|im_end|>)* <|im_end|>");
        for (int step = 0; step < 3; step++)
        {
            Assert.Equal(pieces.Length, Allowed(any).Length);
            any.Accept(step == 1 ? start : tokenizer.Encode("ok", addBos: false)[0]);
        }
        any.Accept(end);
        Assert.True(any.Complete);

        var e = Assert.Throws<ArgumentException>(() => Held("root ::= <|no such token|>"));
        Assert.Contains("no single token of the model's vocabulary is <|no such token|>", e.Message);
    }

    /// <summary>A generation held to a grammar of token ids gives those tokens first (stories260K: ids of ordinary
    /// tokens written as <c>&lt;[id]&gt;</c>), then text the rest of the grammar allows.</summary>
    [Fact]
    public void AGenerationFollowsTokenReferences()
    {
        var model = LlamaModel.Load(Nanoscale.IO.CheckpointLoader.Open(SharedData.Stories260K));
        var tokenizer = Llama2cTokenizer.Load(SharedData.Tok512);
        var pieces = TokenPieces.For(tokenizer);
        int[] forced = [.. tokenizer.Encode("The end", addBos: false)];
        var grammar = "root ::= " + string.Join(" ", forced.Select(id => $"<[{id}]>")) + " [a-z .]*";
        var result = Generation.Generate(model, tokenizer, tokenizer.Encode("Once upon a time", addBos: true), 12, new SamplingOptions(),
            constraint: new JsonConstraint(pieces, new JsonConstraint.Grammar(grammar)));
        var generated = result.Tokens[result.PromptTokens..];
        Assert.Equal(forced, generated[..forced.Length]);
        Assert.True(generated.Length > forced.Length);
    }

    /// <summary>A grammar or pattern is a request's to give: random texts over their syntax's characters, and deep
    /// nesting, read as a grammar (or refused with a clear error) and never fail otherwise; a walk under any grammar
    /// that reads raises nothing either.</summary>
    [Fact]
    public void AnyGrammarOrPatternIsReadOrRefusedCleanly()
    {
        Assert.Throws<ArgumentException>(() => Held("root ::= " + new string('(', 5000) + "\"a\"" + new string(')', 5000)));
        Assert.Throws<ArgumentException>(() => new JsonConstraint([], new JsonConstraint.Matches(new string('(', 5000) + "a" + new string(')', 5000))));
        var alphabet = "root::= \"ab|()[]^-*+?{}0123,.\\#\nxyz\tu".ToCharArray();
        int read = 0;
        Gen.Int.Sample(seed =>
        {
            var random = new Random(seed);
            // Half of them from the syntax's pieces (so most read), half from its characters.
            string[] pieces = ["\"a\"", "\"bc\"", "[a-c]", "[^x]", "x", "(", ")", "|", "*", "+", "?", "{1,2}", "{0,}", " ", "\"\\n\"", "."];
            var body = seed % 2 == 0
                ? string.Concat(Enumerable.Range(0, random.Next(1, 14)).Select(_ => pieces[random.Next(pieces.Length)]))
                : new string(Enumerable.Range(0, random.Next(1, 40)).Select(_ => alphabet[random.Next(alphabet.Length)]).ToArray());
            var text = "root ::= " + body + (seed % 4 == 0 ? "\nx ::= \"x\" | x? \"y\"" : "\nx ::= [xyz]+");
            foreach (var make in new Func<JsonConstraint.Part>[] { () => new JsonConstraint.Grammar(text), () => new JsonConstraint.Matches(body) })
            {
                JsonConstraint constraint;
                try
                {
                    constraint = new JsonConstraint([], make());
                }
                catch (ArgumentException)
                {
                    continue;
                }
                Interlocked.Increment(ref read);
                for (int step = 0; step < 30 && !constraint.Complete; step++)
                {
                    var allowed = alphabet.Where(c => constraint.AllowsText(c.ToString())).ToList();
                    if (allowed.Count == 0) break;
                    constraint.AcceptText(allowed[random.Next(allowed.Count)].ToString());
                }
            }
        }, iter: 3000);
        Assert.True(read > 600, $"only {read} of 6,000 grammars and patterns read"); // ~900: random pieces rarely balance
    }

    /// <summary>Random walks held to a JSON grammar (llama.cpp's json.gbnf, as shipped) never get stuck, and every walk
    /// that ends is JSON System.Text.Json reads.</summary>
    [Fact]
    public void WalksHeldToTheJsonGrammarAreJson()
    {
        var alphabet = Enumerable.Range(0x20, 95).Select(c => (char)c).Append('\n').ToArray();
        int ended = 0;
        for (int seed = 0; seed < 120; seed++)
        {
            var random = new Random(seed);
            var constraint = Held(Json);
            var text = new StringBuilder();
            while (!constraint.Complete && text.Length < 400)
            {
                if (constraint.MayEnd && random.Next(4) == 0) break;
                var allowed = alphabet.Where(c => constraint.AllowsText(c.ToString())).ToList();
                if (allowed.Count == 0)
                {
                    Assert.True(constraint.MayEnd, $"stuck after {text}");
                    break;
                }
                var closing = allowed.Where(c => c is '"' or '}' or ']').ToList();
                char next = closing.Count > 0 && random.Next(2) == 0 ? closing[random.Next(closing.Count)] : allowed[random.Next(allowed.Count)];
                constraint.AcceptText(next.ToString());
                text.Append(next);
            }
            if (!constraint.MayEnd) continue;
            ended++;
            using var _ = System.Text.Json.JsonDocument.Parse(text.ToString());
        }
        Assert.True(ended > 60, $"only {ended} of 120 walks ended");
    }

    /// <summary>llama.cpp's grammars/json.gbnf.</summary>
    internal const string Json = """
        root   ::= object
        value  ::= object | array | string | number | ("true" | "false" | "null") ws

        object ::=
          "{" ws (
                    string ":" ws value
            ("," ws string ":" ws value)*
          )? "}" ws

        array  ::=
          "[" ws (
                    value
            ("," ws value)*
          )? "]" ws

        string ::=
          "\"" (
            [^"\\\x7F\x00-\x1F] |
            "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
          )* "\"" ws

        number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

        # Optional space: by convention, applied in this grammar after literal chars when allowed
        ws ::= | " " | "\n" [ \t]{0,20}
        """;
}
