using Nanoscale.Tensors;

namespace Nanoscale.IO;

/// <summary>
/// The one place temporary files are named and removed. A file written under <see cref="Beside"/> and then moved over
/// its destination (<see cref="MoveTo"/>) is how every writer of Nanoscale commits a file: a crash or an error leaves
/// no file that looks complete at the destination, and disposing removes the temporary (SPEC §15).
/// </summary>
public sealed class TemporaryFile : IDisposable
{
    private bool _moved;

    private TemporaryFile(string path) => Path = path;

    /// <summary>The temporary's full path.</summary>
    public string Path { get; }

    /// <summary>A hidden name in the folder of <paramref name="destination"/> (created when missing), so the final
    /// rename stays on one file system: <c>.NAME.{guid}.{kind}</c>.</summary>
    public static TemporaryFile Beside(string destination, string kind = "partial")
    {
        string full = System.IO.Path.GetFullPath(destination);
        string folder = System.IO.Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(folder);
        return new TemporaryFile(System.IO.Path.Combine(folder, $".{System.IO.Path.GetFileName(full)}.{Guid.NewGuid():N}.{kind}"));
    }

    /// <summary>A fresh name <c>{prefix}-{guid}{extension}</c> in <paramref name="folder"/> (default: the system's
    /// temporary folder), for work files that never become outputs.</summary>
    public static TemporaryFile In(string? folder, string prefix, string extension)
    {
        folder ??= System.IO.Path.GetTempPath();
        Directory.CreateDirectory(folder);
        return new TemporaryFile(System.IO.Path.Combine(folder, $"{prefix}-{Guid.NewGuid():N}{extension}"));
    }

    /// <summary>Renames the finished temporary over <paramref name="destination"/>; disposing then deletes nothing.</summary>
    public void MoveTo(string destination)
    {
        // The last line of defence (OutputGuard checks first): a rename would replace a device or a link, not write to it.
        if (new FileInfo(destination).LinkTarget is not null || FileIdentity.KindOf(destination) is FileIdentity.Kind.Folder or FileIdentity.Kind.Other)
            throw new InputException($"{destination} is not a regular file or a new name; it is left as it is");
        File.Move(Path, destination, overwrite: true);
        _moved = true;
    }

    public void Dispose()
    {
        if (!_moved) TryDelete(Path);
    }

    /// <summary>Deletes a file if it can; a file that is already gone or locked is left to the system.</summary>
    public static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>A temporary folder <c>{prefix}-{guid}</c>, removed with its contents when disposed.</summary>
public sealed class TemporaryFolder : IDisposable
{
    private TemporaryFolder(string path) => Path = path;

    public string Path { get; }

    /// <summary>Creates the folder in <paramref name="parent"/> (default: the system's temporary folder).</summary>
    public static TemporaryFolder Create(string prefix, string? parent = null)
    {
        var path = System.IO.Path.Combine(parent ?? System.IO.Path.GetTempPath(), $"{prefix}-{Guid.NewGuid().ToString("N")[..12]}");
        Directory.CreateDirectory(path);
        return new TemporaryFolder(path);
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
