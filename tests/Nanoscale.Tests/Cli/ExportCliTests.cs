using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Cli;

/// <summary><c>nanoscale export</c> end to end: GGUF out, read back by every verb, and its errors.</summary>
public class ExportCliTests
{
    [Fact]
    public void ExportThenEvalAndCompressTheGguf()
    {
        using var dir = new TempDir();
        var gguf = dir.File("stories.gguf");
        var export = CliProcess.Run("export", SharedData.Stories260K, "--type", "q8_0", "-o", gguf, "--json");
        Assert.True(export.ExitCode == 0, export.Stderr);
        var json = export.Json();
        Assert.Equal("llama", json.GetProperty("vocabulary").GetString());
        Assert.Equal(5, json.GetProperty("tensors").EnumerateArray().Count(t => t.GetProperty("fallback").ValueKind == System.Text.Json.JsonValueKind.String));

        var eval = CliProcess.Run("eval", gguf, "--text", SharedData.TinyStoriesText, "--tokenizer", SharedData.Tok512, "--json");
        Assert.True(eval.ExitCode == 0, eval.Stderr);

        var requantized = dir.File("nxfp4");
        var compress = CliProcess.Run("compress", gguf, "-f", "nxfp4", "-o", requantized, "--tokenizer", SharedData.Tok512);
        Assert.True(compress.ExitCode == 0, compress.Stderr);
        Assert.True(File.Exists(Path.Combine(requantized, "model.safetensors")));
        Assert.Equal([requantized], Directory.GetDirectories(dir.Path)); // the decoded work folder is gone
    }

    [Fact]
    public void BadExportsSayWhatIsWrong()
    {
        using var dir = new TempDir();
        var notGguf = CliProcess.Run("export", SharedData.Stories260K, "-o", dir.File("model.safetensors"));
        Assert.Equal(1, notGguf.ExitCode);
        Assert.Contains("*.gguf", notGguf.Stderr);

        var badType = CliProcess.Run("export", SharedData.Stories260K, "--type", "q3_k", "-o", dir.File("x.gguf"));
        Assert.Equal(1, badType.ExitCode);
        Assert.Contains("q3_k", badType.Stderr);

        // GPT-2's attention weights are no model llama.cpp's llama architecture can hold.
        var noModel = CliProcess.Run("export", SharedData.Gpt2Attn, "-o", dir.File("gpt2.gguf"));
        Assert.Equal(1, noModel.ExitCode);
        Assert.Contains("architecture", noModel.Stderr);
        Assert.Empty(Directory.GetFiles(dir.Path));
    }
}
