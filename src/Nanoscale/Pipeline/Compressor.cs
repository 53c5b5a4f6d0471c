using System.Diagnostics;
using System.Text.Json.Nodes;
using Nanoscale.IO;
using Nanoscale.Codecs;
using Nanoscale.Tensors;
using Nanoscale.Formats;

namespace Nanoscale.Pipeline;

public sealed record CompressOptions
{
    /// <summary>The codec of every selected tensor; null when <see cref="Assignment"/> gives one per tensor.</summary>
    public ITensorCodec? Codec { get; init; }

    /// <summary>A codec per tensor (a <see cref="BudgetPlan"/>, <see cref="BudgetPlanner.Codecs(BudgetPlan)"/>): exactly these
    /// tensors are encoded, each with its own; <see cref="Selection"/> is not used. Set this or <see cref="Codec"/>.</summary>
    public IReadOnlyDictionary<string, ITensorCodec>? Assignment { get; init; }

    public TensorSelection Selection { get; init; } = TensorSelection.Default;

    /// <summary>The format the metadata and report name: the codec's spec, or <c>mixed</c> for an assignment.</summary>
    internal string FormatName => Codec?.Spec ?? MixedFormat;

    /// <summary>The format name of a checkpoint whose tensors have formats of their own.</summary>
    public const string MixedFormat = "mixed";
    public EncodeOptions EncodeOptions { get; init; } = new();

    /// <summary>Allow the output inside the input's model folder (<see cref="OutputGuard"/>; its own files stay refused).</summary>
    public bool Force { get; init; }

    /// <summary>Other files the run reads (calibration text, tokenizer), which the output must not replace either.</summary>
    public IReadOnlyList<string> AlsoRead { get; init; } = [];

    /// <summary>A folder output's shard size limit (<see cref="CheckpointWriter.DefaultMaxShardBytes"/>: 5 GB).</summary>
    public long MaxShardBytes { get; init; } = CheckpointWriter.DefaultMaxShardBytes;

    /// <summary>The tokenizer a folder output gets a copy of; null: the one beside the source.</summary>
    public string? TokenizerPath { get; init; }

    /// <summary>Tensors already encoded elsewhere (the units of a sharded run, <see cref="ShardedCompression"/>): their
    /// stored parts are written as they are instead of encoding the tensor again; null: encode everything.</summary>
    internal Func<TensorInfo, EncodedTensor?>? PreEncoded { get; init; }

    /// <summary>Write only the encoded tensors' parts and <see cref="ExtraFiles"/> (a unit of a sharded run): no plain
    /// tensors, config or tokenizer.</summary>
    internal bool PartsOnly { get; init; }

    /// <summary>Small text files a folder output also gets, by name.</summary>
    internal IReadOnlyList<(string Name, string Text)> ExtraFiles { get; init; } = [];
}

/// <summary>One tensor of a compress run; <see cref="Parameters"/> are the codec's per-tensor parameters as stored;
/// <see cref="EncodeSeconds"/> the time its encoding took (not stored: a file's bytes never depend on the clock).</summary>
public sealed record CompressedTensorReport(string Name, string Codec, DType DType, long[] Shape, long OriginalBytes, long StoredBytes,
    IReadOnlyDictionary<string, string>? Parameters = null, double EncodeSeconds = 0)
{
    public double BitsPerWeight => 8.0 * StoredBytes / Math.Max(1, TensorShape.ElementCount(Shape));
}

