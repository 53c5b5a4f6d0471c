using Spectre.Console;

namespace Nanoscale.Cli.Rendering;

/// <summary>The standard-output console for tables; wide when redirected so piped tables do not wrap at 80 columns.</summary>
internal static class Terminal
{
    private static readonly Lazy<IAnsiConsole> Console = new(() =>
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(System.Console.Out) });
        if (System.Console.IsOutputRedirected) console.Profile.Width = 240;
        return console;
    });

    public static IAnsiConsole Out => Console.Value;
}
