using System.Diagnostics;
using Nanoscale.Runtime;

namespace Nanoscale.Benchmarks;

/// <summary>
/// What one sampled draw costs (per running sequence and step, in the token factory), at SmolLM2's 49,152-token and
/// Qwen2.5's 151,936-token vocabularies, for greedy, a temperature alone, and each cut (top-k, top-p, min-p, and
/// llama.cpp's defaults of all three), on two kinds of logits: a trained model's (a few tokens far ahead) and a
/// random-weight model's (nearly flat, so top-p keeps most of the vocabulary: the worst case for finding its cut).
/// Mean of 50 draws after one.
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- sampler</code>
/// </summary>
internal static class SamplerBenchmark
{
    public static int Run(string[] args)
    {
        Console.WriteLine("| vocabulary | logits | sampling | ms a draw |");
        Console.WriteLine("|---:|---|---|---:|");
        foreach (int vocab in new[] { 49_152, 151_936 })
            foreach (var (kind, peaked) in new[] { ("peaked", true), ("flat", false) })
            {
                var random = new Random(3);
                var logits = new float[vocab];
                for (int i = 0; i < vocab; i++)
                    logits[i] = peaked ? (float)(random.NextDouble() * 4 + (random.NextDouble() < 0.001 ? 14 : 0)) : (float)(random.NextDouble() * 4);
                foreach (var (name, options) in new (string, SamplingOptions)[]
                         {
                             ("greedy", new SamplingOptions()),
                             ("temperature 0.8", new SamplingOptions { Temperature = 0.8 }),
                             ("top-k 40", new SamplingOptions { Temperature = 0.8, TopK = 40 }),
                             ("top-p 0.9", new SamplingOptions { Temperature = 0.8, TopP = 0.9 }),
                             ("min-p 0.05", new SamplingOptions { Temperature = 0.8, MinP = 0.05 }),
                             ("llama.cpp's defaults (0.8, 40, 0.95, 0.05)", new SamplingOptions { Temperature = 0.8, TopK = 40, TopP = 0.95, MinP = 0.05 }),
                         })
                {
                    var sampler = new Generation.Sampler(options, vocab);
                    sampler.Next(logits, [], 0);
                    const int Draws = 50;
                    var clock = Stopwatch.StartNew();
                    for (int i = 0; i < Draws; i++) sampler.Next(logits, [], 0);
                    Console.WriteLine($"| {vocab} | {kind} | {name} | {clock.Elapsed.TotalMilliseconds / Draws:0.000} |");
                }
            }
        return 0;
    }
}
