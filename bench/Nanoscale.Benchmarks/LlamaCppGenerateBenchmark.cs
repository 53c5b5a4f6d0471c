using System.Diagnostics;
using LLama;
using LLama.Common;
using LLama.Native;

namespace Nanoscale.Benchmarks;

/// <summary>
/// llama.cpp's generation speed on a GGUF file, with the protocol of <c>nanoscale bench --generate</c>
/// (Pipeline/GenerationBench): the same synthetic prompt ids as one batch, then greedy steps of one token, best of two
/// runs after a warm-up, load not timed. llama.cpp's AVX2 CPU build from LLamaSharp.Backend.Cpu, through LLamaSharp;
/// its default KV cache (f16).
/// <code>dotnet run --project bench/Nanoscale.Benchmarks -c Release -- llamacpp-generate MODEL.gguf [--threads 2] [--prompt-tokens 64] [--tokens 32]</code>
/// </summary>
internal static class LlamaCppGenerateBenchmark
{
    public static int Run(string[] args)
    {
        if (args.Length < 1) { Console.Error.WriteLine("usage: llamacpp-generate MODEL.gguf [--threads N] [--prompt-tokens N] [--tokens N]"); return 1; }
        string path = args[0];
        int Option(string name, int fallback)
        {
            int i = Array.IndexOf(args, name);
            return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture) : fallback;
        }
        int threads = Option("--threads", 2), promptTokens = Option("--prompt-tokens", 64), newTokens = Option("--tokens", 32);

        var folder = Path.Combine(AppContext.BaseDirectory, "llamacpp");
        NativeLibraryConfig.All.WithLibrary(Path.Combine(folder, "libllama.so"), null);
        NativeLibraryConfig.All.WithLogCallback((_, _) => { });
        var parameters = new ModelParams(path)
        {
            ContextSize = (uint)(promptTokens + newTokens + 8),
            BatchSize = (uint)promptTokens,
            UBatchSize = (uint)promptTokens,
            GpuLayerCount = 0,
            Threads = threads,
            BatchThreads = threads,
        };
        using var weights = LLamaWeights.LoadFromFile(parameters);
        using var context = weights.CreateContext(parameters);
        int vocab = weights.Vocab.Count;
        int[] prompt = [.. Enumerable.Range(0, promptTokens).Select(i => (int)((i * 2654435761L + 1) % vocab))];

        double bestPrompt = 0, bestGenerated = 0;
        for (int run = 0; run < 3; run++)
        {
            context.NativeHandle.MemoryClear();
            var batch = new LLamaBatch();
            for (int i = 0; i < promptTokens; i++) batch.Add(prompt[i], i, LLamaSeqId.Zero, logits: i == promptTokens - 1);
            var clock = Stopwatch.StartNew();
            Check(context.NativeHandle.Decode(batch));
            double promptSeconds = clock.Elapsed.TotalSeconds;
            int next = ArgMax(context.NativeHandle.GetLogitsIth(promptTokens - 1));
            clock.Restart();
            for (int i = 0; i < newTokens; i++)
            {
                batch.Clear();
                batch.Add(next, promptTokens + i, LLamaSeqId.Zero, logits: true);
                Check(context.NativeHandle.Decode(batch));
                next = ArgMax(context.NativeHandle.GetLogitsIth(0));
            }
            double generateSeconds = clock.Elapsed.TotalSeconds;
            if (run == 0) continue;
            bestPrompt = Math.Max(bestPrompt, promptTokens / promptSeconds);
            bestGenerated = Math.Max(bestGenerated, newTokens / generateSeconds);
        }
        Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(new
        {
            model = path, runtime = "llama.cpp (LLamaSharp.Backend.Cpu 0.30.0, avx2)", threads, prompt_tokens = promptTokens,
            new_tokens = newTokens, prompt_tokens_per_second = Math.Round(bestPrompt, 2), generated_tokens_per_second = Math.Round(bestGenerated, 2),
        }));
        return 0;
    }

    private static void Check(DecodeResult result)
    {
        if (result != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode returned {result}");
    }

    private static int ArgMax(Span<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }
}
