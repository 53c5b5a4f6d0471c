using Nanoscale.Cli.Rendering;
using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Cli;

/// <summary>What the user sees when a verb fails (SPEC §15): errors about the input are one line with the library's
/// option names put as flags, exit code 1; anything else is a bug, shown with its trace and a request to report it.</summary>
public class ErrorContractTests
{
    public static TheoryData<Exception> InputErrors() =>
    [
        new CheckpointFormatException("m.safetensors", "layers.0.weight", 128, "expected 8 bytes, found 4"),
        new FormatSpecException("mxfp9", "unknown format 'mxfp9'"),
        new InvalidOptionException("TensorSelection.Include", "\"(\" is not a valid regular expression"),
        new InputException("m.safetensors is already a compressed checkpoint; decompress it first"),
        new NonFiniteValueException(3, float.NaN),
        new FileNotFoundException("m.safetensors: no such file or folder"),
        new UnauthorizedAccessException("Access to the path '/root/x' is denied."),
        new OperationCanceledException(),
    ];

    [Theory]
    [MemberData(nameof(InputErrors))]
    public void InputErrorsAreOneLineAndExitCodeOne(Exception e)
    {
        var failure = CliRunner.Failure.Of(e);
        Assert.Equal(1, failure.ExitCode);
        Assert.False(failure.IsBug);
        var line = Assert.Single(failure.StandardError);
        Assert.StartsWith("error: ", line);
        Assert.DoesNotContain('\n', line);
    }

    [Fact]
    public void LibraryOptionNamesBecomeFlags()
    {
        Assert.Equal("error: --include: \"(\" is not a valid regular expression",
            CliRunner.Failure.Of(new InvalidOptionException("TensorSelection.Include", "\"(\" is not a valid regular expression")).StandardError[0]);
        var nonFinite = new NonFiniteValueException(7, float.PositiveInfinity)
            .In("w", "m.safetensors", EncodeOptions.AllowNonFiniteName, $"use {EncodeOptions.AllowNonFiniteName} to store such blocks as NaN");
        Assert.Equal("error: m.safetensors: w: element 7 is Infinity; a checkpoint with non-finite weights is broken (use --allow-nonfinite to store such blocks as NaN)",
            CliRunner.Failure.Of(nonFinite).StandardError[0]);
        var tokenizer = new InputException($"no tokenizer beside m; give one with {ModelLoadOptions.TokenizerPathName}", ModelLoadOptions.TokenizerPathName);
        Assert.Equal("error: no tokenizer beside m; give one with --tokenizer", CliRunner.Failure.Of(tokenizer).StandardError[0]);
    }

    [Fact]
    public void EveryOptionNameTheLibraryUsesHasAFlag()
    {
        foreach (string name in new[] { EncodeOptions.AllowNonFiniteName, ModelLoadOptions.TokenizerPathName, ModelLoadOptions.KvCacheName, "TensorSelection.Include", "TensorSelection.Exclude", "DecompressOptions.DType" })
            Assert.True(CliRunner.Flags.ContainsKey(name), name);
    }

    [Fact]
    public void ABugShowsItsTraceAndAsksForAReport()
    {
        Exception bug;
        try { throw new InvalidOperationException("a tile was decoded twice"); }
        catch (InvalidOperationException e) { bug = e; }
        var failure = CliRunner.Failure.Of(bug);
        Assert.Equal(2, failure.ExitCode);
        Assert.True(failure.IsBug);
        Assert.Equal("error: internal error (InvalidOperationException): a tile was decoded twice", failure.StandardError[0]);
        Assert.Contains("   at ", failure.StandardError[1]);
        Assert.Contains("Please report it", failure.StandardError[^1]);
    }
}

/// <summary>The messages the reliability review found misleading (SPEC §15), each now saying what is wrong with which
/// argument, and the JSON contract kept even for a wrong command line.</summary>
public class MisleadingMessageTests
{
    [Fact]
    public void AFolderGivenAsTextIsNamedAsSuch()
    {
        var result = CliProcess.Run("eval", SharedData.Stories260K, "--text", Path.GetTempPath());
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("error: --text: ", result.Stderr);
        Assert.Contains("is a folder", result.Stderr);
    }

    [Fact]
    public void AWrongCommandLineWithJsonPrintsOneJsonObjectNotHelp()
    {
        var result = CliProcess.Run("compress", "--json");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--output", result.Json().GetProperty("error").GetString());
        Assert.DoesNotContain("Usage:", result.Stdout);
    }

    [Fact]
    public void ZeroRepeatsIsRefused()
    {
        var result = CliProcess.Run("bench", SharedData.Stories260K, "--repeats", "0");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--repeats must be at least 1", result.Stderr);
    }

    [Fact]
    public void AnExactRoundTripHasNoInfinityStringInJson()
    {
        using var dir = new TempDir();
        var result = CliProcess.Run("compress", SharedData.Stories260K, "-f", "lossless", "-o", dir.File("l.safetensors"), "--json");
        Assert.Equal(0, result.ExitCode);
        Assert.DoesNotContain("Infinity", result.Stdout);
        Assert.Equal(System.Text.Json.JsonValueKind.Null, result.Json().GetProperty("error").GetProperty("sqnr_db").ValueKind);
    }

    [Fact]
    public void AVocabularyTheTokenizerFileCannotHoldFailsBeforeAllocating()
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<CheckpointFormatException>(() =>
            Nanoscale.Runtime.Llama2cTokenizer.Load(SharedData.Tok512, vocabSize: 2_000_000_000));
        Assert.Contains("holds at most", e.Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 16 << 20, "no allocation sized by the declared vocabulary");
    }
}
