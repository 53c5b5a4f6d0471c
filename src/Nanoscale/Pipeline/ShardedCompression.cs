using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// Unit <see cref="Index"/> of <see cref="Count"/> of a sharded compression (docs/scale-out.md): <c>--shard i/N</c>,
/// or <c>--shard auto/N</c> with the index from the scheduler's environment (<c>SLURM_ARRAY_TASK_ID</c>, Kubernetes'
/// <c>JOB_COMPLETION_INDEX</c>).
/// </summary>
public readonly record struct ShardUnit(int Index, int Count)
{
    /// <summary>The environment variables <c>auto</c> reads, in order.</summary>
    public static readonly IReadOnlyList<string> IndexVariables = ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"];

    /// <summary>The unit's folder inside the run's output folder.</summary>
    public string FolderName => string.Create(CultureInfo.InvariantCulture, $"part-{Index}-of-{Count}");

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Index}/{Count}");

    /// <summary>Parses <c>i/N</c> or <c>auto/N</c>.</summary>
    /// <exception cref="InvalidOptionException">Not of that form, i outside 0..N−1, or <c>auto</c> without a scheduler's index.</exception>
    public static ShardUnit Parse(string text, Func<string, string?>? environment = null, string option = "CompressionRequest.Shard")
    {
        environment ??= Environment.GetEnvironmentVariable;
        var parts = (text ?? "").Split('/', StringSplitOptions.TrimEntries);
        if (parts.Length != 2 || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int count) || count < 1 || count > ShardedCompression.MaxUnits)
            throw new InvalidOptionException(option, $"\"{text}\" is not a unit: give i/N (0 ≤ i < N, e.g. 2/8) or auto/N");
        string indexText = parts[0];
        string from = "";
        if (indexText.Equals("auto", StringComparison.OrdinalIgnoreCase))
        {
            var found = IndexVariables.Select(v => (Name: v, Value: environment(v))).FirstOrDefault(v => !string.IsNullOrEmpty(v.Value));
            if (found.Value is null)
                throw new InvalidOptionException(option, $"auto/{count} needs the unit's index from the scheduler, but none of {string.Join(", ", IndexVariables)} is set");
            indexText = found.Value.Trim();
            from = $" ({found.Name}={found.Value})";
        }
        if (!int.TryParse(indexText, NumberStyles.None, CultureInfo.InvariantCulture, out int index) || index >= count)
            throw new InvalidOptionException(option, $"unit index {indexText}{from} is not in 0..{count - 1} (Slurm: --array=0-{count - 1})");
        return new ShardUnit(index, count);
    }
}

/// <summary>What <c>merge</c> found and wrote.</summary>
/// <param name="Result">The final checkpoint's compression report and measured error, as a single-machine run gives.</param>
/// <param name="Units">The unit folders merged, in index order.</param>
public sealed record MergeResult(CompressionResult Result, IReadOnlyList<string> Units);

/// <summary>
/// Compression split into independent units that a scheduler runs (docs/scale-out.md). Unit i of N encodes the
/// tensors a deterministic assignment gives it, balanced by estimated work (longest first onto the least loaded unit),
/// into <c>OUT/part-i-of-N/</c>: a small checkpoint of those tensors' stored parts, with their checksums, and a
/// manifest of what was asked. <see cref="Merge"/> checks every unit against the others, the model and the assignment,
/// then writes the final checkpoint through the same writer as a single-machine run, taking each tensor's parts from
/// its unit instead of encoding it: the result is byte-identical.
/// </summary>
public static class ShardedCompression
{
    /// <summary>The manifest's file name inside a unit's folder.</summary>
    public const string ManifestName = "nanoscale-unit.json";

    internal const int ManifestVersion = 1;

    /// <summary>The most units a run may have (<c>--shard i/N</c> with N up to this).</summary>
    internal const int MaxUnits = 100_000;

    /// <summary>What a unit records: everything that changes the bytes of the final checkpoint.</summary>
    internal sealed record Manifest
    {
        public int Version { get; init; } = ManifestVersion;
        public required int Index { get; init; }
        public required int Count { get; init; }
        public required string Format { get; init; }

