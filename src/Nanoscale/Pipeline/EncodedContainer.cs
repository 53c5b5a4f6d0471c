using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// A bare compressed container of tensors encoded in memory (parts and the table, no config or integrity record):
/// what the benchmark and the budget planner decode from, so they read exactly what <c>compress</c> would store.
/// </summary>
internal static class EncodedContainer
{
    /// <summary>One encoded tensor to store: its logical name, dtype and shape, and the codec spec that made it.</summary>
    public readonly record struct Item(string Name, DType DType, long[] Shape, string Spec, EncodedTensor Encoded);

    public static void Write(string path, IEnumerable<Item> items, CancellationToken cancellationToken = default)
    {
        var writer = new SafetensorsWriter(path);
        var entries = new List<KeyValuePair<string, CompressedLayout.Entry>>();
        foreach (var item in items)
        {
            foreach (var p in item.Encoded.Parts) writer.Add($"{item.Name}.{p.Suffix}", p.DType, p.Shape, p.Data);
            entries.Add(new(item.Name, new CompressedLayout.Entry(item.Spec, item.DType, item.Shape, item.Encoded.Parts.Select(p => p.Suffix).ToList(),
                item.Encoded.Parameters ?? new Dictionary<string, string>())));
        }
        writer.AddMetadata(CompressedLayout.TensorsKey, CompressedLayout.SerializeEntries(entries)).Commit(cancellationToken);
    }
}
