using System.Diagnostics;
using System.Globalization;
using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tests.Support;

namespace Nanoscale.Benchmarks;

/// <summary>
/// Single-bit flips at uniformly random positions of a compressed stories260K checkpoint, for every format of the
/// table: each damaged file must be refused by <c>verify</c> and by the first read of its tensors (docs/reliability.md).
/// Counts, per format, flips in the header and in the data, and how many went unnoticed by each.
/// Usage: bitflips [--flips N] [--seed S]
/// </summary>
internal static class BitFlipBenchmark
{
    public static int Run(string[] args)
    {
        int flips = int.Parse(Arg(args, "--flips") ?? "200", CultureInfo.InvariantCulture);
        int seed = int.Parse(Arg(args, "--seed") ?? "1", CultureInfo.InvariantCulture);
        using var work = TemporaryFolder.Create("nanoscale-bitflips");
        // --formats a,b: only those (default: every format of the table, and two entropy-coded forms).
        var formats = Arg(args, "--formats")?.Split(',').ToList()
            ?? CodecRegistry.Table.Traits.Select(t => t.Name == "caldera" ? "caldera:rank=4,iters=2" : t.Name)
                .Append("mxfp4:entropy=rans").Append("nxfp4-m16:entropy=rans").ToList();
        Console.WriteLine("| format | file bytes | flips (header / data) | missed by verify | missed by first read | time |");
        Console.WriteLine("|---|---:|---:|---:|---:|---:|");
        int totalMissed = 0;
        foreach (var format in formats)
        {
            var clock = Stopwatch.StartNew();
            var original = Path.Combine(work.Path, "c.safetensors");
            CompressionRun.Run(SharedData.Stories260K, original, new CompressionRequest { Format = format, MeasureError = false });
            var bytes0 = File.ReadAllBytes(original);
            long headerEnd = 8 + BitConverter.ToInt64(bytes0, 0);
            var random = new Random(seed);
            int inHeader = 0, missedVerify = 0, missedRead = 0;
            for (int trial = 0; trial < flips; trial++)
            {
                long at = random.NextInt64(bytes0.Length);
                if (at < headerEnd) inHeader++;
                var bytes = (byte[])bytes0.Clone();
                bytes[at] ^= (byte)(1 << random.Next(8));
                var path = Path.Combine(work.Path, "flip.safetensors");
                File.WriteAllBytes(path, bytes);
                bool missed = false;
                if (Verification.Verify(path).Ok) { missedVerify++; missed = true; }
                if (!Refused(path)) { missedRead++; missed = true; }
                if (missed)
                    Console.Error.WriteLine($"{format}: flip at byte {at} (header ends at {headerEnd}) not found: " +
                        $"'{(char)bytes0[at]}' (0x{bytes0[at]:x2}) became '{(char)bytes[at]}' (0x{bytes[at]:x2})" +
                        (at < headerEnd ? $" in …{System.Text.Encoding.UTF8.GetString(bytes0, (int)Math.Max(8, at - 40), 60)}…" : ""));
            }
            totalMissed += missedVerify + missedRead;
            Console.WriteLine($"| `{format}` | {bytes0.Length:N0} | {flips} ({inHeader} / {flips - inHeader}) | {missedVerify} | {missedRead} | {clock.Elapsed.TotalSeconds:0.0} s |");
        }
        return totalMissed == 0 ? 0 : 1;
    }

    private static bool Refused(string path)
    {
        try
        {
            using var checkpoint = LogicalCheckpoint.Open(path);
            checkpoint.ReadEveryTensor();
            return false;
        }
        catch (CheckpointFormatException)
        {
            return true;
        }
    }

    private static string? Arg(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}
