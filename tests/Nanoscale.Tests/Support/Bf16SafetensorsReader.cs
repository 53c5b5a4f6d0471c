using System.Buffers.Binary;
using System.Text.Json;

namespace Nanoscale.Tests.Support;

/// <summary>
/// Minimal safetensors reader for tests of the formats, so they do not depend on the IO code: 8-byte LE header
/// length, JSON header, <c>data_offsets</c> relative to 8 + headerLength, BF16 → float by <c>u16 &lt;&lt; 16</c>.
/// </summary>
internal static class Bf16SafetensorsReader
{
    public sealed record Tensor(string Name, int[] Shape, float[] Values)
    {
        public int Cols => Shape[^1];
        public int Rows => Values.Length / Cols;
    }

    /// <summary>BF16 tensors of the file whose names match <paramref name="filter"/>, in header order.</summary>
    public static List<Tensor> ReadBf16(string path, Func<string, bool> filter)
    {
        byte[] file = File.ReadAllBytes(path);
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(file);
        using JsonDocument header = JsonDocument.Parse(file.AsMemory(8, (int)headerLength));
        var result = new List<Tensor>();
        foreach (JsonProperty p in header.RootElement.EnumerateObject())
        {
            if (p.Name == "__metadata__" || p.Value.GetProperty("dtype").GetString() != "BF16" || !filter(p.Name))
                continue;
            int[] shape = [.. p.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32())];
            long begin = p.Value.GetProperty("data_offsets")[0].GetInt64(), end = p.Value.GetProperty("data_offsets")[1].GetInt64();
            var values = new float[(end - begin) / 2];
            long offset = 8 + headerLength + begin;
            for (int i = 0; i < values.Length; i++)
                values[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(file.AsSpan((int)(offset + 2 * i))) << 16);
            result.Add(new Tensor(p.Name, shape, values));
        }
        return result;
    }
}
