using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>Zero-shot multiple-choice accuracy (<c>eval --tasks</c>): encoding as lm-evaluation-harness does, scores
/// consistent with perplexity, accuracy well above chance on a trained model, and located errors for bad items.</summary>
public class MultipleChoiceTests
{
    private static LlamaModel Model => LlamaModelTests.Stories260K.Value;

    private static ITokenizer Tokenizer => LlamaModelTests.Tok512.Value;

    [Fact]
    public void TheContinuationIsWhatTheChoiceAddsToTheContextsTokensAndTrailingSpacesMoveToIt()
    {
        var (sequence, continuation) = MultipleChoice.Encode(Tokenizer, "Once upon a time, there was a little ", "girl", 512);
        var whole = Tokenizer.Encode("Once upon a time, there was a little girl", addBos: true);
        Assert.Equal(whole, sequence);
        int shared = Tokenizer.Encode("Once upon a time, there was a little", addBos: true).Length;
        Assert.Equal(whole.Length - shared, continuation);

        var (longSequence, longContinuation) = MultipleChoice.Encode(Tokenizer, string.Concat(Enumerable.Repeat("the cat sat. ", 200)), "dog", 64);
        Assert.Equal(64, longSequence.Length); // a context longer than the model keeps its end
        Assert.True(longContinuation is > 0 and < 64);
    }

    [Fact]
    public void AChoicesLogLikelihoodIsMinusThePerplexityNllOfItsTokens()
    {
        const string story = "Once upon a time, there was a little girl named Lily. She loved to play outside.";
        var result = MultipleChoice.Evaluate(Model, Tokenizer, [new ChoiceItem("", [story, "x"], 0)]);
        var tokens = Tokenizer.Encode(story, addBos: true);
        var perplexity = Perplexity.Evaluate(Model, [tokens]);
        Assert.Equal(-perplexity.MeanNll * perplexity.PredictedTokens, result.Scores[0].LogLikelihoods[0], 9);
    }

    [Fact]
    public void TheTrainedModelScoresFarAboveChanceOnClozeItemsFromItsKindOfText()
    {
        using var dir = new TempDir();
        var tasks = dir.File("tasks.jsonl");
        MakeTasks(tasks, items: 40);
        var result = MultipleChoice.Evaluate(Model, Tokenizer, TaskFile.Read(tasks));
        Assert.Equal(40, result.Items);
        Assert.True(result.Accuracy >= 0.7, $"accuracy {result.Accuracy} (chance 0.25)");
        double expectedStderr = Math.Sqrt(result.Accuracy * (1 - result.Accuracy) / (result.Items - 1));
        Assert.Equal(expectedStderr, result.AccuracyStderr, 12);
        Assert.All(result.Scores, s => Assert.Equal(4, s.LogLikelihoods.Length));
    }

    [Fact]
    public void EvalTasksWorksFromTheCliAndCompressionCostsAccuracy()
    {
        using var dir = new TempDir();
        var tasks = dir.File("tasks.jsonl");
        MakeTasks(tasks, items: 40);
        var original = CliProcess.Run("eval", SharedData.Stories260K, "--tasks", tasks, "--json");
        Assert.True(original.ExitCode == 0, original.Stderr);
        var json = original.Json();
        Assert.Equal(System.Text.Json.JsonValueKind.Null, json.GetProperty("perplexity").ValueKind);
        double accuracy = json.GetProperty("tasks").GetProperty("accuracy").GetDouble();
        var crushed = CliProcess.Run("eval", SharedData.Stories260K, "--tasks", tasks, "-f", "mxint2", "--text", SharedData.TinyStoriesText, "--json").Json();
        Assert.True(crushed.GetProperty("tasks").GetProperty("accuracy").GetDouble() < accuracy);
        Assert.True(crushed.GetProperty("perplexity").GetDouble() > 3.6);

        var neither = CliProcess.Run("eval", SharedData.Stories260K);
        Assert.Equal(1, neither.ExitCode);
        Assert.Contains("give --text FILE (perplexity), --tasks FILE (accuracy), or both", neither.Stderr);
    }

    [Theory]
    [InlineData("{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"answer\": 0}\n{oops\n", "line 2: not a JSON object")]
    [InlineData("\n\n{\"context\": \"a\", \"choices\": [\" b\"], \"answer\": 0}\n", "line 3: \"choices\" has 1; at least 2 are needed")]
    [InlineData("{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"answer\": 2}\n", "line 1: \"answer\" must be the index of a choice, 0..1")]
    [InlineData("{\"context\": 5, \"choices\": [\" b\", \" c\"], \"answer\": 0}\n", "line 1: \"context\" must be a string")]
    [InlineData("{\"context\": \"a\", \"choices\": [\" b\", \"\"], \"answer\": 0}\n", "line 1: choice 1 must be a non-empty string")]
    [InlineData("\n \n", "has no items")]
    public void ABadTaskFileIsALocatedError(string content, string message)
    {
        using var dir = new TempDir();
        var path = dir.File("bad.jsonl");
        File.WriteAllText(path, content);
        var e = Assert.Throws<InvalidOptionException>(() => TaskFile.Read(path));
        Assert.Contains(path, e.Message);
        Assert.Contains(message, e.Message);
    }

    private static void MakeTasks(string path, int items) =>
        File.WriteAllText(path, PythonTool.Run("make_cloze_tasks.py", SharedData.TinyStoriesText, "--items", items.ToString(System.Globalization.CultureInfo.InvariantCulture)));
}
