using Nanoscale.Cli.Rendering;
using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;

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
        foreach (string name in new[] { EncodeOptions.AllowNonFiniteName, ModelLoadOptions.TokenizerPathName, "TensorSelection.Include", "TensorSelection.Exclude", "DecompressOptions.DType" })
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
