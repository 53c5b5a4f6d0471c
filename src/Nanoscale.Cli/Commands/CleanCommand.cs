using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.IO;

namespace Nanoscale.Cli.Commands;

/// <summary>
/// <c>nanoscale clean [DIR…]</c>: removes the temporaries that a killed run left behind (<c>.NAME.ns{pid}-….partial</c>,
/// <c>.spill</c>, work files and folders), in the folders given (default: the current folder) and in the system's
/// temporary folder. Only those whose process is gone; a running compression's files are left alone. Every run that
/// writes into a folder does the same there first.
/// </summary>
internal static class CleanCommand
{
    public static Command Create()
    {
        var folders = new Argument<string[]>("DIR") { Description = "Folders to clean (default: the current folder)", Arity = ArgumentArity.ZeroOrMore };
        var json = CliRunner.JsonOption();
        var command = new Command("clean", "Remove temporaries left behind by killed runs") { folders, json };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var given = parse.GetValue(folders) is { Length: > 0 } list ? list : [Directory.GetCurrentDirectory()];
            foreach (var folder in given)
                if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"{folder}: no such folder");
            var removed = given.Append(Path.GetTempPath()).Distinct().SelectMany(TemporaryFile.RemoveStale).ToList();
            if (context.Json) return new { removed };
            foreach (var path in removed) context.Log($"removed {path}");
            context.Log($"clean: {removed.Count} stale temporar{(removed.Count == 1 ? "y" : "ies")} removed");
            return null;
        }));
        return command;
    }
}
