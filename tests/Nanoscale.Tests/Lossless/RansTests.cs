using Nanoscale.Lossless;

namespace Nanoscale.Tests.Lossless;

public class RansTests
{
    public static TheoryData<string> Distributions => new() { "skewed", "uniform", "constant", "two", "geometric", "rare" };

    private static byte[] Make(string kind, int n, int seed)
    {
        var rng = new Random(seed);
        var data = new byte[n];
        for (int i = 0; i < n; i++)
        {
            data[i] = kind switch
            {
                "skewed" => (byte)(120 + (int)Math.Round(rng.NextDouble() * rng.NextDouble() * 12)),
                "uniform" => (byte)rng.Next(256),
                "constant" => 77,
                "two" => (byte)(rng.Next(10) == 0 ? 1 : 200),
                "geometric" => (byte)Math.Min(255, (int)(-Math.Log(1 - rng.NextDouble()) * 3)),
                _ => (byte)(rng.Next(100000) == 0 ? rng.Next(256) : 5), // a few symbols far below 1/4096
            };
        }
        return data;
    }

    private static (uint[] Freqs, RansEncSymbol[] Enc, RansDecodeTable Dec) Tables(byte[] data)
    {
        var counts = new uint[256];
        foreach (byte b in data) counts[b]++;
        if (data.Length == 0) counts[0] = 1;
        var freqs = new uint[256];
        RansFrequencies.Normalize(counts, freqs);
        var enc = new RansEncSymbol[256];
        RansFrequencies.BuildEncodeTable(freqs, enc);
        var dec = new RansDecodeTable();
        RansFrequencies.BuildDecodeTable(freqs, dec);
        return (freqs, enc, dec);
    }

    [Theory]
    [MemberData(nameof(Distributions))]
    public void FastCoderMatchesReferenceByteForByteAtEveryShortLengthAndLarge(string kind)
    {
        int[] lengths = [.. Enumerable.Range(0, 40), 255, 1000, 4097, 100_003];
        foreach (int n in lengths)
        {
            var data = Make(kind, n, n);
            var (freqs, enc, dec) = Tables(data);
            var reference = RansReference.Encode(data, freqs);
            var buffer = new byte[Rans.MaxEncodedLength(n)];
            int length = Rans.Encode(data, enc, buffer);
            Assert.Equal(reference, buffer[..length]);

            var decoded = new byte[n];
            Assert.Equal(RansStatus.Ok, Rans.Decode(reference, dec, decoded, out _));
            Assert.Equal(data, decoded);
            Assert.Equal(data, RansReference.Decode(reference, freqs, n));
        }
    }

    [Fact]
    public void NormalisedFrequenciesSumToScaleAndKeepEveryPresentSymbol()
    {
        var rng = new Random(1);
        for (int trial = 0; trial < 500; trial++)
        {
            var counts = new uint[256];
            int present = 1 + rng.Next(256);
            for (int k = 0; k < present; k++) counts[rng.Next(256)] += (uint)(rng.Next(4) == 0 ? rng.Next(1_000_000) : rng.Next(1, 5));
            if (counts.All(c => c == 0)) counts[3] = 1;
            var freqs = new uint[256];
            RansFrequencies.Normalize(counts, freqs);
            Assert.Equal(Rans.ProbScale, (uint)freqs.Sum(f => (long)f));
            for (int s = 0; s < 256; s++) Assert.Equal(counts[s] > 0, freqs[s] > 0);

            var stored = new byte[RansFrequencies.MaxTableBytes];
            int size = RansFrequencies.Write(freqs, stored);
            Assert.Equal(RansFrequencies.StoredSize(freqs), size);
            var back = new uint[256];
            Assert.Equal(size, RansFrequencies.TryRead(stored.AsSpan(0, size), back, out _));
            Assert.Equal(freqs, back);
        }
    }

    [Fact]
    public void CodedSizeIsCloseToTheEntropy()
    {
        var data = Make("skewed", 1 << 20, 7);
        var (_, enc, _) = Tables(data);
        var buffer = new byte[Rans.MaxEncodedLength(data.Length)];
        int length = Rans.Encode(data, enc, buffer);
        double bound = EntropyBound.BitsPerSymbol(data) * data.Length / 8;
        Assert.InRange(length / bound, 1.0, 1.005);
    }

    [Fact]
    public void DecoderRejectsTruncatedAndExtendedStreamsWithoutReadingPastTheEnd()
    {
        var data = Make("geometric", 10_000, 3);
        var (freqs, enc, dec) = Tables(data);
        var buffer = new byte[Rans.MaxEncodedLength(data.Length)];
        int length = Rans.Encode(data, enc, buffer);
        var decoded = new byte[data.Length];
        for (int cut = 0; cut < length; cut += 1 + cut / 7)
        {
            // Copy to an exact-size array so any overrun would hit the end of the array, not spare capacity.
            var truncated = buffer[..cut];
            Assert.NotEqual(RansStatus.Ok, Rans.Decode(truncated, dec, decoded, out int at));
            Assert.InRange(at, 0, cut);
            Assert.Null(RansReference.Decode(truncated, freqs, data.Length));
        }
        var extended = buffer[..(length + 2)];
        Assert.Equal(RansStatus.TrailingData, Rans.Decode(extended, dec, decoded, out _));
    }

    [Fact]
    public void StoredTablesThatDoNotSumToScaleAreRejected()
    {
        var freqs = new uint[256];
        freqs[0] = 4000;
        freqs[9] = 95;
        var stored = new byte[RansFrequencies.MaxTableBytes];
        int size = RansFrequencies.Write(freqs, stored);
        Assert.Equal(-1, RansFrequencies.TryRead(stored.AsSpan(0, size), new uint[256], out var problem));
        Assert.Contains("sum", problem);
        Assert.Equal(-1, RansFrequencies.TryRead(stored.AsSpan(0, 10), new uint[256], out _));
    }
}
