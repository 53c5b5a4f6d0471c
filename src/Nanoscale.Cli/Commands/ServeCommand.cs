using System.CommandLine;
using Microsoft.AspNetCore.Builder;
using Nanoscale.Cli.Rendering;
using Nanoscale.Cli.Serve;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale serve MODEL [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--cors ORIGIN]</c>: an OpenAI-compatible server.</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var input = new Argument<string>("MODEL") { Description = "Model to serve (plain or compressed, any format `eval` reads, GGUF included)" };
        var host = new Option<string>("--host") { Description = "Address to listen on (loopback unless told otherwise)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port (0: any free port, printed)", DefaultValueFactory = _ => 8080 };
        port.Validators.Add(r => { if (r.GetValueOrDefault<int>() is < 0 or > 65535) r.AddError("--port must be 0..65535"); });
        var apiKey = new Option<string?>("--api-key") { Description = "Require 'Authorization: Bearer KEY' on /v1 requests" };
        var apiKeyFile = new Option<string?>("--api-key-file")
        {
            Description = "Require one of the keys in this file (one a line; blank lines and # comments skipped), so no key shows in the process list",
        };
        var cors = new Option<string[]>("--cors")
        {
            Description = "Let web pages of this origin (e.g. http://localhost:3000; * for any) call the API from a browser (CORS); repeatable",
            AllowMultipleArgumentsPerToken = false,
        };
        cors.Validators.Add(r =>
        {
            foreach (var origin in r.GetValueOrDefault<string[]>() ?? [])
                if (origin != "*" && !(Uri.TryCreate(origin, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
                        && uri.GetLeftPart(UriPartial.Authority) == origin.TrimEnd('/')))
                    r.AddError($"--cors takes * or an origin such as http://localhost:3000 (scheme, host and port, no path), not '{origin}'");
        });
        var context = new Option<int?>("--ctx") { Description = "Tokens of prompt plus completion per request (default: the model's maximum)" };
        var batch = new Option<int>("--max-batch") { Description = "Requests that share each pass over the weights (continuous batching)", DefaultValueFactory = _ => 8 };
        batch.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 1) r.AddError("--max-batch must be ≥ 1"); });
        var kvBudget = new Option<string?>("--kv-budget")
        {
            Description = "KV-cache memory all running requests may hold (e.g. 2GB); requests wait for room. Default: half the memory available at start, less the model's files; none: no cap",
        };
        var queue = new Option<int>("--max-queue") { Description = "Requests that may wait beyond the running batch; beyond it, 429", DefaultValueFactory = _ => 16 };
        queue.Validators.Add(r => { if (r.GetValueOrDefault<int>() < 0) r.AddError("--max-queue must be ≥ 0"); });
        var name = new Option<string?>("--model-name") { Description = "The model's name in the API (default: the file or folder name)" };
        var tokenizer = CliRunner.TokenizerOption();
        var threads = CliRunner.ThreadsOption();
        var kvCache = CliRunner.KvCacheOption();
        var chatTemplate = new Option<string?>("--chat-template") { Description = "A Jinja chat template file to use instead of the model's (chat_template.jinja or tokenizer_config.json's)" };
        var reasoning = new Option<string>("--reasoning-format")
        {
            Description = "With a thinking template (<think>): deepseek gives the reasoning block as reasoning_content apart from content; none leaves it in content",
            DefaultValueFactory = _ => "deepseek",
        };
        reasoning.AcceptOnlyFromAmong("deepseek", "none");
        var noWarmup = new Option<bool>("--no-warmup") { Description = "Listen at once instead of running a few short generations first (which compile the step's code before the first request)" };
        var noPromptCache = new Option<bool>("--no-prompt-cache")
        {
            Description = "Run every prompt whole instead of reusing a finished request's cache that holds its beginning (a chat's history, a shared system prompt)",
        };
        var pooling = new Option<string>("--pooling")
        {
            Description = "How /v1/embeddings pools an input's final hidden states: mean over the positions, or the last position's",
            DefaultValueFactory = _ => "mean",
        };
        pooling.AcceptOnlyFromAmong("mean", "last");
        var json = CliRunner.JsonOption();
        var command = new Command("serve", "Serve the model over HTTP with the OpenAI API (completions, chat completions, streaming)")
            { input, host, port, apiKey, apiKeyFile, cors, context, batch, kvBudget, kvCache, queue, name, tokenizer, threads, chatTemplate, reasoning, noWarmup, noPromptCache, pooling, json };
        command.SetAction(parse => CliRunner.Run(parse, json, cli =>
        {
            var path = parse.GetValue(input)!;
            // The key file is read before the model is loaded, so a wrong path fails at once.
            var fileKeys = parse.GetValue(apiKeyFile) is { } keyFile ? ReadApiKeys(keyFile) : null;
            var model = LoadedModel.Open(path, new ModelLoadOptions
            {
                TokenizerPath = parse.GetValue(tokenizer),
                Parallelism = new(parse.GetValue(threads)),
                KvCache = parse.GetValue(kvCache),
            });
            string modelName = parse.GetValue(name) ?? Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(path));
            long? budget = parse.GetValue(kvBudget) switch
            {
                null => DefaultKvBudget(path),
                "none" => null,
                var text => ModelFolder.ParseShardSize(text, kvBudget.Name),
            };
            using var service = new CompletionService(model, modelName, parse.GetValue(queue), parse.GetValue(context), parse.GetValue(batch), budget,
                parse.GetValue(chatTemplate), promptCache: !parse.GetValue(noPromptCache));
            // Warm-up: the step's code before listening, then one request of each kind over loopback (the HTTP and JSON code).
            var warming = System.Diagnostics.Stopwatch.StartNew();
            if (!parse.GetValue(noWarmup)) service.WarmUp(cli.Cancellation);
            var serveOptions = new ServeOptions(parse.GetValue(host)!, parse.GetValue(port), parse.GetValue(apiKey), parse.GetValue(reasoning) == "deepseek",
                parse.GetValue(pooling) == "last" ? EmbeddingPooling.Last : EmbeddingPooling.Mean,
                [.. (parse.GetValue(cors) ?? []).Select(o => o == "*" ? o : o.TrimEnd('/'))],
                fileKeys);
            var app = OpenAiServer.Build(service, serveOptions);
            app.StartAsync(cli.Cancellation).GetAwaiter().GetResult();
            if (!parse.GetValue(noWarmup))
            {
                OpenAiServer.WarmUpAsync(app, serveOptions, cli.Cancellation).GetAwaiter().GetResult();
                cli.Log($"warmed up in {warming.Elapsed.TotalSeconds:0.00} s");
            }
            foreach (var url in app.Urls)
                cli.Log($"serving {modelName} on {url} (chat template: {service.ChatTemplateName}, context {service.ContextLength}, " +
                        $"batch {service.MaxBatch}, queue {service.MaxWaiting}, {service.KvCacheName} KV cache{(service.PromptCache ? ", prompt cache" : "")}" +
                        $"{(service.KvBudgetBytes is { } b ? $", KV budget {b / (1024.0 * 1024):0} MiB{(parse.GetValue(kvBudget) is null ? " (half the memory available)" : "")}" : ", no KV budget")}" +
                        $"{(serveOptions.CorsOrigins is { Count: > 0 } o ? $", CORS for {string.Join(" ", o)}" : "")}); Ctrl-C or SIGTERM stops");
            // SIGTERM and Ctrl-C cancel the token: stop accepting, let in-flight requests finish (10 s at most), exit 0.
            try { Task.Delay(Timeout.Infinite, cli.Cancellation).GetAwaiter().GetResult(); }
            catch (OperationCanceledException) { }
            app.StopAsync().GetAwaiter().GetResult();
            app.DisposeAsync().AsTask().GetAwaiter().GetResult();
            cli.Log("stopped");
            return null;
        }));
        return command;
    }

    /// <summary>
    /// The KV budget when <c>--kv-budget</c> is not given: half of the memory available at start — the system's
    /// <c>MemAvailable</c>, or what the process may still use under its container's limit when that is less — after the
    /// model's files (which that count holds as reclaimable cache while they are being read), so a server left to its
    /// defaults queues or refuses requests whose caches would not fit instead of being killed for memory. At least
    /// 64 MiB.
    /// </summary>
    internal static long DefaultKvBudget(string modelPath)
    {
        long limit = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes - Environment.WorkingSet;
        long available = MemAvailable() is long system ? Math.Min(system, limit) : limit;
        return Math.Max(64L << 20, (available - FileBytes(modelPath)) / 2);
    }

    /// <summary>The keys of an <c>--api-key-file</c>: one a line, surrounding blanks trimmed, blank lines and lines
    /// starting with <c>#</c> skipped.</summary>
    /// <exception cref="InputException">The file cannot be read or holds no key.</exception>
    internal static IReadOnlyList<string> ReadApiKeys(string file)
    {
        string[] lines;
        try { lines = File.ReadAllLines(file); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InputException($"{file}: cannot read the API keys: {e.Message}");
        }
        var keys = lines.Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        return keys.Count > 0 ? keys : throw new InputException($"{file}: no API key in it (one a line; # starts a comment)");
    }

    /// <summary>/proc/meminfo's MemAvailable in bytes, or null where there is none.</summary>
    private static long? MemAvailable()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)
                    && long.TryParse(line["MemAvailable:".Length..].Trim().Split(' ')[0], out long kib))
                    return kib * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>The bytes of a model file, or of the files in a model folder.</summary>
    private static long FileBytes(string path) =>
        File.Exists(path) ? new FileInfo(path).Length
        : Directory.Exists(path) ? new DirectoryInfo(path).EnumerateFiles().Sum(f => f.Length)
        : 0;
}
