using System.Buffers.Binary;
using System.Text;

namespace Nanoscale.Tests.Support;

/// <summary>Builds safetensors files by hand (any header text, any data), so tests can plant every kind of damage.</summary>
internal static class SafetensorsBytes
{
    public static byte[] Build(string headerJson, byte[] data, ulong? declaredHeaderLength = null)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        var file = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, declaredHeaderLength ?? (ulong)header.Length);
        header.CopyTo(file, 8);
        data.CopyTo(file, 8 + header.Length);
        return file;
    }

    /// <summary>A valid two-tensor file: a F32 [2,3] then a BF16 [4].</summary>
    public static string ValidHeader =>
        """{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}}""";

    public static byte[] ValidData => Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
}
