using Nanoscale.Runtime;
using System.CommandLine;
using System.Runtime.InteropServices;
using System.Text.Json;
using Nanoscale.Codecs;
using Nanoscale.Tensors;
using Nanoscale.Pipeline;
using Nanoscale.IO;

namespace Nanoscale.Cli.Rendering;

/// <summary>
/// Runs a verb's body with the conventions every verb shares (SPEC §14): with <c>--json</c> exactly one JSON object
/// on standard output; progress and logs on standard error; exit code 0 on success, otherwise 1 with a one-line
/// reason (and, with <c>--json</c>, an <c>{"error": …}</c> object so standard output stays parseable).
/// </summary>
internal static class CliRunner
{
    /// <summary><c>--include REGEX</c>: extra tensors a codec applies to (<see cref="Nanoscale.Pipeline.TensorSelection"/>).</summary>
    public static Option<string?> IncludeOption() => new("--include") { Description = "Regex of extra tensor names a codec applies to" };

    /// <summary><c>--exclude REGEX</c>: tensors a codec must leave unchanged (wins over everything else).</summary>
    public static Option<string?> ExcludeOption() => new("--exclude") { Description = "Regex of tensor names a codec leaves unchanged" };

    /// <summary><c>--tokenizer FILE</c>, for verbs that run the model.</summary>
    public static Option<string?> TokenizerOption() => new("--tokenizer")
    {
        Description = "Tokenizer: tokenizer.json (or its folder), SentencePiece .model or llama2.c tokenizer.bin (default: tokenizer.json, tokenizer.model, tokenizer.bin or one tok*.bin beside the model)",
    };

    /// <summary><c>--max-shard-size SIZE</c>: where a folder output starts a new shard.</summary>
    public static Option<string> MaxShardSizeOption() => new("--max-shard-size")
    {
        Description = "A folder output starts a new model-0000i-of-0000n.safetensors shard above this size (5GB, 500MB, 2GiB or bytes)",
        DefaultValueFactory = _ => "5GB",
    };

    public static Option<bool> JsonOption() => new("--json") { Description = "Print exactly one JSON object on standard output" };

    /// <summary><c>--calib FILE</c>: calibration text for codecs fitted to activations (caldera, SPEC §11).</summary>
    public static Option<string?> CalibrationOption() => new("--calib")
    {
        Description = "Calibration text for caldera's Hessians (H = XᵀX/tokens per linear input); without it caldera uses H = I",
    };

    /// <summary><c>--calib-cache DIR</c>: where the calibration's Hessians are kept and found again.</summary>
    public static Option<string?> CalibrationCacheOption() => new("--calib-cache")
    {
        Description = "Folder for the calibration's Hessians: read when it holds this calibration (same model, text, tokens), else measured and written there; units of a sharded run can share one",
    };

    /// <summary><c>--calib-tokens N</c>.</summary>
    public static Option<int> CalibrationTokensOption() => new("--calib-tokens")
    {
        Description = "Tokens of the calibration text to run",
        DefaultValueFactory = _ => 4096,
    };

