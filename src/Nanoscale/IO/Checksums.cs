using System.Buffers.Binary;
using System.Globalization;
using System.IO.Hashing;
using System.Text;
using System.Text.Json;
using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// The integrity record of a safetensors file Nanoscale writes (SPEC §15): under the metadata key
/// <see cref="Key"/>, a JSON object mapping every tensor name — and <c>__metadata__</c> — to the 64-bit XxHash3 of what
/// it stores, as 16 lowercase hex digits. A tensor's hash covers its header entry (name, dtype, shape, data offset)
/// and every data byte, so a flipped bit anywhere in the data, or a changed dtype, shape, offset or name, shows; the
/// <c>__metadata__</c> hash covers every other metadata entry (key and value, in file order), so a changed codec or
/// config in the container table shows too. Files without the key (written by other tools) are read unchecked.
/// </summary>
internal static class Checksums
{
    public const string Key = "nanoscale.xxh3";

    public const string MetadataEntry = "__metadata__";

    /// <summary>A hash of the right length for every name, written first so the header's length is final before
    /// the data is hashed.</summary>
    public const ulong Placeholder = 0;

    /// <summary>Starts the hash of one tensor: its header entry.</summary>
    public static XxHash3 BeginTensor(string name, DType dtype, IReadOnlyList<long> shape, long dataBegin)
    {
        var hash = new XxHash3();
        hash.Append(Encoding.UTF8.GetBytes(name));
        hash.Append([0]);
        hash.Append(Encoding.UTF8.GetBytes(dtype.Name()));
        Span<byte> number = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(number, shape.Count);
        hash.Append(number);
        foreach (long d in shape)
        {
            BinaryPrimitives.WriteInt64LittleEndian(number, d);
            hash.Append(number);
        }
        BinaryPrimitives.WriteInt64LittleEndian(number, dataBegin);
        hash.Append(number);
        return hash;
    }

    /// <summary>The hash of the metadata entries other than <see cref="Key"/>, in order.</summary>
    public static ulong OfMetadata(IEnumerable<KeyValuePair<string, string>> metadata)
    {
        var hash = new XxHash3();
        foreach (var (key, value) in metadata)
        {
            if (key == Key) continue;
            hash.Append(Encoding.UTF8.GetBytes(key));
            hash.Append([0]);
            hash.Append(Encoding.UTF8.GetBytes(value));
            hash.Append([0]);
        }
        return hash.GetCurrentHashAsUInt64();
    }

    public static string Hex(ulong hash) => hash.ToString("x16", CultureInfo.InvariantCulture);

    /// <summary>The record's JSON: names in the given order, each with its hash.</summary>
    public static string Serialize(IEnumerable<KeyValuePair<string, ulong>> hashes)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            foreach (var (name, hash) in hashes) json.WriteString(name, Hex(hash));
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>The metadata key under which Nanoscale writes its writer's version.</summary>
    public const string VersionKey = "nanoscale.version";

    /// <summary>Every file whose <see cref="VersionKey"/> is this version or later carries a record.</summary>
    public static readonly Version RequiredSince = new(0, 2, 0);

    /// <summary>Reads a record; null when the file has none and was not written by a Nanoscale that always writes one.</summary>
    /// <exception cref="CheckpointFormatException">The record is malformed, or missing from a file that must have one
    /// (a damaged byte in its key hides it).</exception>
    public static Dictionary<string, ulong>? Read(string path, IReadOnlyList<KeyValuePair<string, string>> metadata)
    {
        var text = metadata.FirstOrDefault(m => m.Key == Key).Value;
        if (text is null)
        {
            var version = metadata.FirstOrDefault(m => m.Key == VersionKey).Value;
            if (version is not null && (!Version.TryParse(version, out var v) || v >= RequiredSince))
                throw new CheckpointFormatException(path, $"__metadata__.{Key}", 8,
                    $"the integrity record is missing, but {VersionKey} {version} always writes one: the header is damaged");
            return null;
        }
        try
        {
            using var document = JsonDocument.Parse(text);
            var result = new Dictionary<string, ulong>(StringComparer.Ordinal);
            foreach (var entry in document.RootElement.EnumerateObject())
            {
                var hex = entry.Value.GetString();
                // Exactly as written (16 lowercase hex digits), so that no change to the record goes unseen.
                if (hex is not { Length: 16 } || !hex.All(c => c is (>= '0' and <= '9') or (>= 'a' and <= 'f'))
                    || !ulong.TryParse(hex, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out ulong value))
                    throw new CheckpointFormatException(path, $"__metadata__.{Key}.{entry.Name}", 8, $"'{hex}' is not 16 lowercase hex digits");
                result[entry.Name] = value;
            }
            return result;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new CheckpointFormatException(path, $"__metadata__.{Key}", 8, $"malformed checksum record ({e.Message})", e);
        }
    }
}
