using System.Text.RegularExpressions;

namespace Nanoscale.Tests.Architecture;

/// <summary>
/// The rooms of the library and who may use whom, read from the table in docs/architecture.md, so the document and the
/// test cannot disagree: the table is the rule, this class only parses it and checks it is a layering (no cycle).
/// </summary>
internal sealed partial class ArchitectureRules
{
    private ArchitectureRules(IReadOnlyDictionary<string, IReadOnlySet<string>> mayUse, IReadOnlyDictionary<string, IReadOnlySet<string>> publicTypes)
    {
        MayUse = mayUse;
        PublicTypes = publicTypes;
    }

    /// <summary>Room → the names of its public types (its front doors).</summary>
    public IReadOnlyDictionary<string, IReadOnlySet<string>> PublicTypes { get; }

    /// <summary>Room → the other rooms it may use.</summary>
    public IReadOnlyDictionary<string, IReadOnlySet<string>> MayUse { get; }

    public IEnumerable<string> Rooms => MayUse.Keys;

    public bool Allows(string from, string to) => from == to || (MayUse.TryGetValue(from, out var rooms) && rooms.Contains(to));

    /// <summary>The room of a namespace <c>{prefix}.{Room}[.…]</c>, or null when it is outside every room.</summary>
    public string? RoomOf(string ns, string prefix)
    {
        if (!ns.StartsWith(prefix + ".", StringComparison.Ordinal)) return null;
        string room = ns[(prefix.Length + 1)..].Split('.')[0];
        return MayUse.ContainsKey(room) ? room : null;
    }

    public static ArchitectureRules FromDocs() => Parse(File.ReadAllText(Path.Combine(RepositoryRoot(), "docs", "architecture.md")));

    /// <summary>The tables headed <c>| room | may use |</c> and <c>| room | public types |</c>: rows of the form
    /// <c>| `Room` | `A`, `B` |</c> (or <c>—</c> for none).</summary>
    public static ArchitectureRules Parse(string markdown)
    {
        var mayUse = Table(markdown, "may use");
        foreach (var (room, uses) in mayUse)
            foreach (string used in uses)
                if (!mayUse.ContainsKey(used))
                    throw new InvalidDataException($"docs/architecture.md: {room} may use '{used}', which is not a room of the table");
        var publicTypes = Table(markdown, "public types");
        foreach (string room in publicTypes.Keys)
            if (!mayUse.ContainsKey(room))
                throw new InvalidDataException($"docs/architecture.md: the front-door table names '{room}', which is not a room");
        return new ArchitectureRules(mayUse, publicTypes);
    }

    private static Dictionary<string, IReadOnlySet<string>> Table(string markdown, string column)
    {
        var result = new Dictionary<string, IReadOnlySet<string>>(StringComparer.Ordinal);
        var header = new Regex($@"^\|\s*room\s*\|\s*{Regex.Escape(column)}\s*\|", RegexOptions.IgnoreCase);
        bool inTable = false;
        foreach (string raw in markdown.Split('\n'))
        {
            string line = raw.Trim();
            if (!inTable) { inTable = header.IsMatch(line); continue; }
            if (!line.StartsWith('|')) break;
            var cells = line.Trim('|').Split('|').Select(c => c.Trim()).ToArray();
            if (cells.Length < 2 || cells[0].StartsWith('-')) continue;
            result[cells[0].Trim('`')] = Ticked().Matches(cells[1]).Select(m => m.Groups[1].Value).ToHashSet(StringComparer.Ordinal);
        }
        if (result.Count == 0) throw new InvalidDataException($"docs/architecture.md has no '| room | {column} |' table");
        return result;
    }

    /// <summary>A cycle among the rooms' allowed uses, or null when the rule is a layering.</summary>
    public IReadOnlyList<string>? FindCycle()
    {
        var state = new Dictionary<string, int>(); // 1 = on the path, 2 = done
        var path = new List<string>();
        List<string>? Visit(string room)
        {
            state[room] = 1;
            path.Add(room);
            foreach (string next in MayUse[room])
            {
                if (state.GetValueOrDefault(next) == 1) return [.. path.SkipWhile(r => r != next), next];
                if (state.GetValueOrDefault(next) == 0 && Visit(next) is { } cycle) return cycle;
            }
            path.RemoveAt(path.Count - 1);
            state[room] = 2;
            return null;
        }
        foreach (string room in MayUse.Keys)
            if (state.GetValueOrDefault(room) == 0 && Visit(room) is { } cycle) return cycle;
        return null;
    }

    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Nanoscale.slnx")))
                return dir.FullName;
        throw new DirectoryNotFoundException($"no Nanoscale.slnx above {AppContext.BaseDirectory}");
    }

    [GeneratedRegex(@"`([A-Za-z]+)`")]
    private static partial Regex Ticked();
}
