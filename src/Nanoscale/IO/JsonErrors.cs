using System.Text.Json;

namespace Nanoscale.IO;

/// <summary>
/// Where a JSON document is broken, as a byte offset into it: <see cref="JsonException"/> reports a line number and a
/// byte position within that line, which alone reads like an offset and is not one.
/// </summary>
internal static class JsonErrors
{
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
