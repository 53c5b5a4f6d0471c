using System.Globalization;

namespace Nanoscale.Benchmarks;

/// <summary>Peak resident memory of this process (Linux) and the command-line helpers the streaming benchmarks share.</summary>
internal static class ProcessMemory
{
    /// <summary>VmHWM from /proc/self/status: the peak resident set, file-backed mapped pages included.</summary>
    public static long PeakRssBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        return -1;
    }

    /// <summary>Writing "5" to /proc/self/clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).</summary>
    public static void ResetPeakRss()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>The value after <paramref name="name"/> in <paramref name="args"/>, or null.</summary>
    public static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
