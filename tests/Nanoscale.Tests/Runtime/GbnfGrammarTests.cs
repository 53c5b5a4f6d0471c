using System.Text;
using CsCheck;
using Nanoscale.Runtime;

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
    [InlineData("root ::= <[1000]>", "token references")]
    [InlineData("start ::= \"a\"", "no rule named 'root'")]
    [InlineData("root ::= \"\\q\"", "unknown escape")]
    public void BadGrammarsAreRefusedWithWhereAndWhy(string grammar, string words)
    {
        var e = Assert.Throws<ArgumentException>(() => Held(grammar));
        Assert.Contains(words, e.Message);
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
