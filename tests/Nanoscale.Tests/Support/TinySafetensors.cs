using System.Buffers.Binary;
using System.Text.Json;

namespace Nanoscale.Tests.Support;

/// <summary>
/// A few lines that read a whole safetensors file into memory (8-byte LE header length, JSON header, data offsets
/// relative to 8 + header length), so codec tests need nothing from the IO folder.
/// </summary>
internal static class TinySafetensors
{
    public sealed record Tensor(string Name, string DType, long[] Shape, byte[] Data);

    public static List<Tensor> Read(string path)
    {
        var file = File.ReadAllBytes(path);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(file);
        using var json = JsonDocument.Parse(file.AsMemory(8, (int)headerLength));
        var tensors = new List<Tensor>();
        foreach (var entry in json.RootElement.EnumerateObject())
        {
            if (entry.Name == "__metadata__") continue;
            var offsets = entry.Value.GetProperty("data_offsets");
            long begin = 8 + headerLength + offsets[0].GetInt64(), end = 8 + headerLength + offsets[1].GetInt64();
            var shape = entry.Value.GetProperty("shape").EnumerateArray().Select(x => x.GetInt64()).ToArray();
            tensors.Add(new Tensor(entry.Name, entry.Value.GetProperty("dtype").GetString()!, shape, file[(int)begin..(int)end]));
        }
        return tensors;
    }

    private static readonly Lazy<List<Tensor>> Gpt2 = new(() => Read(SharedData.Gpt2Attn));

    /// <summary>The BF16 attention weights of gpt2-attn, cached for the test run.</summary>
    public static IReadOnlyList<Tensor> Gpt2AttnBf16 => Gpt2.Value.Where(t => t.DType == "BF16").ToList();

    /// <summary>stories260K.bin: a 28-byte llama2.c header, then fp32 weights.</summary>
    public static byte[] Stories260KWeights()
    {
        var file = File.ReadAllBytes(SharedData.Stories260K);
        int length = (file.Length - 28) & ~3;
        return file[28..(28 + length)];
    }
}
