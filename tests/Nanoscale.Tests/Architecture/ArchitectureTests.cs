using System.Text.RegularExpressions;

namespace Nanoscale.Tests.Architecture;

/// <summary>
/// The architecture of docs/architecture.md, enforced: every type of the library lives in a room, every use of one
/// type by another follows the room table, the table is a layering, and folders are namespaces.
/// </summary>
public partial class ArchitectureTests
{
    private const string Library = "Nanoscale";

    private static readonly ArchitectureRules Rules = ArchitectureRules.FromDocs();

    private static string LibraryAssembly => Path.Combine(AppContext.BaseDirectory, "Nanoscale.Core.dll");

    [Fact]
    public void TheRoomTableIsALayering()
    {
        Assert.True(Rules.Rooms.Count() >= 5, "the table lists the rooms");
        Assert.Null(Rules.FindCycle());
    }

    [Fact]
    public void EveryLibraryTypeLivesInARoom()
    {
        using var assembly = Mono.Cecil.AssemblyDefinition.ReadAssembly(LibraryAssembly);
        var strays = assembly.MainModule.Types
            .Where(t => !t.Name.StartsWith('<')) // <Module>, <PrivateImplementationDetails>: the compiler's
            .Where(t => !t.Namespace.StartsWith("System", StringComparison.Ordinal) && !t.Namespace.StartsWith("Microsoft", StringComparison.Ordinal))
            .Where(t => Rules.RoomOf(t.Namespace, Library) is null)
            .Select(t => t.FullName)
            .ToList();
        Assert.True(strays.Count == 0, $"types outside every room of docs/architecture.md: {string.Join(", ", strays)}");
    }

    [Fact]
    public void NoTypeUsesARoomTheTableForbids()
    {
        var violations = Violations(DependencyScanner.Scan(LibraryAssembly, ns => ns.StartsWith(Library + ".", StringComparison.Ordinal)), Library);
        Assert.True(violations.Count == 0, "wrong-way uses (docs/architecture.md):\n" + string.Join("\n", violations));
    }

    [Fact]
    public void EveryPublicTypeIsAFrontDoor()
    {
        using var assembly = Mono.Cecil.AssemblyDefinition.ReadAssembly(LibraryAssembly);
        var problems = new List<string>();
        foreach (string room in Rules.Rooms)
        {
            var actual = assembly.MainModule.Types.Where(t => t.IsPublic && Rules.RoomOf(t.Namespace, Library) == room)
                .Select(t => t.Name.Split('`')[0]).ToHashSet(StringComparer.Ordinal);
            var listed = Rules.PublicTypes.GetValueOrDefault(room) ?? new HashSet<string>();
            foreach (string extra in actual.Except(listed).Order(StringComparer.Ordinal))
                problems.Add($"{room}.{extra} is public but not a front door in docs/architecture.md");
            foreach (string missing in listed.Except(actual).Order(StringComparer.Ordinal))
                problems.Add($"{room}.{missing} is listed as a front door but is not a public type");
        }
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    /// <summary>The test of the test: a probe in this assembly points the wrong way twice, once in a signature and once
    /// only inside a method body, and the checker must see both.</summary>
    [Fact]
    public void TheCheckerSeesAWrongWayArrow()
    {
        const string prefix = "Nanoscale.Tests.Architecture.Probe";
        var uses = DependencyScanner.Scan(typeof(ArchitectureTests).Assembly.Location, ns => ns.StartsWith(prefix + ".", StringComparison.Ordinal));
        var violations = Violations(uses, prefix);
        Assert.Contains(violations, v => v.Contains("Formats → Pipeline") && v.Contains("WrongWayInSignature"));
        Assert.Contains(violations, v => v.Contains("Formats → Pipeline") && v.Contains("WrongWayInBody"));
        Assert.DoesNotContain(violations, v => v.Contains("RightWay"));
    }

    [Fact]
    public void FoldersAreNamespaces()
    {
        string src = Path.Combine(ArchitectureRules.RepositoryRoot(), "src", "Nanoscale");
        var wrong = new List<string>();
        foreach (string file in Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories))
        {
            string relative = Path.GetRelativePath(src, file);
            if (relative.StartsWith("obj", StringComparison.Ordinal) || relative.StartsWith("bin", StringComparison.Ordinal)) continue;
            string? folder = Path.GetDirectoryName(relative);
            string expected = string.IsNullOrEmpty(folder) ? Library : $"{Library}.{folder.Replace(Path.DirectorySeparatorChar, '.')}";
            var match = FileScopedNamespace().Match(File.ReadAllText(file));
            if (!match.Success || match.Groups[1].Value != expected)
                wrong.Add($"{relative}: namespace {(match.Success ? match.Groups[1].Value : "(none)")}, folder says {expected}");
        }
        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
    }

    private static List<string> Violations(IEnumerable<TypeUse> uses, string prefix) =>
        uses.Select(u => (Use: u, From: Rules.RoomOf(u.FromNamespace, prefix), To: Rules.RoomOf(u.ToNamespace, prefix)))
            .Where(x => x.From is not null && x.To is not null && !Rules.Allows(x.From, x.To))
            .GroupBy(x => (x.Use.From, x.Use.To))
            .Select(g => $"{g.First().From} → {g.First().To}: {g.Key.From} uses {g.Key.To} ({g.First().Use.Where})")
            .OrderBy(s => s, StringComparer.Ordinal)
            .ToList();

    [GeneratedRegex(@"^namespace\s+([\w.]+)\s*;", RegexOptions.Multiline)]
    private static partial Regex FileScopedNamespace();
}
