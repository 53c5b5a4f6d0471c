using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Spectre.Console;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale inspect MODEL</c>: tensors, shapes, dtypes, statistics and size estimates per format.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "Checkpoint: .safetensors, *.index.json, Hugging Face folder, or llama2.c .bin" };
        var json = CliRunner.JsonOption();
        var threads = CliRunner.ThreadsOption();
        var include = CliRunner.IncludeOption();
        var exclude = CliRunner.ExcludeOption();
        var noStats = new Option<bool>("--no-stats") { Description = "List tensors without reading their data" };
        var estimate = new Option<string?>("--estimate") { Description = "Formats to estimate sizes for (casts and block formats; default bf16,mxfp8,mxfp6,mxfp4,nvfp4)" };
        var command = new Command("inspect", "Show a checkpoint's tensors, statistics and estimated sizes per format")
        {
            model, json, threads, include, exclude, noStats, estimate,
        };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var options = new InspectOptions
            {
                Selection = new TensorSelection(parse.GetValue(include), parse.GetValue(exclude)),
                Parallelism = new(parse.GetValue(threads)),
                SkipStatistics = parse.GetValue(noStats),
            };
            if (parse.GetValue(estimate) is { } list) options = options with { EstimateFormats = FormatSpec.SplitList(list) };
            var report = Run(parse.GetValue(model)!, options, context);
            if (context.Json) return ToJson(report);
            Render(report);
            return null;
        }));
        return command;
    }

    internal static InspectReport Run(string path, InspectOptions options, CliContext context)
    {
        using var checkpoint = CheckpointLoader.Open(path);
        var progress = new ProgressSink();
        var report = Inspector.Inspect(checkpoint, options, progress, context.Cancellation);
        progress.Finish();
        return report;
    }

    /// <summary>The architecture as the runtime will run it (the effective head width, not only a written one).</summary>
    private static object ConfigJson(Nanoscale.IO.ModelConfig c) => new
    {
        architecture = c.Architecture,
        dim = c.Dim,
        hidden_dim = c.HiddenDim,
        layers = c.Layers,
        heads = c.Heads,
        kv_heads = c.KvHeads,
        head_dim = c.HeadDim,
        query_dim = c.QueryDim,
        kv_dim = c.KvDim,
        vocab_size = c.VocabSize,
        max_seq_len = c.MaxSeqLen,
        norm_eps = c.NormEps,
        rope_theta = c.RopeTheta,
        rope_style = c.RopeStyle.ToString(),
        rope_scaling = c.RopeScaling is { } s
            ? new { factor = s.Factor, low_freq_factor = s.LowFreqFactor, high_freq_factor = s.HighFreqFactor, original_max_positions = s.OriginalMaxPositions }
            : null,
        tied_embeddings = c.TiedEmbeddings,
        attention_bias = c.AttentionBias,
        qk_norm = c.QkNorm,
        unsupported = c.Unsupported,
    };

    internal static object ToJson(InspectReport r) => new
    {
        path = r.Path,
        kind = r.Kind,
        config = r.Config is { } c ? ConfigJson(c) : null,
        metadata = r.Metadata.ToDictionary(m => m.Key, m => m.Value),
        tensors = r.Tensors.Select(t => new
        {
            name = t.Name,
            dtype = t.DType.Name(),
            shape = t.Shape,
            bytes = t.Bytes,
            selected = t.Selected,
            codec = t.Codec,
            bits_per_weight = t.BitsPerWeight,
            absmax = t.Statistics?.AbsMax,
            mean = t.Statistics?.Mean,
            std = t.Statistics?.Std,
            kurtosis = t.Statistics?.Kurtosis,
            fraction_beyond_6_sigma = t.Statistics?.FractionBeyond6Sigma,
            exponent_entropy_bits = t.Statistics?.ExponentEntropyBits,
            non_finite = t.Statistics?.NonFinite,
        }),
        totals = new
        {
            tensors = r.Tensors.Count,
            parameters = r.Parameters,
            bytes = r.Bytes,
            selected_parameters = r.SelectedParameters,
            selected_bytes = r.SelectedBytes,
        },
        estimates = r.Estimates,
    };

    internal static void Render(InspectReport r)
    {
        var console = Terminal.Out;
        console.MarkupLine($"[bold]{Markup.Escape(r.Path)}[/]  ({r.Kind}, {r.Tensors.Count} tensors, {Units.Count(r.Parameters)} parameters, {Units.Bytes(r.Bytes)})");
        if (r.Config is { } c)
            console.MarkupLine(Markup.Escape(
                $"{c.Architecture}: dim {c.Dim}, hidden {c.HiddenDim}, layers {c.Layers}, heads {c.Heads}, kv heads {c.KvHeads}, " +
                $"vocab {c.VocabSize}, max seq {c.MaxSeqLen}, rope {c.RopeStyle} θ={c.RopeTheta}, tied embeddings {c.TiedEmbeddings}"));

        var table = new Table().Border(TableBorder.Simple)
            .AddColumns("tensor", "dtype", "shape", "size", "bpw", "absmax", "std", "kurtosis", ">6σ", "exp H", "codec");
        foreach (var i in new[] { 3, 4, 5, 6, 7, 8, 9 }) table.Columns[i].RightAligned();
        foreach (var t in r.Tensors)
        {
            var s = t.Statistics;
            table.AddRow(
                Markup.Escape(t.Name), t.DType.Name(), Markup.Escape("[" + string.Join("×", t.Shape) + "]"), Units.Bytes(t.Bytes),
                Units.G(t.BitsPerWeight, "0.###"),
                s is null ? "" : Units.G(s.AbsMax, "0.####"),
                s is null ? "" : Units.G(s.Std, "0.#####"),
                s is null ? "" : Units.G(s.Kurtosis, "0.##"),
                s is null ? "" : Units.G(100 * s.FractionBeyond6Sigma, "0.###") + "%",
                s?.ExponentEntropyBits is { } h ? Units.G(h, "0.###") : "",
                Markup.Escape(t.Codec ?? (t.Selected ? "(would apply)" : "")));
        }
        console.Write(table);

        if (r.Estimates.Count == 0) return;
        var sizes = new Table().Border(TableBorder.Simple).AddColumns("format", "bpw (codec tensors)", "checkpoint size", "ratio");
        sizes.Columns[1].RightAligned(); sizes.Columns[2].RightAligned(); sizes.Columns[3].RightAligned();
        foreach (var e in r.Estimates)
            sizes.AddRow(e.Format, Units.G(e.BitsPerWeight, "0.###"), Units.Bytes(e.Bytes), Units.G((double)r.Bytes / Math.Max(1, e.Bytes), "0.00") + "×");
        console.MarkupLine($"Estimated sizes: the codec applies to {Units.Count(r.SelectedParameters)} parameters ({Units.Bytes(r.SelectedBytes)}); other tensors keep their precision.");
        console.Write(sizes);
    }
}
