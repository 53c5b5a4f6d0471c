using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Serve;

/// <summary>A conversation that keeps its key/value cache: each turn runs only what the cache does not hold, and answers
/// as a fresh prompt of the whole conversation does (stories260K, its plain chat rendering).</summary>
public class ChatSessionTests
{
    private static readonly SamplingOptions Greedy = new() { LogProbs = 0 };

    [Fact]
    public void EachTurnReusesTheCacheAndAnswersAsAFreshPrompt()
    {
        using var model = LoadedModel.Open(SharedData.Stories260K);
        using var chat = model.StartChat("You tell stories.");
        var first = chat.Reply("Once upon a time", 12, Greedy);
        Assert.Equal(0, chat.ReusedTokens);
        var fresh = model.Chat([("system", "You tell stories."), ("user", "Once upon a time")], 12, Greedy, null);
        Assert.Equal(fresh.NewText, first.NewText);

        var second = chat.Reply("Then what?", 12, Greedy);
        Assert.InRange(chat.ReusedTokens, first.PromptTokens + 1, second.PromptTokens - 1);
        var again = model.Chat([.. chat.History.Take(chat.History.Count - 1)], 12, Greedy, null);
        Assert.Equal(again.PromptTokens, second.PromptTokens);
        Assert.Equal(again.NewText, second.NewText);
        // The same numbers up to float summation order (positions computed in a batch or one at a time).
        Assert.All(again.LogProbs!.Zip(second.LogProbs!), p => Assert.InRange(p.First.LogProb - p.Second.LogProb, -1e-4, 1e-4));
        Assert.Equal(5, chat.History.Count);

        chat.Reset();
        Assert.Single(chat.History);
        var over = chat.Reply("Once upon a time", 12, Greedy);
        Assert.Equal(0, chat.ReusedTokens);
        Assert.Equal(first.NewText, over.NewText);
    }

    [Fact]
    public void ACancelledTurnLeavesTheConversationAsItWas()
    {
        using var model = LoadedModel.Open(SharedData.Stories260K);
        using var chat = model.StartChat();
        chat.Reply("Once upon a time", 4, Greedy);
        using var cancelled = new CancellationTokenSource();
        Assert.ThrowsAny<OperationCanceledException>(() => chat.Reply("More", 50, Greedy, _ => cancelled.Cancel(), cancelled.Token));
        Assert.Equal(2, chat.History.Count);
        chat.Reply("More", 4, Greedy);
        Assert.Equal(0, chat.ReusedTokens); // the cache started over after the cancelled turn
        Assert.Equal(4, chat.History.Count);
    }

    [Fact]
    public void TruncateKeepsOnlyPositionsHeld()
    {
        using var model = LoadedModel.Open(SharedData.Stories260K);
        var session = model.Model.CreateSession(32);
        session.Step(1);
        session.Step(2);
        session.Truncate(1);
        Assert.Equal(1, session.Length);
        Assert.Throws<ArgumentOutOfRangeException>(() => session.Truncate(2));
    }
}
