namespace Nanoscale.Tests.Support;

/// <summary>Locates the read-only real data in <c>../shared/data</c> (beside the repository root).</summary>
internal static class SharedData
{
    private static readonly Lazy<string> Root = new(FindRoot);

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root.Value, .. parts]);

    public static string Stories260K => Path("models", "stories260K", "stories260K.bin");
    public static string Tok512 => Path("models", "stories260K", "tok512.bin");
    public static string Gpt2Attn => Path("models", "gpt2-attn", "gpt2-attn.bf16.safetensors");
    public static string TinyStoriesText => Path("text", "tinystories-sample.txt");
    public static string WikiText2 => Path("text", "wikitext2-test.raw");

    private static string FindRoot()
    {
        // Walk up from the test binary until a folder has shared/data beside the repository.
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = System.IO.Path.Combine(dir.FullName, "shared", "data");
            if (File.Exists(System.IO.Path.Combine(candidate, "SHA256SUMS")))
                return candidate;
        }
        throw new DirectoryNotFoundException(
            $"../shared/data not found above {AppContext.BaseDirectory}; tests need the real data beside the repository.");
    }
}
