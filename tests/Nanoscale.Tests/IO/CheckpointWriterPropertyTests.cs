using System.Text.Json;
using CsCheck;
using Nanoscale.IO;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.IO;

/// <summary>
/// Properties of a model folder written with any tensor sizes and any shard limit: every tensor reads back with its
/// bytes, in order; the tensors of one group (an encoded tensor's parts) share a shard; a shard holds at most the limit
/// of tensor bytes unless it holds a single group; the index names every tensor once; nothing else is left behind.
/// Shards after the first are written as they fill, before the commit; a writer disposed uncommitted leaves nothing.
/// </summary>
public class CheckpointWriterPropertyTests
{
    [Fact]
    public void AnyTensorsAndAnyLimitGiveAFolderThatReadsBackExactly()
    {
        // Groups of 1–3 tensors of 1–3000 bytes each; a limit from 1 byte to 20 kB.
        var groups = Gen.Int[1, 3000].Array[1, 3].Array[1, 12];
        Gen.Select(groups, Gen.Int[1, 20_000]).Sample((sizes, limit) =>
        {
            using var dir = new TempDir();
            var folder = dir.File("model");
            var writer = CheckpointWriter.ToFolder(folder, limit).WithChecksums().AddMetadata("k", "v");
            var expected = new List<(string Name, byte[] Bytes, int Group)>();
            int shardsBeforeCommit = 0;
            for (int g = 0; g < sizes.Length; g++)
            {
                var parts = new List<CheckpointWriter.Part>();
                for (int t = 0; t < sizes[g].Length; t++)
                {
                    var bytes = new byte[sizes[g][t]];
                    new Random(g * 31 + t).NextBytes(bytes);
                    string name = $"g{g}.t{t}";
                    expected.Add((name, bytes, g));
                    parts.Add(new(name, DType.U8, [bytes.Length], bytes));
                }
                // Single tensors given as writers (a copy from the source), groups in memory (an encoded tensor's parts).
                if (parts.Count == 1 && g % 2 == 0)
                {
                    var bytes = parts[0].Data.ToArray();
                    writer.Add(parts[0].Name, DType.U8, [bytes.Length], stream => stream.Write(bytes));
                }
                else writer.AddGroup(parts);
                shardsBeforeCommit = writer.ShardsWritten;
            }
            writer.Commit();
            Assert.Equal(Math.Max(0, writer.TensorFiles.Count - 2), shardsBeforeCommit); // all but the first and the last

            Assert.Equal(["model"], Directory.GetFileSystemEntries(dir.Path).Select(Path.GetFileName)); // no staging or temporaries left
            using var checkpoint = CheckpointLoader.Open(folder);
            Assert.Equal(expected.Select(e => e.Name), checkpoint.Tensors.Select(t => t.Name));
            foreach (var (name, bytes, _) in expected)
            {
                using var view = checkpoint.Map(checkpoint.Find(name)!);
                Assert.Equal(bytes, view.Bytes.ToArray());
            }
            Assert.True(checkpoint.Verify().Ok);
            Assert.Contains(checkpoint.Metadata, m => m.Key == "k" && m.Value == "v");

            var shardOf = writer.TensorFiles.Count == 1
                ? expected.ToDictionary(e => e.Name, _ => "model.safetensors")
                : JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, CheckpointLoader.IndexFileName))).RootElement
                    .GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
            Assert.Equal(expected.Count, shardOf.Count);
            foreach (var group in expected.GroupBy(e => e.Group))
                Assert.Single(group.Select(e => shardOf[e.Name]).Distinct());
            foreach (var shard in expected.GroupBy(e => shardOf[e.Name]))
                Assert.True(shard.Sum(e => (long)e.Bytes.Length) <= limit || shard.Select(e => e.Group).Distinct().Count() == 1,
                    $"{shard.Key}: {shard.Sum(e => e.Bytes.Length)} bytes of {shard.Select(e => e.Group).Distinct().Count()} groups over a limit of {limit}");
        }, iter: 60);
    }

    [Fact]
    public void AWriterDisposedWithoutCommitLeavesNothing()
    {
        using var dir = new TempDir();
        using (var writer = CheckpointWriter.ToFolder(dir.File("model"), 100))
            for (int g = 0; g < 5; g++)
                writer.AddGroup([new($"t{g}", DType.U8, [80], new byte[80])]);
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
        using (var writer = CheckpointWriter.ToFile(dir.File("one.safetensors")))
            writer.AddGroup([new("t", DType.U8, [80], new byte[80])]);
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }
}
