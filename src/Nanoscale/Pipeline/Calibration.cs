using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tensors;
using Nanoscale.LowRank;

namespace Nanoscale.Pipeline;

public sealed record CalibrationOptions
{
    /// <summary>Tokens to run (BOS + the text's first tokens; the text is cut to about 16 characters per token first).</summary>
    public int Tokens { get; init; } = 4096;

    /// <summary>Window length; null: the model's maximum sequence length (capped at 2048). Each window starts fresh.</summary>
    public int? ContextLength { get; init; }

    /// <summary>Threads for the forward pass (default: every core).</summary>
    public Parallelism Parallelism { get; init; }
}

/// <summary>
/// Runs a model over calibration text and accumulates, for every linear weight, <c>H = XᵀX / tokens</c> of its input
/// X (SPEC §11), through the runtime's weight seam: each <see cref="ILinearWeight"/> is wrapped so its products
/// also see their inputs. Weights sharing an input (q/k/v, gate/up) share one accumulator, counted once.
/// </summary>
public static class Calibration
{
    /// <summary>Opens the model (plain or compressed) and its tokenizer (given, or found beside the model) and collects
    /// the Hessians of its linear weights on the text file.</summary>
    /// <exception cref="CheckpointFormatException">The checkpoint describes no architecture, so it cannot be run.</exception>
    public static CalibrationSet Collect(string modelPath, string textPath, string? tokenizerPath, CalibrationOptions options,
        IProgress<(long Done, long Total)>? progress = null, CancellationToken cancellationToken = default) =>
        Collect(modelPath, textPath, tokenizerPath, options, null, progress, cancellationToken);

    /// <summary>As <see cref="Collect(string, string, string?, CalibrationOptions, IProgress{ValueTuple{long, long}}?, CancellationToken)"/>;
    /// with <paramref name="cacheFolder"/>, the Hessians are written there (<see cref="CalibrationCache"/>), one at a
    /// time, and the set returned reads them back one at a time.</summary>
    internal static CalibrationSet Collect(string modelPath, string textPath, string? tokenizerPath, CalibrationOptions options,
        string? cacheFolder, IProgress<(long Done, long Total)>? progress = null, CancellationToken cancellationToken = default)
    {
        if (options.Tokens < 2) throw new InvalidOptionException("CalibrationOptions.Tokens", $"calibration needs at least 2 tokens, not {options.Tokens}");
        var text = TextInput.Read(textPath, "CalibrationPath");
        RecordingWeightSource? recording = null;
        LoadedModel loaded;
        try
        {
            loaded = LoadedModel.Open(modelPath, new ModelLoadOptions
            {
                TokenizerPath = tokenizerPath,
                Parallelism = options.Parallelism,
                WrapWeights = (config, weights) => recording = new RecordingWeightSource(weights, config.Layers),
            });
        }
        catch (CheckpointFormatException e) when (e.Where == "config")
        {
            throw new CheckpointFormatException(e.File, "config", null,
                "calibration needs a runnable model (llama2.c header or config.json); without calibration, caldera uses H = I", e);
        }
        using (loaded)
        {
            long tokens = Run(loaded, recording!, text, options, textPath, progress, cancellationToken);
            if (cacheFolder is null) return new CalibrationSet(recording!.Build(), tokens, textPath);
            CalibrationCache.Write(cacheFolder, loaded.Checkpoint.Container, textPath, options.Tokens, tokens, recording!.Groups());
            return CalibrationCache.TryOpen(cacheFolder, loaded.Checkpoint.Container, textPath, options.Tokens)!;
        }
    }

    /// <summary>
    /// The calibration of a verb (compress, plan), reported as its "calibrate" stage: read from <paramref name="cacheFolder"/>
    /// when it holds this calibration, else measured (and written there when given). Without a cache folder, a model
    /// whose Hessians would take more than <see cref="InMemoryLimitBytes"/> keeps them in a temporary folder beside
    /// <paramref name="workFolder"/>, released with the returned owner.
    /// </summary>
    internal static (CalibrationSet Set, IDisposable? Owner) CollectReporting(ICheckpoint model, string textPath, string? tokenizerPath, int tokens,
        Parallelism parallelism, IProgress<PipelineProgress>? progress, CancellationToken cancellationToken, string? cacheFolder = null,
        string? workFolder = null)
    {
        if (cacheFolder is not null && CalibrationCache.TryOpen(cacheFolder, model, textPath, tokens) is { } cached)
        {
            progress?.Report(new PipelineProgress("calibrate (cached)", null, cached.Tokens, cached.Tokens, "tokens"));
            return (cached, null);
        }
        TemporaryFolder? spill = null;
        if (cacheFolder is null && HessianBytes(model.Config) > InMemoryLimitBytes)
            spill = TemporaryFolder.Create("calibration-spill", workFolder is null ? null : Path.GetFullPath(workFolder));
        progress?.Report(new PipelineProgress("calibrate", null, 0, tokens, "tokens"));
        try
        {
            var set = Collect(model.Path, textPath, tokenizerPath, new CalibrationOptions { Tokens = tokens, Parallelism = parallelism },
                cacheFolder ?? (spill is null ? null : Path.Combine(spill.Path, "hessians")),
                progress is null ? null : new Progress<(long Done, long Total)>(p =>
                    progress.Report(new PipelineProgress("calibrate", null, p.Done, p.Total, "tokens"))),
                cancellationToken);
            return (set, spill);
        }
        catch
        {
            spill?.Dispose();
            throw;
        }
    }

