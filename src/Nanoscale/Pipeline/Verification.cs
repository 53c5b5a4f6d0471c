using Nanoscale.Codecs;
using Nanoscale.IO;

namespace Nanoscale.Pipeline;

/// <summary>
/// The <c>verify</c> verb (SPEC §15): every tensor of every file checked against the integrity record Nanoscale writes
/// (<see cref="IntegrityReport"/>), and, for a compressed container, its table against its parts (codec known, every
/// part present and of the size its codec needs, no part the table does not list).
/// </summary>
public static class Verification
{
    public static IntegrityReport Verify(string path, CancellationToken cancellationToken = default)
    {
        IntegrityReport report;
        try
        {
            using var checkpoint = CheckpointLoader.Open(path);
            report = checkpoint.Verify(cancellationToken);
        }
        catch (CheckpointFormatException e)
        {
            // A damaged header or record: nothing further can be trusted.
            return new IntegrityReport(path, 0, 0, 0, 0, [e.Message]);
        }
        var problems = report.Problems.ToList();
        try
        {
            using var logical = LogicalCheckpoint.Open(path);
            foreach (var tensor in logical.Tensors.Where(t => t.Encoded is not null))
            {
                cancellationToken.ThrowIfCancellationRequested();
                try
                {
                    using var decoder = logical.OpenDecoder(tensor); // checks each part's size against the codec
                }
                catch (CheckpointFormatException e) { problems.Add(e.Message); }
            }
        }
        catch (CheckpointFormatException e) { problems.Add(e.Message); }
        return report with { Problems = problems.Distinct().ToList() };
    }
}
