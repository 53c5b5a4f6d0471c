using System.Runtime.InteropServices;

namespace Nanoscale.IO;

/// <summary>
/// What a path is on disk, from <c>stat(2)</c>: the (device, inode) pair that identifies a file whatever name reaches
/// it — a symbolic link, <c>..</c> or a hard link — and whether it is a regular file, a folder or something else
/// (a device, a FIFO, a socket). .NET exposes neither, so this asks libc on Linux; elsewhere the identity falls back to
/// the resolved path and every existing non-folder counts as a regular file.
/// </summary>
internal static partial class FileIdentity
{
    public enum Kind { Missing, Regular, Folder, Other }

    /// <summary>The kind of what <paramref name="path"/> names, following symbolic links.</summary>
    public static Kind KindOf(string path)
    {
        if (Stat(path) is { } s)
            return (s.Mode & 0xF000) switch { 0x8000 => Kind.Regular, 0x4000 => Kind.Folder, _ => Kind.Other };
        return Directory.Exists(path) ? Kind.Folder : File.Exists(path) ? Kind.Regular : Kind.Missing;
    }

    /// <summary>True when both paths name the same file (the same inode), or, without <c>stat</c>, the same resolved path.</summary>
    public static bool Same(string a, string b)
    {
        if (Stat(a) is { } x && Stat(b) is { } y) return x.Device == y.Device && x.Inode == y.Inode;
        return string.Equals(Resolve(a), Resolve(b), StringComparison.Ordinal);
    }

    /// <summary>The full path with every symbolic link along it resolved (for messages and folder comparisons).</summary>
    public static string Resolve(string path)
    {
        var full = Path.GetFullPath(path);
        try
        {
            var info = new FileInfo(full);
            if (info.LinkTarget is not null && info.ResolveLinkTarget(returnFinalTarget: true) is { } target) return target.FullName;
            var parent = Path.GetDirectoryName(full);
            if (parent is not null && parent != full)
                return Path.Combine(Resolve(parent), Path.GetFileName(full));
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return full;
    }

    private readonly record struct StatResult(ulong Device, ulong Inode, uint Mode);

    private static unsafe StatResult? Stat(string path)
    {
        if (!OperatingSystem.IsLinux()) return null;
        // struct stat starts with st_dev and st_ino (8 bytes each) on every 64-bit Linux ABI; st_mode follows st_nlink
        // (8 bytes) on x86-64 and comes right after st_ino on arm64 (generic layout).
        int modeOffset = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 24,
            Architecture.Arm64 => 16,
            _ => -1,
        };
        if (modeOffset < 0) return null;
        byte* buffer = stackalloc byte[512];
        try
        {
            if (StatNative(path, buffer) != 0) return null;
        }
        catch (EntryPointNotFoundException) { return null; }
        catch (DllNotFoundException) { return null; }
        return new StatResult(*(ulong*)buffer, *(ulong*)(buffer + 8), *(uint*)(buffer + modeOffset));
    }

    [LibraryImport("libc", EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static unsafe partial int StatNative(string path, byte* buffer);
}
