using System.Buffers.Binary;
using System.Text.Json;

namespace Nanoscale.Benchmarks;

/// <summary>The BF16 attention weights of gpt2-attn, concatenated (read with a few lines, no IO dependency).</summary>
internal static class LosslessData
{
    private static readonly Lazy<byte[]> Gpt2 = new(LoadGpt2AttnBf16);

    public static byte[] Gpt2AttnBf16 => Gpt2.Value;

    public static string FindShared(params string[] parts)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "shared", "data");
            if (File.Exists(Path.Combine(candidate, "SHA256SUMS"))) return Path.Combine([candidate, .. parts]);
        }
        throw new DirectoryNotFoundException("shared/data not found above " + AppContext.BaseDirectory);
    }

    private static byte[] LoadGpt2AttnBf16()
    {
        var file = File.ReadAllBytes(FindShared("models", "gpt2-attn", "gpt2-attn.bf16.safetensors"));
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(file);
        using var json = JsonDocument.Parse(file.AsMemory(8, (int)headerLength));
        using var all = new MemoryStream();
        foreach (var entry in json.RootElement.EnumerateObject())
        {
            if (entry.Name == "__metadata__" || entry.Value.GetProperty("dtype").GetString() != "BF16") continue;
            var offsets = entry.Value.GetProperty("data_offsets");
            long begin = 8 + headerLength + offsets[0].GetInt64(), end = 8 + headerLength + offsets[1].GetInt64();
            all.Write(file, (int)begin, (int)(end - begin));
        }
        return all.ToArray();
    }
}
