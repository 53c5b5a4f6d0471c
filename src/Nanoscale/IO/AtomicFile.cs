namespace Nanoscale.IO;

/// <summary>Small files written under a temporary name and renamed, so a crash never leaves a half-written file.</summary>
public static class AtomicFile
{
    public static void WriteAllText(string path, string contents)
    {
        var temporary = $"{path}.{Guid.NewGuid():N}.partial";
        try
        {
            File.WriteAllText(temporary, contents);
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(temporary); } catch (IOException) { }
            throw;
        }
    }
}
