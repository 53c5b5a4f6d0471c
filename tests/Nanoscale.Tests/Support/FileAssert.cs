namespace Nanoscale.Tests.Support;

/// <summary>Byte-for-byte comparison of what two runs wrote.</summary>
internal static class FileAssert
{
    /// <summary>Two files with the same bytes, or two folders with the same file names and each file's bytes equal.</summary>
    public static void SameBytes(string expected, string actual)
    {
        if (File.Exists(expected))
        {
            Assert.True(File.ReadAllBytes(expected).AsSpan().SequenceEqual(File.ReadAllBytes(actual)), $"{actual} differs from {expected}");
            return;
        }
        var names = Directory.GetFiles(expected).Select(Path.GetFileName).Order().ToList();
        Assert.Equal(names, Directory.GetFiles(actual).Select(Path.GetFileName).Order().ToList());
        foreach (var name in names)
            Assert.True(File.ReadAllBytes(Path.Combine(expected, name!)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(actual, name!))), $"{name} differs");
    }
}
