using Nanoscale.IO;
using Nanoscale.Codecs;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// Weight error of one tensor or a whole model (SPEC §1): MSE, relative error ‖Ŵ−W‖²/‖W‖², SQNR = −10·log10(relative).
/// Sums are kept in double so a model's totals add up across tensors.
/// </summary>
public sealed record ErrorMetrics(long Count, double SquaredError, double SquaredNorm)
{
    public double Mse => Count == 0 ? 0 : SquaredError / Count;
    public double RelativeError => SquaredNorm == 0 ? (SquaredError == 0 ? 0 : double.PositiveInfinity) : SquaredError / SquaredNorm;
    public double SqnrDb => RelativeError == 0 ? double.PositiveInfinity : -10 * Math.Log10(RelativeError);

    public static ErrorMetrics operator +(ErrorMetrics a, ErrorMetrics b) =>
        new(a.Count + b.Count, a.SquaredError + b.SquaredError, a.SquaredNorm + b.SquaredNorm);

    public static ErrorMetrics Zero { get; } = new(0, 0, 0);

    public static ErrorMetrics Of(ReadOnlySpan<float> original, ReadOnlySpan<float> decoded)
    {
        double error = 0, norm = 0;
        for (int i = 0; i < original.Length; i++)
        {
            double d = (double)decoded[i] - original[i];
            error += d * d;
            norm += (double)original[i] * original[i];
        }
        return new ErrorMetrics(original.Length, error, norm);
    }

    /// <summary>Error of every encoded tensor of <paramref name="compressed"/> against <paramref name="source"/>, decoded from the stored bytes.</summary>
    public static IReadOnlyList<(string Name, ErrorMetrics Error)> Compare(ICheckpoint source, LogicalCheckpoint compressed,
        CancellationToken cancellationToken = default, IProgress<PipelineProgress>? progress = null)
    {
        var results = new List<(string, ErrorMetrics)>();
        var encoded = compressed.Tensors.Where(t => t.Encoded is not null).ToList();
        foreach (var tensor in encoded)
        {
            cancellationToken.ThrowIfCancellationRequested();
            progress?.Report(new PipelineProgress("measure", tensor.Name, results.Count, encoded.Count, "tensors"));
            var original = source.Find(tensor.Name) ?? throw new InputException($"{source.Path} has no tensor {tensor.Name} to compare with");
            using var view = source.Map(original);
            using var decoder = compressed.OpenDecoder(tensor);
            var stored = tensor.Encoded!;
            int columns = checked((int)stored.Columns);
            int rowsPerTile = Math.Max(1, (1 << 20) / Math.Max(1, columns));
            var a = new float[rowsPerTile * columns];
            var b = new float[rowsPerTile * columns];
            var total = Zero;
            for (long row = 0; row < stored.Rows; row += rowsPerTile)
            {
                int count = (int)Math.Min(rowsPerTile, stored.Rows - row);
                view.ReadFloats(row * columns, a.AsSpan(0, count * columns));
                decoder.ReadRows(row, count, b.AsSpan(0, count * columns));
                total += Of(a.AsSpan(0, count * columns), b.AsSpan(0, count * columns));
            }
            results.Add((tensor.Name, total));
        }
        progress?.Report(new PipelineProgress("measure", null, results.Count, encoded.Count, "tensors"));
        return results;
    }
}
