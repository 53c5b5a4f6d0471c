using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tests.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Interop;

/// <summary>
/// GBNF grammars against llama.cpp's own grammar sampler (libllama through LLamaSharp, the sampler llama-server holds a
/// request's <c>grammar</c> with), on Qwen2.5's real 151K-token vocabulary in a GGUF export: at every step of a walk
/// the tokens our constraint allows are the tokens llama.cpp's allows, and its end tokens are allowed exactly where our
/// text may end; token references (<c>&lt;[id]&gt;</c>) as llama.cpp's grammar reads them. (Left recursion is refused by both, but llama.cpp's refusal takes the process down, so it is not
/// asked here: <c>GbnfGrammarTests</c> checks ours.)
/// </summary>
public class GrammarInteropTests
{
    private const string Arithmetic = """
        root  ::= expr
        expr  ::= term (("+" | "-") term)*
        term  ::= factor (("*" | "/") factor)*
        factor ::= [0-9]{1,4} | "(" ws expr ws ")"
        ws ::= [ \t]{0,2}
        """;

    private const string Listing = """
        root ::= "Items:" item{1,3} "\nDone" "."?
        item ::= "\n- " [A-Za-z] [a-z ]{0,12} ([.!] | "") | "\n- #" [0-9]+
        """;

    [Theory]
    [InlineData("arithmetic", 1)]
    [InlineData("json", 2)]
    [InlineData("listing", 3)]
    [InlineData("nullable", 4)]
    [InlineData("tokens", 5)]
    public void GrammarAgreesWithLlamaCpp(string name, int seed)
    {
        using var tokenizer = HuggingFaceTokenizer.Load(SharedData.Path("tokenizers", "qwen2_5"));
        // Token references (llama.cpp's <[id]>, from its PR 17816): whole tokens by id, here ordinary ones, beside text.
        int[] hello = tokenizer.Encode("Hello world", addBos: false);
        var grammar = name switch
        {
            "arithmetic" => Arithmetic, "json" => GbnfGrammarTests.Json, "listing" => Listing,
            "tokens" => $"root ::= \"Say\" <[{hello[0]}]> (<[{hello[1]}]> | [ ] [a-z]{{1,3}}) [!.]?",
            _ => "root ::= (\"a\"? [ ]?)* \"!\" [a-z]*", // a repeated part that may be empty
        };
        using var dir = new TempDir();
        var folder = SampleModels.Qwen25(dir, 256);
        var gguf = dir.File("qwen.gguf");
        GgufExport.Export(folder, gguf, new GgufExportOptions { Type = "f16" });
        using var llama = new LlamaCppRuntime(gguf);
        var pieces = TokenPieces.For(tokenizer);
        var constraint = new JsonConstraint(pieces, new JsonConstraint.Grammar(grammar));
        var accepted = new List<int>();
        var random = new Random(seed);
        int compared = 0;
        for (int step = 0; step < 14 && !constraint.Complete; step++)
        {
            var theirs = llama.GrammarAllows(grammar, accepted);
            var logits = new float[pieces.Length];
            constraint.Mask(logits);
            var both = new List<int>();
            for (int id = 0; id < Math.Min(pieces.Length, theirs.Length); id++)
            {
                if (llama.IsEndOfGeneration(id))
                {
                    // llama.cpp's end-of-generation set (which takes in a regular "</s>" by its text): allowed exactly
                    // where the grammar may end.
                    Assert.True(theirs[id] == constraint.MayEnd, $"step {step}: end token {id} allowed {theirs[id]} by llama.cpp, our text may end {constraint.MayEnd}");
                    continue;
                }
                // Other control tokens: llama.cpp reads their text (<|im_start|>) as text, we never let them into a
                // grammar's text (they have none when decoded).
                if (pieces[id].Length == 0) continue;
                if (pieces[id].Contains('\uFFFD')) continue; // part of a UTF-8 character: llama.cpp reads its bytes, we see U+FFFD
                bool ours = float.IsFinite(logits[id]);
                Assert.True(ours == theirs[id], $"step {step} after [{string.Concat(accepted.Select(a => pieces[a]))}]: token {id} '{pieces[id]}' ours {ours}, llama.cpp {theirs[id]}");
                compared++;
                if (ours) both.Add(id);
            }
            if (both.Count == 0) break;
            // Short pieces more often, so the walk goes through the grammar's parts rather than one long string.
            var shortOnes = both.Where(id => pieces[id].Length <= 2).ToList();
            int next = shortOnes.Count > 0 && random.Next(3) > 0 ? shortOnes[random.Next(shortOnes.Count)] : both[random.Next(both.Count)];
            accepted.Add(next);
            constraint.Accept(next);
        }
        Assert.True(compared > 100_000, $"only {compared} token answers compared");
        if (name == "tokens") Assert.Contains(hello[0], accepted); // the walk went through the referenced token
    }
}
