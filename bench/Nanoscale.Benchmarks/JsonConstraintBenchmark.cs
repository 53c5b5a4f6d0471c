using System.Diagnostics;
using Nanoscale.Runtime;

namespace Nanoscale.Benchmarks;

/// <summary>
/// What constrained decoding costs a step (a forced tool call's arguments): checking one sampled token against the
/// shape, and masking the whole vocabulary when that token does not fit, at a few points of a JSON object (after its
/// opening brace, inside a string, after a value), for a real tokenizer's vocabulary; then inside values a schema's rules
/// hold (a date-time's pattern, a bounded integer, a string's length, a uuid); then inside a regular expression and a
/// GBNF grammar (llama.cpp's json.gbnf).
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- json-constraint ../shared/data/tokenizers/qwen2_5</code>
/// </summary>
internal static class JsonConstraintBenchmark
{
    public static int Run(string[] args)
    {
        if (args.Length < 1)
        {
            Console.Error.WriteLine("usage: json-constraint TOKENIZER (a tokenizer.json folder or file, or a llama2c .bin)");
            return 1;
        }
        var clock = Stopwatch.StartNew();
        var tokenizer = TokenizerLoader.Open(args[0]);
        var pieces = TokenPieces.For(tokenizer);
        Console.WriteLine($"{pieces.Length} tokens; their texts made in {clock.Elapsed.TotalMilliseconds:0} ms (once per tokenizer)");
        Console.WriteLine("| where | allowed tokens | one token checked, ns | whole vocabulary masked, ms | token by token, ms |");
        Console.WriteLine("|---|---:|---:|---:|---:|");
        var rules = JsonSchema.From(System.Text.Json.JsonDocument.Parse("""
            {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}, "age": {"type": "integer", "minimum": 18, "maximum": 120},
             "name": {"type": "string", "maxLength": 8}, "id": {"type": "string", "format": "uuid"}}}
            """).RootElement);
        var free = new JsonConstraint.JsonObject();
        var held = new JsonConstraint.JsonObject(rules);
        var grammar = new JsonConstraint.Grammar(JsonGrammar);
        var regex = new JsonConstraint.Matches("[A-Z][a-z]+ (is|was) [0-9]{1,3} years old\\.");
        foreach (var (where, text, part) in new (string, string, JsonConstraint.Part)[] { ("after '{'", "{", free), ("inside a key", "{\"ci", free), ("after a key", "{\"city\"", free),
                     ("inside a value", "{\"city\": \"Par", free), ("after a value", "{\"city\": \"Paris\"", free),
                     ("a date-time's first character", "{\"when\": \"", held), ("a date-time's time", "{\"when\": \"2024-05-06T1", held),
                     ("an integer in 18–120", "{\"age\": ", held), ("an integer in 18–120 after '1'", "{\"age\": 1", held),
                     ("a string of at most 8, 6 written", "{\"name\": \"Claude", held), ("a uuid's middle", "{\"id\": \"123e4567-e8", held),
                     ("regex: after the name", "Anna ", regex), ("regex: in the number", "Anna is 4", regex),
                     ("json.gbnf: after '{'", "{", grammar), ("json.gbnf: inside a key", "{\"ci", grammar), ("json.gbnf: after a key", "{\"city\"", grammar),
                     ("json.gbnf: inside a value", "{\"city\": \"Par", grammar), ("json.gbnf: in a number, 3 deep", "{\"a\": [{\"b\": [1", grammar) })
        {
            var constraint = new JsonConstraint(pieces, part);
            constraint.AcceptText(text);
            var logits = new float[pieces.Length];
            int allowed = constraint.Mask(logits);
            const int Checks = 200_000;
            var single = Stopwatch.StartNew();
            int hits = 0;
            for (int i = 0; i < Checks; i++) hits += constraint.Allows(i % pieces.Length) ? 1 : 0;
            double perCheck = single.Elapsed.TotalNanoseconds / Checks;
            double Best(Func<float[], int> mask)
            {
                double best = double.MaxValue;
                for (int run = 0; run < 5; run++)
                {
                    var masking = Stopwatch.StartNew();
                    mask(logits);
                    best = Math.Min(best, masking.Elapsed.TotalMilliseconds);
                }
                return best;
            }
            Console.WriteLine($"| {where} | {allowed} | {perCheck:0} | {Best(l => constraint.Mask(l)):0.00} | {Best(l => constraint.MaskEach(l)):0.00} |");
            GC.KeepAlive(hits);
        }
        return 0;
    }

    /// <summary>llama.cpp's grammars/json.gbnf.</summary>
    private const string JsonGrammar = """
        root   ::= object
        value  ::= object | array | string | number | ("true" | "false" | "null") ws
        object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
        array  ::= "[" ws ( value ("," ws value)* )? "]" ws
        string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
        number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws
        ws ::= | " " | "\n" [ \t]{0,20}
        """;
}
