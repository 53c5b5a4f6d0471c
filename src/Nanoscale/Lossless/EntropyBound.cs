namespace Nanoscale.Lossless;

/// <summary>Order-0 entropy of byte histograms: the bound a static per-chunk coder is measured against (SPEC §9).</summary>
internal static class EntropyBound
{
    /// <summary>Total Shannon information of <paramref name="count"/> symbols with these counts, in bits: n·H.</summary>
    public static double Bits(ReadOnlySpan<uint> counts, long count)
    {
        if (count == 0) return 0;
        // n·H = n·log2 n − Σ c·log2 c
        double sum = 0;
        foreach (uint c in counts)
            if (c > 1) sum += c * Math.Log2(c);
        return Math.Max(0, count * Math.Log2(count) - sum);
    }

    /// <summary>Entropy of a byte sequence in bits per byte.</summary>
    public static double BitsPerSymbol(ReadOnlySpan<byte> symbols)
    {
        if (symbols.IsEmpty) return 0;
        Span<uint> counts = stackalloc uint[256];
        BytePlanes.Histogram(symbols, counts);
        return Bits(counts, symbols.Length) / symbols.Length;
    }
}
