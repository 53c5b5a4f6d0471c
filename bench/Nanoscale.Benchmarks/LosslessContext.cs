using Nanoscale.Lossless;

namespace Nanoscale.Benchmarks;

/// <summary>
/// <c>-- lossless-context</c>: would context modelling beyond order 0 pay on gpt2-attn BF16 exponents? Prints the
/// order-0 entropy and the conditional entropies given the previous exponent in the row and the exponent above
/// (same column, previous row), per tensor (768 × 768) and summed; table costs are not included, so these are
/// optimistic bounds for a context coder.
/// </summary>
internal static class LosslessContext
{
    public static void Run()
    {
        var all = LosslessData.Gpt2AttnBf16;
        const int rows = 768, cols = 768, size = rows * cols * 2;
        double h0 = 0, hPrev = 0, hAbove = 0, hBoth = 0;
        long n = 0;
        for (int t = 0; t * size < all.Length; t++)
        {
            var exps = new byte[rows * cols];
            for (int i = 0; i < exps.Length; i++) exps[i] = (byte)((all[t * size + 2 * i] | (all[t * size + 2 * i + 1] << 8)) >> 7);
            h0 += EntropyBound.BitsPerSymbol(exps) * exps.Length;
            hPrev += Conditional(exps, i => i % cols == 0 ? 0 : exps[i - 1]);
            hAbove += Conditional(exps, i => i < cols ? 0 : exps[i - cols]);
            hBoth += Conditional(exps, i => (i % cols == 0 ? 0 : Bucket(exps[i - 1])) * 16 + (i < cols ? 0 : Bucket(exps[i - cols])));
            n += exps.Length;
        }
        Console.WriteLine($"exponent bits/weight: order-0 {h0 / n:F4}, given previous {hPrev / n:F4}, given above {hAbove / n:F4}, given both (bucketed) {hBoth / n:F4}");
    }

    private static int Bucket(byte e) => Math.Clamp(e - 110, 0, 15);

    private static double Conditional(byte[] symbols, Func<int, int> context)
    {
        var counts = new Dictionary<int, uint[]>();
        for (int i = 0; i < symbols.Length; i++)
        {
            int c = context(i);
            if (!counts.TryGetValue(c, out var h)) counts[c] = h = new uint[256];
            h[symbols[i]]++;
        }
        double bits = 0;
        foreach (var h in counts.Values) bits += EntropyBound.Bits(h, h.Sum(x => (long)x));
        return bits;
    }
}
