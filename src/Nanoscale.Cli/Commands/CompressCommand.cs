using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;
using Spectre.Console;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale compress MODEL --format SPEC -o OUT</c>: writes a compressed model folder, or a single
/// <c>.safetensors</c> file (SPEC §8), and reports bpw and error.</summary>
internal static class CompressCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("MODEL") { Description = "Checkpoint to compress" };
        var format = new Option<string>("--format", "-f") { Description = "Format spec string, e.g. mxfp4, nvfp4, mxfp6-e2m3, lossless, vp:mant=3 (or --budget)" };
        var budget = PlanCommand.BudgetOption(required: false);
        var candidates = PlanCommand.CandidatesOption();
        var shard = new Option<string?>("--shard")
        {
            Description = "Run only unit i of N (i/N, or auto/N with i from SLURM_ARRAY_TASK_ID or JOB_COMPLETION_INDEX) into OUT/part-i-of-N; " +
                "then `nanoscale merge OUT` writes the model (docs/scale-out.md)",
        };
        var output = new Option<string>("--output", "-o")
        {
            Description = "Output model folder (shards, config.json, tokenizer), or a single file when it ends in .safetensors",
            Required = true,
        };
        var shardSize = CliRunner.MaxShardSizeOption();
        var include = CliRunner.IncludeOption();
        var exclude = CliRunner.ExcludeOption();
        var allowNonFinite = new Option<bool>("--allow-nonfinite") { Description = "Encode NaN/Inf weights as NaN instead of refusing the checkpoint" };
        var force = new Option<bool>("--force") { Description = "Allow the output inside the input's model folder (never over one of its files)" };
        var noError = new Option<bool>("--no-error") { Description = "Skip measuring the weight error (decoding the output again)" };
        var planFile = new Option<string?>("--plan")
        {
            Description = "Formats per tensor from the JSON of `plan MODEL --budget B --json` (one budget): no measuring again, and it can be split with --shard",
        };
        var calib = CliRunner.CalibrationOption();
        var calibTokens = CliRunner.CalibrationTokensOption();
        var calibCache = CliRunner.CalibrationCacheOption();
        var tokenizer = CliRunner.TokenizerOption();
        var threads = CliRunner.ThreadsOption();
        var json = CliRunner.JsonOption();
        var command = new Command("compress", "Write a compressed checkpoint")
        {
            model, format, budget, candidates, planFile, shard, output, shardSize, include, exclude, allowNonFinite, force, noError, calib, calibTokens, calibCache, tokenizer, threads, json,
        };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var progress = new ProgressSink();
            var result = CompressionRun.Run(parse.GetValue(model)!, parse.GetValue(output)!, new CompressionRequest
            {
                Format = parse.GetValue(format),
                Budget = parse.GetValue(budget) is { } b ? Budget.Parse(b) : null,
                Candidates = PlanCommand.ReadCandidates(parse, candidates),
                PlanPath = parse.GetValue(planFile),
                Shard = parse.GetValue(shard) is { } unit ? ShardUnit.Parse(unit) : null,
                Include = parse.GetValue(include),
                Exclude = parse.GetValue(exclude),
                AllowNonFinite = parse.GetValue(allowNonFinite),
                Parallelism = new(parse.GetValue(threads)),
                CalibrationPath = parse.GetValue(calib),
                CalibrationTokens = parse.GetValue(calibTokens),
                CalibrationCache = parse.GetValue(calibCache),
                TokenizerPath = parse.GetValue(tokenizer),
                MeasureError = !parse.GetValue(noError),
                Force = parse.GetValue(force),
                MaxShardBytes = ModelFolder.ParseShardSize(parse.GetValue(shardSize)!, shardSize.Name),
            }, progress, context.Cancellation);
            progress.Finish();
            if (result.CalibrationTokens is { } run && run < parse.GetValue(calibTokens))
                context.Log($"warning: --calib: {parse.GetValue(calib)} gave {run} tokens of the {parse.GetValue(calibTokens)} asked (--calib-tokens); " +
                            $"each Hessian has rank at most {run} before its 1e-2·I damping, so the rounding is fitted to little data (docs/caldera.md)");
            var byName = result.Errors.ToDictionary(e => e.Name, e => e.Error);
            if (parse.GetValue(shard) is not null)
            {
                var r = result.Report;
                string line = result.AlreadyDone
                    ? $"{r.Output}: already done by an earlier run of the same request ({r.Tensors.Count} tensors); left as it is"
                    : $"{r.Output}: {r.Tensors.Count} tensors, {Units.Bytes(r.Tensors.Sum(t => t.StoredBytes))} of parts from {Units.Bytes(r.Tensors.Sum(t => t.OriginalBytes))}, {r.Elapsed.TotalSeconds:0.00} s";
                if (context.Json) return new { unit = r.Output, already_done = result.AlreadyDone, compressed = ToJson(r, byName, result.TotalError) };
                Terminal.Out.WriteLine(line);
                context.Log($"when every unit is done: nanoscale merge {Path.GetDirectoryName(r.Output)}");
                return null;
            }
            if (context.Json) return ToJson(result.Report, byName, result.TotalError);
            Render(result.Report, byName, result.TotalError);
            return null;
        }));
        return command;
    }

    internal static object ToJson(CompressReport r, Dictionary<string, ErrorMetrics> errors, ErrorMetrics? total) => new
    {
        output = r.Output,
        files = r.Files,
        format = r.Format,
        source_bytes = r.SourceBytes,
        output_file_bytes = r.OutputFileBytes,
        encoded_bits_per_weight = r.EncodedBitsPerWeight,
        seconds = r.Elapsed.TotalSeconds,
        error = total is null ? null : ErrorJson(total),
        tensors = r.Tensors.Select(t => new
        {
            name = t.Name,
            codec = t.Codec,
            dtype = t.DType.Name(),
            shape = t.Shape,
            original_bytes = t.OriginalBytes,
            stored_bytes = t.StoredBytes,
            bits_per_weight = t.BitsPerWeight,
            error = errors.TryGetValue(t.Name, out var e) ? ErrorJson(e) : null,
            @params = t.Parameters,
            seconds = t.EncodeSeconds,
        }),
    };

    internal static object ErrorJson(ErrorMetrics e) => new { mse = e.Mse, relative_error = e.RelativeError, sqnr_db = e.SqnrDb };

    internal static void Render(CompressReport r, Dictionary<string, ErrorMetrics> errors, ErrorMetrics? total)
    {
        var table = new Table().Border(TableBorder.Simple).AddColumns("tensor", "codec", "shape", "stored", "bpw", "SQNR dB", "rel. error");
        foreach (var i in new[] { 3, 4, 5, 6 }) table.Columns[i].RightAligned();
        foreach (var t in r.Tensors)
        {
            errors.TryGetValue(t.Name, out var e);
            table.AddRow(Markup.Escape(t.Name), Markup.Escape(t.Codec), Markup.Escape("[" + string.Join("×", t.Shape) + "]"),
                Units.Bytes(t.StoredBytes), Units.G(t.BitsPerWeight, "0.###"),
                e is null ? "" : Units.G(e.SqnrDb, "0.00"), e is null ? "" : Units.G(e.RelativeError, "0.###e+0"));
        }
        var console = Terminal.Out;
        console.Write(table);
        console.MarkupLine(Markup.Escape(
            $"{r.Output}: {Units.Bytes(r.OutputFileBytes)} from {Units.Bytes(r.SourceBytes)} ({Units.G((double)r.SourceBytes / Math.Max(1, r.OutputFileBytes), "0.00")}×), " +
            $"{r.Format} at {Units.G(r.EncodedBitsPerWeight, "0.###")} bpw on encoded tensors" +
            (total is null ? "" : $", SQNR {Units.G(total.SqnrDb, "0.00")} dB") + $", {r.Elapsed.TotalSeconds:0.00} s"));
        // Codecs fitted to activations (caldera) report the activation-aware error ‖(Ŵ−W)H^{1/2}‖/‖W H^{1/2}‖ per tensor.
        var fitted = r.Tensors.Select(t => t.Parameters is { } p && p.TryGetValue("activation_error", out var v)
            && double.TryParse(v, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var x) ? x : double.NaN)
            .Where(double.IsFinite).ToList();
        if (fitted.Count > 0)
            console.MarkupLine(Markup.Escape($"activation-aware relative error: mean {Units.G(fitted.Average(), "0.0000")}, max {Units.G(fitted.Max(), "0.0000")} over {fitted.Count} tensors"));
    }
}
