using System.Text.Json;
using System.Text.Json.Serialization;
using MathNet.Numerics.LinearAlgebra;
using Nanoscale.IO;
using Nanoscale.LowRank;

namespace Nanoscale.Pipeline;

/// <summary>
/// Calibration Hessians kept on disk (docs/scale-out.md, docs/caldera.md): a folder with one float64 file per distinct
/// Hessian (exactly the values in memory, so a cached calibration gives the bytes a fresh one gives) (q/k/v share one, gate/up another) and an index naming the model it was measured on (its files' sizes and
/// times), the text and the tokens. Written whole by rename; read back one Hessian at a time, so a large model's
/// Hessians (9.7 GB of doubles for a 1B model) are never all in memory, and every unit of a sharded run can read the
/// one calibration instead of running the model itself (<c>--calib-cache DIR</c>).
/// </summary>
internal static class CalibrationCache
{
    public const string IndexName = "nanoscale-calibration.json";
    private const int Version = 1;

    internal sealed record Index(int Version, string Model, IReadOnlyList<ShardedCompression.SourceFile> ModelFiles, string Text,
        long TextBytes, int RequestedTokens, long Tokens, IReadOnlyList<Entry> Entries);

    internal sealed record Entry(string File, int Size, double Scale, IReadOnlyList<string> Tensors);

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>Writes the groups' Hessians into <paramref name="folder"/> (new; written whole by rename), building and
    /// releasing one at a time.</summary>
    public static void Write(string folder, ICheckpoint model, string textPath, int requestedTokens, long tokens,
        IEnumerable<(IReadOnlyList<string> Tensors, Func<Hessian?> Build)> groups)
    {
        string full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(folder));
        string? parent = Path.GetDirectoryName(full);
        if (parent is not null) Directory.CreateDirectory(parent);
        using var staging = TemporaryFolder.Create("calibration", parent);
        var entries = new List<Entry>();
        foreach (var (tensors, build) in groups)
        {
            if (build() is not { } h) continue;
            string file = $"h{entries.Count:D4}.f64";
            var values = h.Matrix.AsColumnMajorArray() ?? h.Matrix.ToColumnMajorArray(); // symmetric: row-major too
            using (var stream = new FileStream(Path.Combine(staging.Path, file), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
                stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
            entries.Add(new Entry(file, h.Size, h.Scale, tensors));
        }
        var index = new Index(Version, Path.GetFullPath(model.Path), ShardedCompression.Identify(model), Path.GetFullPath(textPath),
            new FileInfo(textPath).Length, requestedTokens, tokens, entries);
        File.WriteAllText(Path.Combine(staging.Path, IndexName), JsonSerializer.Serialize(index, Json));
        try { Directory.Move(staging.Path, full); }
        catch (IOException) when (File.Exists(Path.Combine(full, IndexName)))
        {
            // Another unit wrote the same calibration first: theirs is used.
        }
    }

    /// <summary>The calibration in <paramref name="folder"/> when it was measured on this model (unchanged), this
    /// text and this many tokens; null when the folder has none. A cache of another run is an error naming the field.</summary>
    public static CalibrationSet? TryOpen(string folder, ICheckpoint model, string textPath, int requestedTokens)
    {
        string indexPath = Path.Combine(folder, IndexName);
        if (!File.Exists(indexPath)) return null;
        Index index;
        var json = File.ReadAllBytes(indexPath);
        try { index = JsonSerializer.Deserialize<Index>(json, Json) ?? throw new JsonException("empty"); }
        catch (JsonException e)
        {
            throw new CheckpointFormatException(indexPath, "calibration index", JsonErrors.Offset(json, e), $"not a calibration index: {JsonErrors.Reason(e)}", e);
        }
        if (index.Model is null || index.Text is null || index.ModelFiles is null || index.ModelFiles.Any(f => f?.Path is null)
            || index.Entries is null || index.Entries.Any(e => e?.File is null || e.Tensors is null || e.Tensors.Any(t => t is null)))
            throw new CheckpointFormatException(indexPath, "calibration index", null, "not a calibration index: a field is missing or null");
        string? mismatch = index.Version != Version ? "version"
            : index.Model != Path.GetFullPath(model.Path) || !index.ModelFiles.SequenceEqual(ShardedCompression.Identify(model)) ? "model (or it changed since)"
            : index.Text != Path.GetFullPath(textPath) || index.TextBytes != new FileInfo(textPath).Length ? "calibration text"
            : index.RequestedTokens != requestedTokens ? "calibration tokens"
            : null;
        if (mismatch is not null)
            throw new Tensors.InputException($"{folder} holds a calibration of another {mismatch}; give a new folder to --calib-cache, or delete it", "CalibrationCache");
        var byTensor = new Dictionary<string, Entry>(StringComparer.Ordinal);
        foreach (var e in index.Entries)
        {
            if (e.Size <= 0 || e.File.Contains('/') || e.File.Contains('\\') || e.File.StartsWith('.'))
                throw new CheckpointFormatException(indexPath, e.File, null, "not a Hessian file of this folder");
            foreach (var t in e.Tensors) byTensor[t] = e;
        }
        (Entry Entry, Hessian Hessian)? last = null;
        Hessian? Load(string tensor)
        {
            if (!byTensor.TryGetValue(tensor, out var entry)) return null;
            if (last is { } l && ReferenceEquals(l.Entry, entry)) return l.Hessian; // q, k, v in a row share one
            string path = Path.Combine(folder, entry.File);
            long expected = (long)entry.Size * entry.Size * 8;
            var info = new FileInfo(path);
            if (!info.Exists || info.Length != expected)
                throw new CheckpointFormatException(path, tensor, null, $"a {entry.Size}×{entry.Size} Hessian needs {expected} bytes, the file has {(info.Exists ? info.Length : 0)}");
            var matrix = Matrix<double>.Build.Dense(entry.Size, entry.Size);
            var storage = matrix.AsColumnMajorArray()!;
            using (var stream = File.OpenRead(path)) stream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(storage.AsSpan()));
            for (int i = 0; i < storage.Length; i++)
                if (!double.IsFinite(storage[i])) throw new CheckpointFormatException(path, tensor, i * 8L, "the Hessian holds a non-finite value");
            var h = Hessian.FromStored(matrix, index.Tokens, entry.Scale);
            last = (entry, h);
            return h;
        }
        return new CalibrationSet([.. byTensor.Keys], Load, index.Tokens, textPath);
    }
}
