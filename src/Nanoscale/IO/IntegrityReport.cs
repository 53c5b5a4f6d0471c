namespace Nanoscale.IO;

/// <summary>
/// What <see cref="ICheckpoint.Verify"/> found: how much was checked against the files' integrity records, and one
/// located message per damaged tensor (file, tensor, byte range). Files written by other tools have no record: their
/// tensors are counted but not checked.
/// </summary>
public sealed record IntegrityReport(string Path, int Files, int Tensors, int TensorsChecked, long BytesChecked, IReadOnlyList<string> Problems)
{
    public bool Ok => Problems.Count == 0;

    /// <summary>The reports of several files (shards) as one.</summary>
    public static IntegrityReport Combine(string path, IEnumerable<IntegrityReport> parts)
    {
        var list = parts.ToList();
        return new IntegrityReport(path, list.Sum(p => p.Files), list.Sum(p => p.Tensors), list.Sum(p => p.TensorsChecked),
            list.Sum(p => p.BytesChecked), [.. list.SelectMany(p => p.Problems)]);
    }
}
