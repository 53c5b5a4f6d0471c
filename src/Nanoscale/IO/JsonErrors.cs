using System.Text.Json;

namespace Nanoscale.IO;

/// <summary>
/// Where a JSON document is broken, as a byte offset into it: <see cref="JsonException"/> reports a line number and a
/// byte position within that line, which alone reads like an offset and is not one. <see cref="Parse"/> is the one
/// way a JSON file from a model folder is parsed.
/// </summary>
internal static class JsonErrors
{
    /// <summary>
    /// Parses the bytes of a JSON file: invalid UTF-8 anywhere (which <see cref="JsonDocument"/> only notices when a
    /// string is read, as an <see cref="InvalidOperationException"/> — found by fuzzing the sharded index) and invalid
    /// JSON are located errors naming the file and the byte offset.
    /// </summary>
    /// <exception cref="CheckpointFormatException">Not UTF-8, or not JSON.</exception>
    public static JsonDocument Parse(string path, byte[] bytes, JsonDocumentOptions options = default, string? where = null, long start = 0)
    {
        if (!System.Text.Unicode.Utf8.IsValid(bytes))
        {
            int at = 0;
            while (System.Text.Rune.DecodeFromUtf8(bytes.AsSpan(at), out _, out int consumed) == System.Buffers.OperationStatus.Done) at += consumed;
            throw new CheckpointFormatException(path, where, start + at, "not valid UTF-8 (JSON files are UTF-8 text)");
        }
        try { return JsonDocument.Parse(bytes, options); }
        catch (JsonException e) { throw Invalid(path, bytes, e, where, start); }
    }

    /// <summary>The offset of the error in <paramref name="json"/>; null when the exception does not say.</summary>
    public static long? Offset(ReadOnlySpan<byte> json, JsonException e)
    {
        if (e.LineNumber is not long line || e.BytePositionInLine is not long inLine) return null;
        long start = 0;
        for (long l = 0; l < line; l++)
        {
            int next = json[(int)Math.Min(start, json.Length)..].IndexOf((byte)'\n');
            if (next < 0) return null;
            start += next + 1;
        }
        return start + inLine;
    }

    /// <summary>The exception's reason without its own "LineNumber: … | BytePositionInLine: …" suffix.</summary>
    public static string Reason(JsonException e)
    {
        string message = e.Message;
        int at = message.IndexOf(" LineNumber:", StringComparison.Ordinal);
        return (at > 0 ? message[..at] : message).TrimEnd('.', ' ');
    }

    /// <summary>A located error for a file whose bytes are <paramref name="json"/> (offsets relative to <paramref name="start"/>).</summary>
    public static CheckpointFormatException Invalid(string path, ReadOnlySpan<byte> json, JsonException e, string? where = null, long start = 0)
    {
        long? offset = Offset(json, e);
        string line = e.LineNumber is long l ? $" (line {l + 1})" : "";
        return new CheckpointFormatException(path, where, offset is null ? null : start + offset, $"not valid JSON{line}: {Reason(e)}", e);
    }

    /// <summary>As <see cref="Invalid(string, ReadOnlySpan{byte}, JsonException, string?, long)"/>, reading the file again
    /// (only on the error path, for files already bounded in size).</summary>
    public static CheckpointFormatException Invalid(string path, JsonException e)
    {
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (IOException) { bytes = []; }
        catch (UnauthorizedAccessException) { bytes = []; }
        return Invalid(path, bytes, e);
    }
}
