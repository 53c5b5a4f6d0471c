using System.Diagnostics;
using Nanoscale.Runtime;

namespace Nanoscale.Benchmarks;

/// <summary>
/// What constrained decoding costs a step (a forced tool call's arguments): checking one sampled token against the
/// shape, and masking the whole vocabulary when that token does not fit, at a few points of a JSON object (after its
/// opening brace, inside a string, after a value), for a real tokenizer's vocabulary.
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
        foreach (var (where, text) in new[] { ("after '{'", "{"), ("inside a key", "{\"ci"), ("after a key", "{\"city\""), ("inside a value", "{\"city\": \"Par"), ("after a value", "{\"city\": \"Paris\"") })
        {
            var constraint = new JsonConstraint(pieces, new JsonConstraint.JsonObject());
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
