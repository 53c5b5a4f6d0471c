using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// Reads the text files the verbs take (evaluation text, calibration text) with errors that name the option and say
/// what is wrong, before the text is trusted. Text as users have it: a UTF-8 byte-order mark is dropped and CRLF and lone
/// CR line endings become LF, so the same text saved on Windows scores the same (docs/tokenizers.md).
/// </summary>
internal static class TextInput
{
    /// <summary>Largest text read whole (WikiText-2's test split is 1.3 MB).</summary>
    public const long MaxBytes = 1L << 30;

    /// <summary>The text, normalised (see the class remarks).</summary>
    /// <exception cref="InvalidOptionException">The path is a folder, missing, or too large.</exception>
    public static string Read(string path, string option)
    {
        string text = System.Text.Encoding.UTF8.GetString(ReadBytes(path, option));
        if (text.StartsWith('\uFEFF')) text = text[1..];
        return text.Replace("\r\n", "\n", StringComparison.Ordinal).Replace('\r', '\n');
    }

    /// <summary>The file's bytes exactly.</summary>
    /// <exception cref="InvalidOptionException">The path is a folder, missing, or too large.</exception>
    public static byte[] ReadBytes(string path, string option)
    {
        if (Directory.Exists(path)) throw new InvalidOptionException(option, $"{path} is a folder; give a text file");
        if (!File.Exists(path)) throw new InvalidOptionException(option, $"{path}: no such file");
        long length = new FileInfo(path).Length;
        if (length > MaxBytes) throw new InvalidOptionException(option, $"{path} is {length} bytes; at most {MaxBytes} bytes of text are read");
        return File.ReadAllBytes(path);
    }
}
