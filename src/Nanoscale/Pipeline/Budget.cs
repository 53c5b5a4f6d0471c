using System.Globalization;
using System.Text.RegularExpressions;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>What a <see cref="Budget"/> counts.</summary>
public enum BudgetUnit
{
    /// <summary>Bits per weight over the tensors a format applies to (the encoded ones), from their stored parts.</summary>
    BitsPerWeight,

    /// <summary>Bytes of every tensor of the checkpoint as stored (encoded parts plus the tensors kept plain).</summary>
    Bytes,
}

/// <summary>
/// A size to fit a model into (docs/budget.md): <c>3.8bpw</c> (bits per weight of the encoded tensors) or a size of the
/// whole checkpoint's tensors, <c>3GB</c>, <c>250MiB</c>, <c>123456B</c> (decimal kB/MB/GB/TB, binary KiB/MiB/GiB/TiB).
/// </summary>
public sealed partial record Budget(double Value, BudgetUnit Unit)
{
    [GeneratedRegex(@"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(bpw|b|kb|mb|gb|tb|kib|mib|gib|tib)\s*$", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex Syntax();

    /// <summary>Parses a budget; <paramref name="option"/> names the option in the error.</summary>
    /// <exception cref="InvalidOptionException">Not a positive number with one of the units.</exception>
    public static Budget Parse(string text, string option = "PlanOptions.Budget")
    {
        var match = Syntax().Match(text ?? "");
        if (!match.Success)
            throw new InvalidOptionException(option, $"\"{text}\" is not a budget: give bits per weight (3.8bpw) or a checkpoint size " +
                "(3GB, 250MiB, 123456B; kB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024)");
        double value = double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
        string unit = match.Groups[2].Value.ToLowerInvariant();
        double factor = unit switch
        {
            "bpw" or "b" => 1,
            "kb" => 1e3, "mb" => 1e6, "gb" => 1e9, "tb" => 1e12,
            "kib" => 1L << 10, "mib" => 1L << 20, "gib" => 1L << 30, _ => 1L << 40,
        };
        value *= factor;
        if (!(value > 0) || !double.IsFinite(value) || (unit != "bpw" && value > long.MaxValue / 2))
            throw new InvalidOptionException(option, $"\"{text}\" is not a positive size");
        return unit == "bpw" ? new Budget(value, BudgetUnit.BitsPerWeight) : new Budget(Math.Floor(value), BudgetUnit.Bytes);
    }

    /// <summary>Parses a comma-separated list of budgets (<c>3.3bpw,3.5bpw,4bpw</c>).</summary>
    public static IReadOnlyList<Budget> ParseList(string text, string option = "PlanOptions.Budget")
    {
        var parts = (text ?? "").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        return parts.Length == 0 ? [Parse(text ?? "", option)] : [.. parts.Select(t => Parse(t, option))];
    }

    public override string ToString() => Unit == BudgetUnit.BitsPerWeight
        ? Value.ToString("0.###", CultureInfo.InvariantCulture) + "bpw"
        : Value.ToString("0", CultureInfo.InvariantCulture) + "B";
}