    /// <summary>Hessians above this many bytes (as doubles) are kept on disk, not in memory: 2 GB.</summary>
    internal const long InMemoryLimitBytes = 2L << 30;

    /// <summary>Bytes of the model's Hessians as doubles: one n × n per distinct linear input (attention input, FFN
    /// input, attention output, FFN hidden) per layer.</summary>
    private static long HessianBytes(ModelConfig? c) =>
        c is null ? 0 : c.Layers * 8L * (2L * c.Dim * c.Dim + (long)c.QueryDim * c.QueryDim + (long)c.HiddenDim * c.HiddenDim);

    /// <summary>Runs the model over the text; returns the tokens run.</summary>
    private static long Run(LoadedModel loaded, RecordingWeightSource recording, string text, CalibrationOptions options,
        string source, IProgress<(long Done, long Total)>? progress, CancellationToken cancellationToken)
    {
        var config = loaded.Config;
        var model = loaded.Model;
        var tokenizer = loaded.Tokenizer;

        // Enough characters for the requested tokens (llama2.c vocabularies average well under 16 characters a token).
        long characters = Math.Min(text.Length, 16L * options.Tokens + 1024);
        var tokens = tokenizer.Encode(text[..(int)characters], addBos: true);
        if (tokens.Length > options.Tokens) tokens = tokens[..options.Tokens];
        if (tokens.Length < 2) throw new InputException($"{source}: the calibration text gives fewer than 2 tokens");

        int ctx = Math.Max(1, options.ContextLength ?? Math.Min(config.MaxSeqLen, 2048));
        var session = model.CreateSession(ctx);
        var hidden = new float[(long)ctx * config.Dim];
        for (int start = 0; start < tokens.Length; start += ctx)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = Math.Min(ctx, tokens.Length - start);
            session.Reset();
            session.ForwardHidden(tokens.AsSpan(start, count), hidden.AsSpan(0, count * config.Dim), cancellationToken);
            progress?.Report((start + count, tokens.Length));
        }
        return tokens.Length;
    }

    private sealed class RecordingWeightSource(IWeightSource inner, int layers) : IWeightSource
    {
        private readonly Dictionary<string, HessianAccumulator> _byTensor = new(StringComparer.Ordinal);
        private readonly Dictionary<string, HessianAccumulator> _byGroup = new(StringComparer.Ordinal);

        public bool Contains(string name) => inner.Contains(name);

        public IReadOnlyList<long> Shape(string name) => inner.Shape(name);

        public float[] Vector(string name) => inner.Vector(name);

        public ILinearWeight Linear(string name)
        {
            var weight = inner.Linear(name);
            if (name is LlamaTensorNames.Embedding or LlamaTensorNames.OutputHead) return weight;
            var (group, owner) = GroupOf(name);
            if (!_byGroup.TryGetValue(group, out var accumulator))
                _byGroup[group] = accumulator = new HessianAccumulator(weight.Columns);
            _byTensor[name] = accumulator;
            return owner ? new RecordingLinearWeight(weight, accumulator) : weight;
        }

        /// <summary>q/k/v read the attention norm's output, gate/up the FFN norm's: one accumulator each, fed by q and gate.</summary>
        private (string Group, bool Owner) GroupOf(string name)
        {
            for (int l = 0; l < layers; l++)
            {
                if (name == LlamaTensorNames.Query(l)) return ($"{l}.attention_input", true);
                if (name == LlamaTensorNames.Key(l) || name == LlamaTensorNames.Value(l)) return ($"{l}.attention_input", false);
                if (name == LlamaTensorNames.Gate(l)) return ($"{l}.ffn_input", true);
                if (name == LlamaTensorNames.Up(l)) return ($"{l}.ffn_input", false);
            }
            return (name, true);
        }

        /// <summary>Each accumulator once, with the tensors that read its input, built only when asked (so a cache
        /// writer can build, write and release one Hessian at a time).</summary>
        public IEnumerable<(IReadOnlyList<string> Tensors, Func<Hessian?> Build)> Groups() =>
            _byTensor.GroupBy(p => p.Value).Select(g => ((IReadOnlyList<string>)[.. g.Select(p => p.Key)], (Func<Hessian?>)g.Key.TakeBuilt));

        public IReadOnlyDictionary<string, Hessian> Build()
        {
            var result = new Dictionary<string, Hessian>(StringComparer.Ordinal);
            foreach (var (name, accumulator) in _byTensor)
                if (accumulator.Build() is { } h) result[name] = h;
            return result;
        }
    }

    private sealed class RecordingLinearWeight(ILinearWeight inner, HessianAccumulator accumulator) : ILinearWeight
    {
        public int Rows => inner.Rows;

        public int Columns => inner.Columns;

        public void ReadRows(int firstRow, int count, Span<float> destination) => inner.ReadRows(firstRow, count, destination);

        public void MatMul(ReadOnlySpan<float> input, Span<float> output, RuntimeOptions options)
        {
            accumulator.Add(input);
            inner.MatMul(input, output, options);
        }
    }
}
