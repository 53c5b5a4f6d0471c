using Nanoscale.Tensors;

using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Nanoscale.IO;

/// <summary>
/// The one place temporary files are named and removed. A file written under <see cref="Beside"/> and then moved over
/// its destination (<see cref="MoveTo"/>) is how every writer of Nanoscale commits a file: a crash or an error leaves
/// no file that looks complete at the destination, and disposing removes the temporary (SPEC §15).
/// </summary>
/// <remarks>
/// Every temporary's name carries the id of the process that made it: <c>….ns{pid}-{guid}.{kind}</c>. A process
/// killed outright (<c>kill -9</c>, a lost node) cannot clean up, so whoever creates a temporary in a folder first
/// removes the temporaries there whose process is gone (<see cref="RemoveStale"/>; <c>nanoscale clean</c> does the
/// same on request). A temporary of a live process is never touched.
/// </remarks>
public sealed partial class TemporaryFile : IDisposable
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
        RemoveStale(folder);
        return new TemporaryFile(System.IO.Path.Combine(folder, $".{System.IO.Path.GetFileName(full)}{Tag()}.{kind}"));
    }

    /// <summary>A fresh name <c>{prefix}.ns{pid}-{guid}{extension}</c> in <paramref name="folder"/> (default: the
    /// system's temporary folder), for work files that never become outputs.</summary>
    public static TemporaryFile In(string? folder, string prefix, string extension)
    {
        folder ??= System.IO.Path.GetTempPath();
        Directory.CreateDirectory(folder);
        RemoveStale(folder);
        return new TemporaryFile(System.IO.Path.Combine(folder, $"{prefix}{Tag()}{extension}"));
    }

    /// <summary>The part of a temporary's name that says who made it: <c>.ns{pid}-{guid}</c>.</summary>
    internal static string Tag() => $".ns{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}-{Guid.NewGuid():N}";

    /// <summary>The temporaries in <paramref name="folder"/> (files and folders, not below it) whose process is gone.</summary>
    public static IReadOnlyList<string> FindStale(string folder)
    {
        if (!Directory.Exists(folder)) return [];
        var stale = new List<string>();
        IEnumerable<string> entries;
        try { entries = Directory.EnumerateFileSystemEntries(folder, "*.ns*-*").ToList(); }
        catch (IOException) { return []; }
        catch (UnauthorizedAccessException) { return []; }
        foreach (string entry in entries)
        {
            var match = TagPattern().Match(System.IO.Path.GetFileName(entry));
            if (match.Success && int.TryParse(match.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && !IsAlive(pid))
                stale.Add(entry);
        }
        return stale;
    }

    /// <summary>Removes the stale temporaries of <paramref name="folder"/> (<see cref="FindStale"/>) and returns them.</summary>
    public static IReadOnlyList<string> RemoveStale(string folder)
    {
        var removed = new List<string>();
        foreach (string entry in FindStale(folder))
        {
            try
            {
                if (Directory.Exists(entry)) Directory.Delete(entry, recursive: true);
                else File.Delete(entry);
                removed.Add(entry);
            }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
        }
        return removed;
    }

    private static bool IsAlive(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        try
        {
            using var process = Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException) { return false; }      // no such process
        catch (InvalidOperationException) { return false; }
    }

    [GeneratedRegex(@"\.ns(\d+)-[0-9a-f]{32}(\.|$)")]
    private static partial Regex TagPattern();

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
        parent ??= System.IO.Path.GetTempPath();
        TemporaryFile.RemoveStale(parent);
        var path = System.IO.Path.Combine(parent, $"{prefix}{TemporaryFile.Tag()}");
        Directory.CreateDirectory(path);
        return new TemporaryFolder(path);
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
