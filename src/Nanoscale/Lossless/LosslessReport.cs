using Nanoscale.Tensors;

namespace Nanoscale.Lossless;

/// <summary>
/// One plane summed over all chunks. <see cref="BoundBytes"/> is the order-0 bound as this format could reach it:
/// per chunk, min(raw, ⌈n·H/8⌉ + stored table bytes), H the entropy of that chunk's plane histogram.
/// <see cref="CodedBytes"/> counts everything the plane occupies in the stream (mode byte, table, length, states).
/// </summary>
public sealed record LosslessPlaneReport(string Name, long RawBytes, long CodedBytes, long TableBytes, double EntropyBits,
    long BoundBytes, int ChunksCoded, int ChunksRaw)
{
    /// <summary>Order-0 entropy of the plane in bits per symbol (chunk histograms, weighted by size).</summary>
    public double EntropyBitsPerSymbol => RawBytes == 0 ? 0 : EntropyBits / RawBytes;

    /// <summary>Coded size over the bound; 1.0 means the bound is met exactly.</summary>
    public double CodedOverBound => BoundBytes == 0 ? 1 : (double)CodedBytes / BoundBytes;
}

/// <summary>Sizes of one encoded tensor against its original size and the order-0 bound (SPEC §9).</summary>
public sealed record LosslessReport(DType DType, PlaneLayout Layout, long ElementCount, long OriginalBytes, long EncodedBytes,
    IReadOnlyList<LosslessPlaneReport> Planes)
{
    /// <summary>Sum of the planes' bounds (headers, directory and checksums are format overhead, not in the bound).</summary>
    public long BoundBytes => Planes.Sum(p => p.BoundBytes);

    /// <summary>Original / encoded, e.g. 1.5 for 1.5:1.</summary>
    public double Ratio => EncodedBytes == 0 ? 1 : (double)OriginalBytes / EncodedBytes;

    /// <summary>Original / bound: the best ratio an order-0 coder with these tables could reach.</summary>
    public double BoundRatio => BoundBytes == 0 ? 1 : (double)OriginalBytes / BoundBytes;

    /// <summary>Encoded size (all overhead included) over the bound; 1.01 = within 1%.</summary>
    public double EncodedOverBound => BoundBytes == 0 ? 1 : (double)EncodedBytes / BoundBytes;

    public double BitsPerWeight => ElementCount == 0 ? 0 : 8.0 * EncodedBytes / ElementCount;

    /// <summary>Adds reports of several tensors (the same dtype and layout) into one.</summary>
    public static LosslessReport Sum(IReadOnlyList<LosslessReport> reports)
    {
        if (reports.Count == 0) throw new ArgumentException("nothing to sum", nameof(reports));
        var first = reports[0];
        var planes = new List<LosslessPlaneReport>();
        for (int p = 0; p < first.Planes.Count; p++)
        {
            var ps = reports.Select(r => r.Planes[p]).ToList();
            planes.Add(new LosslessPlaneReport(ps[0].Name, ps.Sum(x => x.RawBytes), ps.Sum(x => x.CodedBytes), ps.Sum(x => x.TableBytes),
                ps.Sum(x => x.EntropyBits), ps.Sum(x => x.BoundBytes), ps.Sum(x => x.ChunksCoded), ps.Sum(x => x.ChunksRaw)));
        }
        return new LosslessReport(first.DType, first.Layout, reports.Sum(r => r.ElementCount), reports.Sum(r => r.OriginalBytes),
            reports.Sum(r => r.EncodedBytes), planes);
    }

    internal static LosslessReport Create(DType dtype, PlaneLayout layout, long elementCount, long originalBytes, long encodedBytes,
        ReadOnlySpan<PlaneChunkStats> stats, int planeCount)
    {
        var planes = new List<LosslessPlaneReport>(planeCount);
        for (int p = 0; p < planeCount; p++)
        {
            long raw = 0, coded = 0, table = 0, bound = 0;
            double bits = 0;
            int codedChunks = 0, rawChunks = 0;
            for (int i = p; i < stats.Length; i += planeCount)
            {
                var s = stats[i];
                raw += s.Symbols;
                coded += s.CodedBytes;
                bits += s.EntropyBits;
                bound += Math.Min(s.Symbols, (long)Math.Ceiling(s.EntropyBits / 8) + s.TableBytes);
                if (s.Coded) { codedChunks++; table += s.TableBytes; }
                else rawChunks++;
            }
            planes.Add(new LosslessPlaneReport(BytePlanes.PlaneName(layout, p), raw, coded, table, bits, bound, codedChunks, rawChunks));
        }
        return new LosslessReport(dtype, layout, elementCount, originalBytes, encodedBytes, planes);
    }
}
