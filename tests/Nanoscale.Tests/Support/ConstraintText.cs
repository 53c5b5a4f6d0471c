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

    /// <summary>Whether the whole text fits and completes the shape exactly at its end.</summary>
    public static bool Whole(JsonConstraint constraint, string text) => Feed(constraint, text) && constraint.Complete;
}