        /// <summary>Tensor → spec of a planned run (<c>--plan</c>; <see cref="Format"/> is then <see cref="Mixed"/>).</summary>
        public IReadOnlyDictionary<string, string>? Assignment { get; init; }
        public string? Include { get; init; }
        public string? Exclude { get; init; }
        public bool AllowNonFinite { get; init; }
        public string? CalibrationPath { get; init; }
        public int CalibrationTokens { get; init; }
        public string? TokenizerPath { get; init; }
        public long MaxShardBytes { get; init; }
        public bool Force { get; init; }
        public required string Model { get; init; }
        public required IReadOnlyList<SourceFile> ModelFiles { get; init; }
        public required IReadOnlyList<string> Tensors { get; init; }
    }

    /// <summary>One file of the model as the unit saw it: a changed model between units is refused.</summary>
    internal sealed record SourceFile(string Path, long Bytes, DateTime Modified);

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Estimated work of encoding a tensor: its weights, and for CALDERA (LDLQ over the columns) weights × columns.</summary>
    internal static double EstimatedWork(ITensorCodec codec, TensorInfo tensor)
    {
        double columns = TensorShape.Columns(tensor.Shape);
        return codec.Spec.StartsWith("caldera", StringComparison.Ordinal) ? tensor.ElementCount * columns : tensor.ElementCount;
    }

    /// <summary>The format a manifest names for a planned run (each tensor's own spec in <see cref="Manifest.Assignment"/>).</summary>
    internal const string Mixed = "mixed";

    /// <summary>The unit of every tensor: longest first onto the least loaded unit (ties: name order, lowest unit).</summary>
    internal static Dictionary<string, int> Assign(IReadOnlyList<TensorInfo> tensors, ITensorCodec codec, int count) => Assign(tensors, _ => codec, count);

