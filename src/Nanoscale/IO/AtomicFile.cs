namespace Nanoscale.IO;

/// <summary>Small files written under a temporary name and renamed, so a crash never leaves a half-written file.</summary>
internal static class AtomicFile
{
    public static void WriteAllText(string path, string contents)
    {
        using var temporary = TemporaryFile.Beside(path);
        File.WriteAllText(temporary.Path, contents);
        temporary.MoveTo(path);
    }
}