/// <summary>What a compress run wrote.</summary>
/// <param name="Output">The file or folder written.</param>
/// <param name="Format">The format spec string.</param>
/// <param name="Tensors">Every tensor, encoded or copied plain.</param>
/// <param name="SourceBytes">Bytes of the source's tensors.</param>
/// <param name="OutputFileBytes">Bytes of everything written (every file of a folder output).</param>
/// <param name="Elapsed">Wall time of the run.</param>
/// <param name="Files">What was written: the file, or the folder's files by name.</param>
public sealed record CompressReport(
    string Output, string Format, IReadOnlyList<CompressedTensorReport> Tensors, long SourceBytes, long OutputFileBytes,
    TimeSpan Elapsed, IReadOnlyList<string> Files)
{
    /// <summary>Bits per weight over the encoded tensors only, from their stored parts (scales and tables included).</summary>
    public double EncodedBitsPerWeight
    {
        get
        {
            var encoded = Tensors.Where(t => t.Codec != "plain").ToList();
            long weights = encoded.Sum(t => TensorShape.ElementCount(t.Shape));
            return weights == 0 ? 0 : 8.0 * encoded.Sum(t => t.StoredBytes) / weights;
        }
    }
}

/// <summary>
/// Writes a compressed checkpoint (SPEC §8): tensor by tensor, selected tensors through the codec, the rest
/// unchanged, in the source's order. Encoded parts go to the writer as they are produced (memory stays at one tensor;
/// shards are written as they fill, <see cref="CheckpointWriter"/>), and the output is renamed into place only once
/// complete: a single safetensors file when
/// the output is named <c>*.safetensors</c>, else a model folder (<see cref="ModelFolder"/>) with the shards, a
/// <c>config.json</c> whose <c>quantization_config</c> names each encoded tensor's format, and the tokenizer.
/// </summary>
public static class Compressor
{
    public static CompressReport Compress(ICheckpoint source, string output, CompressOptions options,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        if ((options.Codec is null) == (options.Assignment is null))
            throw new InvalidOptionException("CompressOptions.Codec", "give a codec for every selected tensor or an assignment of codecs to tensors, not both or neither");
        output = ModelFolder.CheckOutput(output, source, options.AlsoRead, options.Force);
        if (CompressedLayout.ReadEntries(source) is { Count: > 0 })
            throw new InputException($"{source.Path} is already a compressed checkpoint; decompress it first");
        var clock = Stopwatch.StartNew();
        var selected = options.Assignment is { } assignment
            ? assignment.Keys.ToHashSet(StringComparer.Ordinal)
            : source.Tensors.Where(options.Selection.Selects).Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        if (selected.FirstOrDefault(name => source.Find(name) is null) is { } missing)
            throw new InputException($"{source.Path} has no tensor {missing} (named by the assignment of formats)");
        var reports = new List<CompressedTensorReport>();
        var entries = new List<KeyValuePair<string, CompressedLayout.Entry>>();
        var names = source.Tensors.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        try
        {
            // The source's own integrity record describes its layout, not this file's: the writer makes a new one.
            // A compressed checkpoint is run from its mapping: its data starts on a cache line.
            using var writer = ModelFolder.Writer(output, options.MaxShardBytes).WithChecksums().WithAlignedData()
                .AddMetadata(source.Metadata.Where(m => m.Key != Checksums.Key))
                .AddShardMetadata(CompressedLayout.VersionKey, CompressedLayout.WriterVersion)
                .AddShardMetadata(CompressedLayout.FormatKey, options.FormatName);
            if (source.Config is { } config) writer.AddMetadata(CompressedLayout.ConfigKey, CompressedLayout.SerializeConfig(config));

            long total = source.Tensors.Sum(t => t.ByteLength), done = 0;
            var collector = new StreamingCollector();
            foreach (var tensor in source.Tensors)
            {
                cancellationToken.ThrowIfCancellationRequested();
                progress?.Report(new PipelineProgress("compress", tensor.Name, done, total));
                if (!selected.Contains(tensor.Name))
                {
                    if (options.PartsOnly) continue;
                    writer.Add(tensor.Name, tensor.DType, tensor.Shape, stream => SafetensorsWriter.CopyTensor(source, tensor, stream));
                    reports.Add(new CompressedTensorReport(tensor.Name, "plain", tensor.DType, tensor.Shape, tensor.ByteLength, tensor.ByteLength));
                }
                else
                {
                    EncodedTensor encoded;
                    var codec = options.Assignment?[tensor.Name] ?? options.Codec!;
                    var encodeClock = Stopwatch.StartNew();
                    if (options.PreEncoded?.Invoke(tensor) is { } given) encoded = given;
                    else
                        using (var view = source.Map(tensor))
                            encoded = codec.Encode(view, options.EncodeOptions, cancellationToken);
                    var parts = new List<CheckpointWriter.Part>(encoded.Parts.Count);
                    foreach (var part in encoded.Parts)
                    {
                        var partName = $"{tensor.Name}.{part.Suffix}";
                        if (names.Contains(partName))
                            throw new InputException($"{source.Path}: cannot encode {tensor.Name}: the source already has a tensor named {partName}");
                        parts.Add(new(partName, part.DType, part.Shape, part.Data));
                    }
                    writer.AddGroup(parts);
                    long stored = encoded.Parts.Sum(p => (long)p.Data.Length);
                    entries.Add(new(tensor.Name, new CompressedLayout.Entry(codec.Spec, tensor.DType, tensor.Shape,
                        encoded.Parts.Select(p => p.Suffix).ToList(), encoded.Parameters ?? new Dictionary<string, string>())));
                    reports.Add(new CompressedTensorReport(tensor.Name, codec.Spec, tensor.DType, tensor.Shape, tensor.ByteLength, stored, encoded.Parameters,
                        encodeClock.Elapsed.TotalSeconds));
                }
                done += tensor.ByteLength;
                collector.AfterTensor();
            }
            writer.AddMetadata(CompressedLayout.TensorsKey, CompressedLayout.SerializeEntries(entries));
            var quantization = new JsonObject
            {
                ["quant_method"] = HuggingFaceConfig.QuantMethod,
                ["format"] = options.FormatName,
                ["nanoscale_version"] = CompressedLayout.WriterVersion,
                ["tensors"] = new JsonObject(entries.Select(e => new KeyValuePair<string, JsonNode?>(e.Key, e.Value.Codec))),
            };
            IReadOnlyList<string> companions = options.PartsOnly ? [] : ModelFolder.AddCompanions(writer, source, source.Config,
                ModelFolder.MainDType(source.Tensors.Select(t => (t.DType, t.ElementCount))), quantization, options.TokenizerPath);
            foreach (var (name, text) in options.ExtraFiles) writer.AddText(name, text);
            companions = [.. companions, .. options.ExtraFiles.Select(f => f.Name)];
            progress?.Report(new PipelineProgress("write", null, total, total));
            writer.Commit(cancellationToken);
            IReadOnlyList<string> files = writer.IsFolder ? [.. writer.TensorFiles.Select(Path.GetFileName).OfType<string>(), .. companions] : [output];
            return new CompressReport(output, options.FormatName, reports, total, ModelFolder.SizeOf(output), clock.Elapsed, files);
        }
        catch (NonFiniteValueException e) when (e.File is null)
        {
            // Codecs name the tensor and element; add the file so the message says where.
            throw e.In(file: source.Path);
        }
    }
}

/// <summary>
/// Keeps a tensor-by-tensor loop's memory at its largest tensor. Each tensor's buffers (codes, coded streams) are
/// garbage once written, and large ones live in the large-object heap, which the runtime only sweeps in a full
/// collection; its own budget lets several hundred MB of dead buffers pile up first (a lossless run of a 2 GB model
/// peaked at 1.5 GB that way, 0.9 GB with this). So after each tensor the loop collects whenever 256 MiB were
/// allocated since the last collection: a full collection of a heap this small takes milliseconds, a few hundred
/// times for a 32 GB model.
/// </summary>
internal sealed class StreamingCollector
{
    private const long Every = 256L << 20;
    private long _allocated = GC.GetTotalAllocatedBytes();

    public void AfterTensor()
    {
        long now = GC.GetTotalAllocatedBytes();
        if (now - _allocated < Every) return;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: false);
        _allocated = GC.GetTotalAllocatedBytes();
    }
}