    public static Option<int> ThreadsOption()
    {
        var option = new Option<int>("--threads")
        {
            Description = "Worker threads (0 = all cores)",
            DefaultValueFactory = _ => 0,
        };
        option.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<int>() < 0) result.AddError("--threads must be 0 (all cores) or a positive count");
        });
        return option;
    }

    /// <summary><c>--kv-cache f32|f16|bf16|q8</c>: how sessions store their key/value cache (generate, serve).</summary>
    public static Option<KvCacheType> KvCacheOption() => new("--kv-cache")
    {
        Description = "Key/value cache numbers: f32 (default, exact), f16 or bf16 (half the memory per position), q8 (int8 per 32 with a scale: 0.28×), q4 (4 bits per number and a scale per 32: 0.16×)",
        HelpName = "f32|f16|bf16|q8|q4", // absent: F32, the enum's default (no factory, so help does not print "F32")
        CustomParser = result =>
        {
            string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
            if (!int.TryParse(text, out _) && Enum.TryParse<KvCacheType>(text, ignoreCase: true, out var type) && Enum.IsDefined(type)) return type;
            result.AddError($"--kv-cache must be f32, f16, bf16, q8 or q4, not '{text}'");
            return KvCacheType.F32;
        },
    };

    public static int Run(ParseResult parse, Option<bool> json, Func<CliContext, object?> body)
    {
        bool asJson = parse.GetValue(json);
        var context = new CliContext(asJson);
        using var cancel = new CancellationTokenSource();
        // Ctrl-C and SIGTERM (what timeout, docker stop and Slurm send) both cancel the work: the library stops at the
        // next tensor or chunk, writers remove their temporaries, and the exit code says which signal it was.
        int signalExit = 0;
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; signalExit = 130; cancel.Cancel(); };
        Console.CancelKeyPress += onCancel;
        using var onTerm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, signal =>
        {
            signal.Cancel = true;
            signalExit = 143;
            cancel.Cancel();
        });
        try
        {
            context.Cancellation = cancel.Token;
            var result = body(context);
            if (asJson && result is not null) Console.Out.WriteLine(JsonSerializer.Serialize(result, Json.Options));
            return 0;
        }
        catch (Exception e)
        {
            var failure = Failure.Of(e);
            foreach (var line in failure.StandardError) Console.Error.WriteLine(line);
            if (asJson)
                Console.Out.WriteLine(failure.IsBug
                    ? JsonSerializer.Serialize(new { error = failure.Reason, bug = true }, Json.Options)
                    : JsonSerializer.Serialize(new { error = failure.Reason }, Json.Options));
            return e is OperationCanceledException && signalExit != 0 ? signalExit : failure.ExitCode;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>
    /// What the user sees when a verb fails. Errors about the input (the library's documented set, SPEC §15) and about
    /// the machine (files, permissions, cancellation): one line, exit code 1. Anything else is a bug: the line, the whole
    /// trace and a request to report it, exit code 2.
    /// </summary>
    internal sealed record Failure(int ExitCode, string Reason, IReadOnlyList<string> StandardError, bool IsBug)
    {
        public static Failure Of(Exception e)
        {
            if (IsUserFacing(e))
            {
                var reason = e is OperationCanceledException ? "cancelled" : OneLine(WithFlags(e));
                return new Failure(1, reason, [$"error: {reason}"], false);
            }
            var bug = $"internal error ({e.GetType().Name}): {OneLine(e.Message)}";
            return new Failure(2, bug, [$"error: {bug}", e.ToString(),
                "This is a bug in Nanoscale, not a problem with your input. Please report it with the command line and the lines above."], true);
        }
    }

    private static bool IsUserFacing(Exception e) =>
        e is NanoscaleException or IOException or UnauthorizedAccessException or OperationCanceledException;

    /// <summary>The library names its options (<c>EncodeOptions.AllowNonFinite</c>); the user knows them as flags.</summary>
    internal static readonly IReadOnlyDictionary<string, string> Flags = new Dictionary<string, string>(StringComparer.Ordinal)
    {
        [EncodeOptions.AllowNonFiniteName] = "--allow-nonfinite",
        ["TensorSelection.Include"] = "--include",
        ["TensorSelection.Exclude"] = "--exclude",
        [ModelLoadOptions.TokenizerPathName] = "--tokenizer",
        [ModelLoadOptions.KvCacheName] = "--kv-cache",
        ["DecompressOptions.DType"] = "--dtype",
        ["InspectOptions.EstimateFormats"] = "--estimate",
        ["CalibrationOptions.Tokens"] = "--calib-tokens",
        ["caldera rank"] = "--format caldera:rank",
        ["prompt"] = "--prompt",
        ["output"] = "--output",
        ["EvalOptions.TextPath"] = "--text",
        ["TokenizeOptions.TextPath"] = "--text",
        ["CalibrationPath"] = "--calib",
        ["PlanOptions.Budget"] = "--budget",
        ["PlanOptions.Candidates"] = "--candidates",
        ["PlanOptions.Include"] = "--include",
        ["PlanRequest.TextPath"] = "--text",
        ["CompressionRequest.Format"] = "--format",
        ["CompressionRequest.Shard"] = "--shard",
        ["CompressionRequest.PlanPath"] = "--plan",
        ["CalibrationCache"] = "--calib-cache",
        [OutputGuard.ForceName] = "--force",
        [GgufExportOptions.TypeName] = "--type",
    };

    /// <summary>The message with the library's option names put as the flags that set them.</summary>
    private static string WithFlags(Exception e)
    {
        string message = e.Message;
        if (e is InvalidOptionException invalid && Flags.TryGetValue(invalid.Option!, out var flag))
            message = $"{flag}: {invalid.Problem}";
        else if (e is NanoscaleException { Option: { } option } && Flags.TryGetValue(option, out flag))
            message = message.Replace(option, flag, StringComparison.Ordinal);
        // Other options the message mentions by their qualified library names (Type.Property) become flags too.
        foreach (var (name, other) in Flags)
            if (name.Contains('.', StringComparison.Ordinal)) message = message.Replace(name, other, StringComparison.Ordinal);
        return message;
    }

    private static string OneLine(string message) => message.ReplaceLineEndings(" ").Trim();
}

/// <summary>What a verb's body gets: output mode, cancellation, and a progress sink on standard error.</summary>
internal sealed class CliContext(bool json)
{
    public bool Json { get; } = json;

    public CancellationToken Cancellation { get; set; }

    public void Log(string line) => Console.Error.WriteLine(line);
}
