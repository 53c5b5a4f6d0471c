using System.Buffers;
using System.Buffers.Binary;
using Nanoscale.IO;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// Distribution facts about one tensor. Moments skip non-finite values (counted in <see cref="NonFinite"/>).
/// <see cref="Kurtosis"/> is Pearson's (a Gaussian has 3). <see cref="ExponentEntropyBits"/> is the Shannon entropy
/// of the raw exponent field for floating-point dtypes (what a lossless coder can hope to squeeze), else null.
/// </summary>
public sealed record TensorStatistics(
    long Count, long NonFinite, double AbsMax, double Mean, double Std, double Kurtosis,
    double FractionBeyond6Sigma, double? ExponentEntropyBits)
{
    /// <summary>Elements per chunk: bounds the working memory per thread.</summary>
    public const int ChunkElements = 1 << 20;

    /// <summary>Computes the statistics of a mapped tensor in two streaming passes over chunks.</summary>
    public static TensorStatistics Compute(TensorView view, Parallelism parallelism = default, CancellationToken cancellationToken = default)
    {
        var tensor = view.Tensor;
        long count = tensor.ElementCount;
        int chunks = (int)((count + ChunkElements - 1) / ChunkElements);
        int exponentBits = tensor.DType.IsFloat() ? tensor.DType.ExponentBits() : 0;

        // Pass 1: per-chunk count, mean and M2 (merged with Chan et al.'s formula), absmax, exponent histogram.
        var first = new FirstPass[chunks];
        parallelism.For(chunks, c =>
        {
            cancellationToken.ThrowIfCancellationRequested();
            first[c] = FirstPassOf(view, c, count, exponentBits);
        });
        long n = 0, nonFinite = 0;
        double mean = 0, m2 = 0, absMax = 0;
        var histogram = exponentBits > 0 ? new long[1 << exponentBits] : null;
        foreach (var part in first)
        {
            nonFinite += part.NonFinite;
            absMax = Math.Max(absMax, part.AbsMax);
            if (histogram is not null) for (int i = 0; i < histogram.Length; i++) histogram[i] += part.Histogram![i];
            if (part.Count == 0) continue;
            long merged = n + part.Count;
            double delta = part.Mean - mean;
            mean += delta * part.Count / merged;
            m2 += part.M2 + delta * delta * n * part.Count / merged;
            n = merged;
        }
        double variance = n > 0 ? m2 / n : 0;
        double std = Math.Sqrt(variance);

        // Pass 2: fourth central moment and the 6-sigma tail, now that mean and std are known.
        var second = new (double M4, long Beyond)[chunks];
        parallelism.For(chunks, c =>
        {
            cancellationToken.ThrowIfCancellationRequested();
            second[c] = SecondPassOf(view, c, count, mean, 6 * std);
        });
        double m4 = second.Sum(s => s.M4);
        long beyond = second.Sum(s => s.Beyond);

        return new TensorStatistics(
            count, nonFinite, absMax, mean, std,
            Kurtosis: variance > 0 ? m4 / n / (variance * variance) : 0,
            FractionBeyond6Sigma: n > 0 ? (double)beyond / n : 0,
            ExponentEntropyBits: histogram is null ? null : Entropy(histogram));
    }

    private sealed record FirstPass(long Count, long NonFinite, double Mean, double M2, double AbsMax, long[]? Histogram);

    private delegate T ChunkFunc<T>(Span<float> values, long start);

    /// <summary>Reads chunk <paramref name="chunk"/> as float32 into a pooled buffer and hands it to <paramref name="body"/>.</summary>
    private static T OverChunk<T>(TensorView view, int chunk, long count, ChunkFunc<T> body)
    {
        long start = (long)chunk * ChunkElements;
        int length = (int)Math.Min(ChunkElements, count - start);
        var values = ArrayPool<float>.Shared.Rent(length);
        try
        {
            var span = values.AsSpan(0, length);
            view.ReadFloats(start, span);
            return body(span, start);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(values);
        }
    }

    private static FirstPass FirstPassOf(TensorView view, int chunk, long count, int exponentBits) =>
        OverChunk(view, chunk, count, (span, start) =>
        {
            long finite = 0, nonFinite = 0;
            double sum = 0, absMax = 0;
            foreach (var v in span)
            {
                if (!float.IsFinite(v)) { nonFinite++; continue; }
                finite++;
                sum += v;
                absMax = Math.Max(absMax, Math.Abs(v));
            }
            double mean = finite > 0 ? sum / finite : 0, m2 = 0;
            foreach (var v in span)
                if (float.IsFinite(v)) m2 += (v - mean) * (v - mean);
            long[]? histogram = exponentBits > 0 ? ExponentHistogram(view, start, span.Length, exponentBits) : null;
            return new FirstPass(finite, nonFinite, mean, m2, absMax, histogram);
        });

    /// <summary>Histogram of the raw exponent field, read from the stored bits (not from the float32 value).</summary>
    private static long[] ExponentHistogram(TensorView view, long start, int length, int exponentBits)
    {
        var dtype = view.Tensor.DType;
        int size = dtype.ElementSize(), mantissa = dtype.MantissaBits();
        var bytes = view.Slice(start * size, length * size);
        var histogram = new long[1 << exponentBits];
        int mask = (1 << exponentBits) - 1;
        for (int i = 0; i < length; i++)
        {
            ulong bits = size switch
            {
                1 => bytes[i],
                2 => BinaryPrimitives.ReadUInt16LittleEndian(bytes[(2 * i)..]),
                4 => BinaryPrimitives.ReadUInt32LittleEndian(bytes[(4 * i)..]),
                _ => BinaryPrimitives.ReadUInt64LittleEndian(bytes[(8 * i)..]),
            };
            histogram[(int)(bits >> mantissa) & mask]++;
        }
        return histogram;
    }

    private static (double, long) SecondPassOf(TensorView view, int chunk, long count, double mean, double limit) =>
        OverChunk(view, chunk, count, (span, _) =>
        {
            double m4 = 0;
            long beyond = 0;
            foreach (var v in span)
            {
                if (!float.IsFinite(v)) continue;
                double d = v - mean, d2 = d * d;
                m4 += d2 * d2;
                if (Math.Abs(d) > limit) beyond++;
            }
            return (m4, beyond);
        });

    /// <summary>Shannon entropy in bits per symbol of a histogram.</summary>
    public static double Entropy(ReadOnlySpan<long> histogram)
    {
        long total = 0;
        foreach (var h in histogram) total += h;
        if (total == 0) return 0;
        double entropy = 0;
        foreach (var h in histogram)
        {
            if (h == 0) continue;
            double p = (double)h / total;
            entropy -= p * Math.Log2(p);
        }
        return entropy;
    }
}