    /// <summary>As <see cref="Assign(IReadOnlyList{TensorInfo}, ITensorCodec, int)"/>, each tensor with its own codec (a plan).</summary>
    internal static Dictionary<string, int> Assign(IReadOnlyList<TensorInfo> tensors, Func<TensorInfo, ITensorCodec> codecOf, int count)
    {
        var load = new double[count];
        var result = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var tensor in tensors.OrderByDescending(t => EstimatedWork(codecOf(t), t)).ThenBy(t => t.Name, StringComparer.Ordinal))
        {
            int unit = 0;
            for (int u = 1; u < count; u++) if (load[u] < load[unit]) unit = u;
            load[unit] += EstimatedWork(codecOf(tensor), tensor);
            result[tensor.Name] = unit;
        }
        return result;
    }

    /// <summary>The tensors a run encodes and the codec of each: a plan's tensors with their own codecs, or the selection's
    /// with the one codec.</summary>
    private static (List<TensorInfo> Selected, Func<TensorInfo, ITensorCodec> CodecOf) Work(ICheckpoint source,
        IReadOnlyDictionary<string, ITensorCodec>? plan, ITensorCodec? codec, TensorSelection selection) =>
        plan is not null
            ? (source.Tensors.Where(t => plan.ContainsKey(t.Name)).ToList(), t => plan[t.Name])
            : (source.Tensors.Where(selection.Selects).ToList(), _ => codec!);

    internal static IReadOnlyList<SourceFile> Identify(ICheckpoint source) =>
        [.. source.Files.Select(f => new FileInfo(f)).Select(f => new SourceFile(f.FullName, f.Length, f.LastWriteTimeUtc))];

    /// <summary>
    /// Runs unit <paramref name="unit"/> of a sharded compression into <c>outputFolder/part-i-of-N</c> (written whole, by
    /// rename). A unit already finished with the same request is left as it is (a rerun of a requeued job).
    /// </summary>
    internal static CompressionResult RunUnit(ICheckpoint source, string outputFolder, ShardUnit unit, CompressionRequest request,
        CompressOptions options, IProgress<PipelineProgress>? progress, CancellationToken cancellationToken)
    {
        var (selected, codecOf) = Work(source, options.Assignment, options.Codec, options.Selection);
        var assignment = Assign(selected, codecOf, unit.Count);
        var mine = selected.Where(t => assignment[t.Name] == unit.Index).Select(t => t.Name).ToList();
        var manifest = new Manifest
        {
            Index = unit.Index,
            Count = unit.Count,
            Format = options.Codec?.Spec ?? Mixed,
            Assignment = options.Assignment?.ToDictionary(p => p.Key, p => p.Value.Spec, StringComparer.Ordinal),
            Include = request.Include,
            Exclude = request.Exclude,
            AllowNonFinite = request.AllowNonFinite,
            CalibrationPath = request.CalibrationPath is { } c ? Path.GetFullPath(c) : null,
            CalibrationTokens = request.CalibrationPath is null ? 0 : request.CalibrationTokens,
            TokenizerPath = request.TokenizerPath is { } t ? Path.GetFullPath(t) : null,
            MaxShardBytes = request.MaxShardBytes,
            Force = request.Force,
            Model = Path.GetFullPath(source.Path),
            ModelFiles = Identify(source),
            Tensors = mine,
        };
        string folder = Path.Combine(outputFolder, unit.FolderName);
        string manifestPath = Path.Combine(folder, ManifestName);
        if (File.Exists(manifestPath) && ReadManifest(manifestPath) is var done && SameRequest(done, manifest) is null
            && done.Index == unit.Index && done.Tensors.SequenceEqual(mine))
        {
            using var finished = LogicalCheckpoint.Open(folder);
            var tensors = finished.Tensors.Select(t => new CompressedTensorReport(t.Name, t.Encoded?.Spec ?? "plain", t.DType, t.Shape,
                source.Find(t.Name)?.ByteLength ?? 0, t.StoredBytes)).ToList();
            return new CompressionResult(new CompressReport(folder, manifest.Format, tensors, tensors.Sum(t => t.OriginalBytes), ModelFolder.SizeOf(folder),
                TimeSpan.Zero, [.. Directory.EnumerateFiles(folder).Select(Path.GetFileName).OfType<string>()]), [], AlreadyDone: true);
        }
        var codecs = selected.Where(t => assignment[t.Name] == unit.Index).ToDictionary(t => t.Name, codecOf, StringComparer.Ordinal);
        return CompressionRun.Run(source, folder, options with
        {
            Codec = null,
            Assignment = codecs,
            PartsOnly = true,
            ExtraFiles = [(ManifestName, JsonSerializer.Serialize(manifest, Json))],
        }, request.MeasureError, progress, cancellationToken);
    }

    private static Manifest ReadManifest(string path)
    {
        var json = File.ReadAllBytes(path);
        Manifest? manifest;
        try { manifest = JsonSerializer.Deserialize<Manifest>(json, Json); }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(path, "manifest", JsonErrors.Offset(json, e), $"not a unit manifest: {JsonErrors.Reason(e)}", e);
        }
        // JSON null passes the deserializer for non-nullable members: checked here, so a hostile manifest is an error, not a crash.
        string? missing = manifest is null ? "everything"
            : manifest.Format is null ? "format" : manifest.Model is null ? "model"
            : manifest.ModelFiles is null || manifest.ModelFiles.Any(f => f is null || f.Path is null) ? "model_files"
            : manifest.Tensors is null || manifest.Tensors.Any(t => t is null) ? "tensors" : null;
        if (missing is not null) throw new CheckpointFormatException(path, "manifest", null, $"not a unit manifest: {missing} is missing or null");
        if ((manifest!.Format == Mixed) != (manifest.Assignment is not null) || manifest.Assignment?.Values.Any(v => v is null) == true)
            throw new CheckpointFormatException(path, "manifest.assignment", null, $"not a unit manifest: format {manifest.Format} with {(manifest.Assignment is null ? "no" : "a")} plan");
        if (manifest!.Count < 1 || manifest.Count > MaxUnits || manifest.Index < 0 || manifest.Index >= manifest.Count)
            throw new CheckpointFormatException(path, "manifest.index", null, $"unit {manifest.Index} of {manifest.Count} is not a unit (1 to {MaxUnits} units, index below the count)");
        if (manifest.Version != ManifestVersion)
            throw new CheckpointFormatException(path, "manifest.version", null, $"unit manifest version {manifest.Version}; this version reads {ManifestVersion}");
        return manifest;
    }

    /// <summary>The first field two manifests disagree on (other than index and tensors), or null.</summary>
    private static string? SameRequest(Manifest a, Manifest b)
    {
        if (a.Version != b.Version) return "version";
        if (a.Count != b.Count) return "count";
        if (a.Format != b.Format) return "format";
        if ((a.Assignment is null) != (b.Assignment is null)
            || (a.Assignment is not null && (a.Assignment.Count != b.Assignment!.Count
                || a.Assignment.Any(p => !b.Assignment.TryGetValue(p.Key, out var spec) || spec != p.Value)))) return "plan";
        if (a.Include != b.Include) return "include";
        if (a.Exclude != b.Exclude) return "exclude";
        if (a.AllowNonFinite != b.AllowNonFinite) return "allow_non_finite";
        if (a.CalibrationPath != b.CalibrationPath || a.CalibrationTokens != b.CalibrationTokens) return "calibration";
        if (a.TokenizerPath != b.TokenizerPath) return "tokenizer_path";
        if (a.MaxShardBytes != b.MaxShardBytes) return "max_shard_bytes";
        if (a.Force != b.Force) return "force";
        if (a.Model != b.Model) return "model";
        if (!a.ModelFiles.SequenceEqual(b.ModelFiles)) return "model_files";
        return null;
    }

    /// <summary>
    /// Merges the units in <paramref name="unitsFolder"/> into <paramref name="output"/> (a model folder, or one
    /// <c>.safetensors</c> file), exactly as a single-machine <c>compress</c> with the units' request would write it.
    /// </summary>
    /// <exception cref="InputException">No units, a missing, duplicated or mismatched unit, or a model changed since.</exception>
    /// <exception cref="CheckpointFormatException">A damaged unit (its checksums name the tensor).</exception>
    public static MergeResult Merge(string unitsFolder, string output, bool measureError = true,
        IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        if (!Directory.Exists(unitsFolder)) throw new InputException($"{unitsFolder}: no such folder of units");
        var found = Directory.EnumerateDirectories(unitsFolder)
            .Select(d => Path.Combine(d, ManifestName)).Where(File.Exists).Order(StringComparer.Ordinal)
            .Select(m => (Folder: Path.GetDirectoryName(m)!, Manifest: ReadManifest(m)))
            .ToList();
        if (found.Count == 0) throw new InputException($"{unitsFolder} holds no units (folders with {ManifestName}); run compress --shard i/N -o {unitsFolder} first");
        var first = found[0];
        foreach (var (folder, manifest) in found.Skip(1))
            if (SameRequest(first.Manifest, manifest) is { } field)
                throw new InputException($"{Path.GetFileName(folder)} and {Path.GetFileName(first.Folder)} were run with different {field}; " +
                    "every unit of one run must be given the same model, format and options");
        int count = first.Manifest.Count;
        var byIndex = new Dictionary<int, string>();
        foreach (var (folder, manifest) in found)
        {
            if (manifest.Index < 0 || manifest.Index >= count)
                throw new InputException($"{folder}: unit {manifest.Index} of {count} is not in 0..{count - 1}");
            if (byIndex.TryGetValue(manifest.Index, out var other))
                throw new InputException($"unit {manifest.Index} of {count} is there twice: {Path.GetFileName(other)} and {Path.GetFileName(folder)}; remove one");
            byIndex[manifest.Index] = folder;
        }

        using var source = CheckpointLoader.Open(first.Manifest.Model);
        if (SameFiles(Identify(source), first.Manifest.ModelFiles) is { } changed)
            throw new InputException($"{changed} changed since the units ran; run them again on the model as it is now");
        var plan = first.Manifest.Assignment is { } planned ? BudgetPlanner.Codecs(planned) : null;
        var codec = plan is null ? CodecRegistry.Create(first.Manifest.Format) : null;
        var selection = codec is null ? TensorSelection.Default : TensorSelection.For(codec, first.Manifest.Include, first.Manifest.Exclude);
        var (selected, codecOf) = Work(source, plan, codec, selection);
        var assignment = Assign(selected, codecOf, count);
        var missing = Enumerable.Range(0, count).Where(i => !byIndex.ContainsKey(i)).ToList();
        if (missing.Count > 0)
            throw new InputException($"{unitsFolder}: {string.Join(", ", missing.Select(i => new ShardUnit(i, count).FolderName))} missing " +
                $"({missing.Count} of {count} units; e.g. {string.Join(", ", selected.Where(t => assignment[t.Name] == missing[0]).Take(3).Select(t => t.Name))}); run them, then merge again");
        foreach (var (folder, manifest) in found)
        {
            var expected = selected.Where(t => assignment[t.Name] == manifest.Index).Select(t => t.Name).ToList();
            if (!expected.SequenceEqual(manifest.Tensors))
                throw new InputException($"{Path.GetFileName(folder)} holds other tensors than unit {manifest.Index} of {count} should " +
                    $"({manifest.Tensors.Count} listed, {expected.Count} expected); it was not made by this version's assignment, run it again");
        }

        // Every unit's checksums first: a damaged unit is refused before anything is written.
        var units = new List<LogicalCheckpoint>();
        try
        {
            var owner = new Dictionary<string, (LogicalCheckpoint Unit, StoredTensor Stored, CompressedLayout.Entry Entry)>(StringComparer.Ordinal);
            foreach (var folder in byIndex.OrderBy(p => p.Key).Select(p => p.Value))
            {
                cancellationToken.ThrowIfCancellationRequested();
                progress?.Report(new PipelineProgress("verify units", Path.GetFileName(folder), units.Count, count, "units"));
                var unit = LogicalCheckpoint.Open(folder);
                units.Add(unit);
                var report = unit.Container.Verify(cancellationToken);
                if (!report.Ok)
                    throw new InputException($"{folder}: the unit is damaged ({report.Problems[0]}); run it again, then merge");
                var entries = (CompressedLayout.ReadEntries(unit.Container) ?? []).ToDictionary(e => e.Key, e => e.Value, StringComparer.Ordinal);
                foreach (var t in unit.Tensors)
                {
                    var wanted = source.Find(t.Name) is { } original && assignment.ContainsKey(t.Name) ? codecOf(original).Spec : "no such tensor to encode";
                    if (t.Encoded is null || t.Encoded.Spec != wanted || !entries.TryGetValue(t.Name, out var entry))
                        throw new CheckpointFormatException(folder, t.Name, null, $"expected a {wanted} tensor in the unit, found {t.Encoded?.Spec ?? "a plain one"}");
                    owner[t.Name] = (unit, t.Encoded, entry);
                }
            }
            EncodedTensor? FromUnit(TensorInfo tensor)
            {
                if (!owner.TryGetValue(tensor.Name, out var found))
                    throw new InputException($"{tensor.Name} is in no unit's checkpoint although its unit lists it; run that unit again");
                var (unit, stored, entry) = found;
                return new EncodedTensor([.. entry.Parts.Select(suffix =>
                {
                    var part = stored.Part(suffix);
                    using var view = unit.Container.Map(part);
                    return new EncodedPart(suffix, part.DType, part.Shape, view.Bytes.ToArray());
                })], stored.Parameters);
            }
            var m = first.Manifest;
            var result = CompressionRun.Run(source, output, new CompressOptions
            {
                Codec = codec,
                Assignment = plan,
                Selection = selection,
                Force = m.Force,
                AlsoRead = [.. new[] { m.CalibrationPath, m.TokenizerPath }.OfType<string>()],
                MaxShardBytes = m.MaxShardBytes,
                TokenizerPath = m.TokenizerPath,
                PreEncoded = FromUnit,
            }, measureError, progress, cancellationToken);
            return new MergeResult(result, [.. byIndex.OrderBy(p => p.Key).Select(p => p.Value)]);
        }
        finally
        {
            foreach (var unit in units) unit.Dispose();
        }
    }

    private static string? SameFiles(IReadOnlyList<SourceFile> now, IReadOnlyList<SourceFile> then)
    {
        foreach (var file in then)
        {
            var current = now.FirstOrDefault(f => f.Path == file.Path);
            if (current is null || current.Bytes != file.Bytes || current.Modified != file.Modified) return file.Path;
        }
        return now.FirstOrDefault(f => then.All(t => t.Path != f.Path))?.Path;
    }
}
