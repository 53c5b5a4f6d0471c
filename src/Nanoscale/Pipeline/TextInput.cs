using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>Reads the text files the verbs take (evaluation text, calibration text) with errors that name the option
/// and say what is wrong, before the text is trusted.</summary>
internal static class TextInput
{
    /// <summary>Largest text read whole (WikiText-2's test split is 1.3 MB).</summary>
    public const long MaxBytes = 1L << 30;

    /// <exception cref="InvalidOptionException">The path is a folder, missing, or too large.</exception>
    public static string Read(string path, string option)
    {
        if (Directory.Exists(path)) throw new InvalidOptionException(option, $"{path} is a folder; give a text file");
        if (!File.Exists(path)) throw new InvalidOptionException(option, $"{path}: no such file");
        long length = new FileInfo(path).Length;
        if (length > MaxBytes) throw new InvalidOptionException(option, $"{path} is {length} bytes; at most {MaxBytes} bytes of text are read");
        return File.ReadAllText(path);
    }
}
