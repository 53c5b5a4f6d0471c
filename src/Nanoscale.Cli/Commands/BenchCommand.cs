using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Spectre.Console;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale bench [MODEL] [--formats …]</c>: encode and decode throughput of each codec, one core and all cores.</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var model = new Argument<string?>("MODEL") { Description = "Checkpoint with real weights (default: a generated Llama-shaped sample)", Arity = ArgumentArity.ZeroOrOne };
        var formats = new Option<string>("--formats") { Description = "Spec strings separated by commas or semicolons (a key=value token continues the previous spec)", DefaultValueFactory = _ => "bf16,mxfp8,mxfp6,mxfp4,nvfp4,mxint8,nxfp4" };
        var threads = new Option<string>("--threads") { Description = "Comma-separated thread counts (default: 1 and all cores)" };
        var repeats = new Option<int>("--repeats") { Description = "Runs per measurement; the best is kept", DefaultValueFactory = _ => 3 };
        repeats.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() < 1) result.AddError("--repeats must be at least 1");
        });
        var generate = new Option<bool>("--generate")
        {
            Description = "Measure generation instead: prompt and generated tokens/s per format (default formats: original,bf16,mxfp8,mxfp4,nvfp4,nxfp4), effective weight GB/s and the machine's memcpy GB/s",
        };
        var tokens = new Option<int>("--tokens") { Description = "With --generate: new tokens per run", DefaultValueFactory = _ => 32 };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "With --generate: prompt length in tokens", DefaultValueFactory = _ => 64 };
        var decodeRows = new Option<bool>("--decode-rows")
        {
            Description = "With --generate: decode weight rows to floats in every product (the reference path) instead of multiplying on the stored codes, to compare",
        };
        var include = new Option<string>("--include")
        {
            Description = "With --generate: regex of extra tensor names to compress (e.g. 'embed|lm_head'; by default embeddings, the head and norms keep their precision)",
        };
        var streams = new Option<int>("--streams")
        {
            Description = "With --generate: also time this many sequences generating together (one pass over the weights per step for all of them, as serve batches requests): aggregate tokens/s and the gain over one",
            DefaultValueFactory = _ => 1,
        };
        streams.Validators.Add(result =>
        {
            int n = result.GetValueOrDefault<int>();
            if (n < 1 || n > GenerationBench.MaxStreams) result.AddError($"--streams must be from 1 to {GenerationBench.MaxStreams}");
        });
        var kvCache = CliRunner.KvCacheOption();
        kvCache.Description = "With --generate: " + kvCache.Description;
        var json = CliRunner.JsonOption();
        var command = new Command("bench", "Encode and decode throughput of each codec, or generation speed per format (--generate)")
        {
            model, formats, threads, repeats, generate, tokens, promptTokens, decodeRows, include, kvCache, streams, json,
        };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var threadCounts = (parse.GetValue(threads) ?? $"1,{Environment.ProcessorCount}")
                .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(t => int.TryParse(t, out var n) && n > 0 ? n : throw new InvalidOptionException("--threads", $"'{t}' is not a positive integer"))
                .Distinct().ToList();
            bool generating = parse.GetValue(generate);
            var formatText = generating && parse.GetResult(formats) is null or { Implicit: true } ? "original,bf16,mxfp8,mxfp4,nvfp4,nxfp4" : parse.GetValue(formats)!;
            var list = FormatSpec.SplitList(formatText);
            foreach (var f in list.Where(f => f != "original")) Nanoscale.Codecs.CodecRegistry.Create(f); // fail early on a bad spec

            using var sample = parse.GetValue(model) is null ? TemporaryFolder.Create("nanoscale-bench-sample") : null;
            if (sample is not null)
            {
                context.Log("bench: no MODEL given; generating a Llama-shaped BF16 sample (dim 1024, 4 layers)");
                SampleCheckpoint.Write(sample.Path, new SampleOptions { Dim = 1024, HiddenDim = 2816, Layers = 4, Heads = 16, KvHeads = 4, VocabSize = 4096 });
            }
            var path = parse.GetValue(model) ?? sample!.Path;
            if (generating)
                return Generate(context, path, sample is not null, list, threadCounts, parse.GetValue(promptTokens), parse.GetValue(tokens), parse.GetValue(decodeRows),
                    parse.GetValue(include), parse.GetValue(kvCache), parse.GetValue(streams));
            if (parse.GetResult(kvCache) is { Implicit: false }) throw new InvalidOptionException("--kv-cache", "applies to --generate only");
            if (parse.GetResult(streams) is { Implicit: false }) throw new InvalidOptionException("--streams", "applies to --generate only");
            using var source = CheckpointLoader.Open(path);
            var results = new List<BenchResult>();
            foreach (var f in list)
                foreach (var t in threadCounts)
                {
                    context.Cancellation.ThrowIfCancellationRequested();
                    var r = CodecBench.Run(source, f, t, parse.GetValue(repeats), cancellationToken: context.Cancellation);
                    context.Log($"bench: {r.Format} × {t} thread(s): encode {r.EncodeGBps:0.00} GB/s, decode {r.DecodeGBps:0.00} GB/s");
                    results.Add(r);
                }
            if (context.Json) return new { model = path, generated = sample is not null, results };
            var table = new Table().Border(TableBorder.Simple).AddColumns("format", "threads", "bpw", "encode GB/s", "decode GB/s");
            for (int i = 1; i < 5; i++) table.Columns[i].RightAligned();
            foreach (var r in results)
                table.AddRow(Markup.Escape(r.Format), r.Threads.ToString(), Units.G(r.BitsPerWeight, "0.###"), Units.G(r.EncodeGBps, "0.00"), Units.G(r.DecodeGBps, "0.00"));
            var console = Terminal.Out;
            console.Write(table);
            console.MarkupLine(Markup.Escape($"GB/s of source bytes ({Units.Bytes(results[0].SourceBytes)} in {source.Tensors.Count(TensorSelection.Default.Selects)} tensors), " +
                                             "encode through ITensorCodec.Encode, decode by row tiles as the runtime does; best of the runs."));
            return null;
        }));
        return command;
    }

    private static object? Generate(CliContext context, string path, bool generated, IReadOnlyList<string> formats, IReadOnlyList<int> threads,
        int promptTokens, int newTokens, bool decodeRows, string? include, KvCacheType kvCache, int streams)
    {
        if (promptTokens < 1) throw new InvalidOptionException("--prompt-tokens", "must be at least 1");
        if (newTokens < 1) throw new InvalidOptionException("--tokens", "must be at least 1");
        var result = GenerationBench.Run(path, formats, threads, promptTokens, newTokens, log: new Progress<string>(context.Log),
            cancellationToken: context.Cancellation, decodeRows: decodeRows, include: include, kvCache: kvCache, streams: streams);
        if (context.Json)
            return new
            {
                model = path,
                generated,
                prompt_tokens = promptTokens,
                new_tokens = newTokens,
                kv_cache = kvCache.Name(),
                streams,
                memcpy_gbps = result.MemcpyGBps.ToDictionary(kv => kv.Key.ToString(System.Globalization.CultureInfo.InvariantCulture), kv => kv.Value),
                results = result.Rows.Select(r => new
                {
                    format = r.Format,
                    threads = r.Threads,
                    bits_per_weight = r.BitsPerWeight,
                    bytes_per_token = r.BytesPerToken,
                    prompt_tokens_per_second = r.PromptTokensPerSecond,
                    generated_tokens_per_second = r.GeneratedTokensPerSecond,
                    effective_gbps = r.EffectiveGBps,
                    streams_tokens_per_second = streams > 1 ? r.StreamsTokensPerSecond : (double?)null,
                }),
            };
        var table = new Table().Border(TableBorder.Simple).AddColumns("format", "threads", "bpw", "weights/token", "prompt tok/s", "gen tok/s", "weights GB/s", "memcpy GB/s");
        if (streams > 1) table.AddColumns($"{streams} streams tok/s", "× one");
        for (int i = 1; i < table.Columns.Count; i++) table.Columns[i].RightAligned();
        foreach (var r in result.Rows)
        {
            var cells = new List<string>
            {
                Markup.Escape(r.Format), r.Threads.ToString(System.Globalization.CultureInfo.InvariantCulture), Units.G(r.BitsPerWeight, "0.###"),
                Units.Bytes(r.BytesPerToken), Units.G(r.PromptTokensPerSecond, "0.0"), Units.G(r.GeneratedTokensPerSecond, "0.00"),
                Units.G(r.EffectiveGBps, "0.00"), Units.G(result.MemcpyGBps[r.Threads], "0.0"),
            };
            if (streams > 1) cells.AddRange([Units.G(r.StreamsTokensPerSecond, "0.0"), Units.G(r.StreamsGain, "0.0")]);
            table.AddRow([.. cells]);
        }
        Terminal.Out.Write(table);
        Terminal.Out.MarkupLine(Markup.Escape($"{path}: prompt of {promptTokens} fixed token ids as one window (logits of its last position), then {newTokens} greedy steps ({kvCache.Name()} KV cache); best of 2 runs after a warm-up, " +
                                              "load and compression not timed. weights GB/s = stored bytes the step reads × tokens/s; memcpy GB/s = bytes copied per second." +
                                              (streams > 1 ? $" {streams} streams: that many sequences' prompts in one untimed pass, then {newTokens} steps of all of them (one pass over the weights each), aggregate tokens/s." : "")));
        return null;
    }
}
