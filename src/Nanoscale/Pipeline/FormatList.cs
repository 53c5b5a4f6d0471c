namespace Nanoscale.Pipeline;

/// <summary>
/// Splits a list of spec strings given as one argument (<c>--formats A,B,…</c>). Spec strings contain commas
/// themselves (<c>nxfp4:nm=2,am=e2m1|e1m2,cr=5</c>), so a comma-separated token of the form <c>key=value</c> (an
/// <c>=</c> and no <c>:</c>) continues the previous spec; any other token starts a new one. Semicolons always separate.
/// </summary>
public static class FormatList
{
    public static IReadOnlyList<string> Split(string list)
    {
        var specs = new List<string>();
        foreach (var group in list.Split(';', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            var current = new List<string>();
            foreach (var token in group.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
            {
                bool continuesSpec = token.Contains('=') && !token.Contains(':');
                if (continuesSpec && current.Count == 0)
                    throw new ArgumentException($"'{token}' in the format list has no format before it (write NAME:{token})");
                if (!continuesSpec && current.Count > 0)
                {
                    specs.Add(string.Join(',', current));
                    current.Clear();
                }
                current.Add(token);
            }
            if (current.Count > 0) specs.Add(string.Join(',', current));
        }
        if (specs.Count == 0) throw new ArgumentException("the format list is empty");
        return specs;
    }
}
