using Nanoscale.Runtime;

namespace Nanoscale.Tests.Support;

/// <summary>Feeds a constraint text one character at a time, as the constraint tests ask it.</summary>
internal static class ConstraintText
{
    /// <summary>Whether every character of <paramref name="text"/> fits in turn (the constraint takes each that does).</summary>
    public static bool Feed(JsonConstraint constraint, string text)
    {
        foreach (char c in text)
        {
            if (constraint.Complete || !constraint.AllowsText(c.ToString())) return false;
            constraint.AcceptText(c.ToString());
        }
        return true;
    }

    /// <summary>A random walk held to the constraint: each step a random character of <paramref name="alphabet"/> among
    /// those allowed, closing characters (quote, brackets, comma) favoured so walks end; fails if a walk gets stuck.
    /// The text, when the shape completed within <paramref name="limit"/> characters; null otherwise.</summary>
    public static string? Walk(JsonConstraint constraint, char[] alphabet, Random random, int limit)
    {
        var text = new System.Text.StringBuilder();
        while (!constraint.Complete && text.Length < limit)
        {
            var allowed = alphabet.Where(c => constraint.AllowsText(c.ToString())).ToList();
            Xunit.Assert.True(allowed.Count > 0, $"stuck after {text}");
            var closing = allowed.Where(c => c is '"' or '}' or ']' or ',').ToList();
            char next = closing.Count > 0 && random.Next(2) == 0 ? closing[random.Next(closing.Count)] : allowed[random.Next(allowed.Count)];
            constraint.AcceptText(next.ToString());
            text.Append(next);
        }
        return constraint.Complete ? text.ToString() : null;
    }

    /// <summary>Whether the whole text fits and completes the shape exactly at its end.</summary>
    public static bool Whole(JsonConstraint constraint, string text) => Feed(constraint, text) && constraint.Complete;
}
