using System.Diagnostics;
using Nanoscale.Runtime;

namespace Nanoscale.Benchmarks;

/// <summary>
/// What constrained decoding costs a step (a forced tool call's arguments): checking one sampled token against the
/// shape, and masking the whole vocabulary when that token does not fit, at a few points of a JSON object (after its
/// opening brace, inside a string, after a value), for a real tokenizer's vocabulary; then inside values a schema's rules
/// hold (a date-time's pattern, a bounded integer, a string's length, a uuid).
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
        foreach (var (where, text, schema) in new[] { ("after '{'", "{", null), ("inside a key", "{\"ci", null), ("after a key", "{\"city\"", null),
                     ("inside a value", "{\"city\": \"Par", null), ("after a value", "{\"city\": \"Paris\"", null),
                     ("a date-time's first character", "{\"when\": \"", rules), ("a date-time's time", "{\"when\": \"2024-05-06T1", rules),
                     ("an integer in 18–120", "{\"age\": ", rules), ("an integer in 18–120 after '1'", "{\"age\": 1", rules),
                     ("a string of at most 8, 6 written", "{\"name\": \"Claude", rules), ("a uuid's middle", "{\"id\": \"123e4567-e8", rules) })
        {
            var constraint = new JsonConstraint(pieces, new JsonConstraint.JsonObject(schema));
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
}
