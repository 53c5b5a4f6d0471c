using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Pipeline;
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
        var json = CliRunner.JsonOption();
        var command = new Command("bench", "Encode and decode throughput of each codec") { model, formats, threads, repeats, json };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var threadCounts = (parse.GetValue(threads) ?? $"1,{Environment.ProcessorCount}")
                .Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(t => int.TryParse(t, out var n) && n > 0 ? n : throw new InvalidOptionException("--threads", $"'{t}' is not a positive integer"))
                .Distinct().ToList();
            var list = FormatSpec.SplitList(parse.GetValue(formats)!);
            foreach (var f in list) Nanoscale.Codecs.CodecRegistry.Create(f); // fail early on a bad spec

            using var sample = parse.GetValue(model) is null ? TemporaryFolder.Create("nanoscale-bench-sample") : null;
            if (sample is not null)
            {
                context.Log("bench: no MODEL given; generating a Llama-shaped BF16 sample (dim 1024, 4 layers)");
                SampleCheckpoint.Write(sample.Path, new SampleOptions { Dim = 1024, HiddenDim = 2816, Layers = 4, Heads = 16, KvHeads = 4, VocabSize = 4096 });
            }
            var path = parse.GetValue(model) ?? sample!.Path;
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
}
