using System.CommandLine;
using Nanoscale.Cli.Rendering;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Spectre.Console;

namespace Nanoscale.Cli.Commands;

/// <summary><c>nanoscale verify PATH</c>: every tensor checked against the file's integrity record and, for a compressed
/// container, its table against its parts (SPEC §15). Exit code 1 names every damaged tensor, part and byte range.</summary>
internal static class VerifyCommand
{
    public static Command Create()
    {
        var path = new Argument<string>("PATH") { Description = "A checkpoint file or folder (compressed or plain)" };
        var json = CliRunner.JsonOption();
        var command = new Command("verify", "Check every tensor against the checksums Nanoscale stores, and a container's table against its parts") { path, json };
        command.SetAction(parse => CliRunner.Run(parse, json, context =>
        {
            var report = Verification.Verify(parse.GetValue(path)!, context.Cancellation);
            foreach (var problem in report.Problems) context.Log($"damaged: {problem}");
            if (!report.Ok)
                throw new InputException($"{report.Path}: {report.Problems.Count} problem(s) found; the lines above say where");
            string summary = report.TensorsChecked == 0
                ? $"{report.Path}: {report.Tensors} tensors in {report.Files} file(s); no checksums to check (not written by Nanoscale)"
                : $"{report.Path}: {report.TensorsChecked} of {report.Tensors} tensors match their checksums ({Units.Bytes(report.BytesChecked)} checked)";
            if (context.Json)
                return new { path = report.Path, ok = true, files = report.Files, tensors = report.Tensors, checked_tensors = report.TensorsChecked, bytes_checked = report.BytesChecked };
            Terminal.Out.WriteLine(summary);
            return null;
        }));
        return command;
    }
}
