using Nanoscale.Lossless;

namespace Nanoscale.Tests.Lossless;

public class RansTests
{
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
        RansFrequencies.BuildDecodeTable(freqs, dec, Rans.NarrowStates);
        RansFrequencies.BuildDecodeTable(freqs, dec, Rans.WideStates);
        return (freqs, enc, dec);
    }

    public static TheoryData<string, int> DistributionsAndStates()
    {
        var data = new TheoryData<string, int>();
        foreach (var kind in new[] { "skewed", "uniform", "constant", "two", "geometric", "rare" })
            foreach (int states in new[] { Rans.NarrowStates, Rans.WideStates }) data.Add(kind, states);
        return data;
    }

    /// <summary>The loops a stream of <paramref name="states"/> can be decoded with here: the scalar one always, the
    /// vector ones of wide streams (AVX2, AVX-512) where the machine has them.</summary>
    private static Rans.WideLoop[] Loops(int states) =>
        states == Rans.WideStates ? [.. Enum.GetValues<Rans.WideLoop>().Where(Rans.Runs)] : [Rans.WideLoop.Scalar];

    [Theory]
    [MemberData(nameof(DistributionsAndStates))]
    public void FastCoderMatchesReferenceByteForByteAtEveryShortLengthAndLarge(string kind, int states)
    {
        int[] lengths = [.. Enumerable.Range(0, 70), 255, 1000, 4097, 100_003];
        foreach (int n in lengths)
        {
            var data = Make(kind, n, n);
            var (freqs, enc, dec) = Tables(data);
            var reference = RansReference.Encode(data, freqs, states);
            var buffer = new byte[Rans.MaxEncodedLength(n, states)];
            int length = Rans.Encode(data, enc, buffer, states);
            Assert.Equal(reference, buffer[..length]);

            foreach (var loop in Loops(states))
            {
                var decoded = new byte[n];
                Assert.Equal(RansStatus.Ok, Rans.Decode(reference, dec, decoded, states, loop, out _));
                Assert.Equal(data, decoded);
            }
            Assert.Equal(data, RansReference.Decode(reference, freqs, n, states));
        }
    }

    /// <summary>Every vector loop this machine runs (AVX2's permuted words, AVX-512's expanded ones) gives the scalar
    /// loop's status, offset and bytes on 400 damaged streams (bits flipped, cut, extended).</summary>
    [Fact]
    public void TheVectorDecodersEqualTheScalarOneOnDamagedStreams()
    {
        var vectors = Loops(Rans.WideStates).Where(l => l != Rans.WideLoop.Scalar).ToArray();
        if (vectors.Length == 0) return; // nothing to compare on this machine: the scalar loop is the only one
        var rng = new Random(5);
        for (int trial = 0; trial < 400; trial++)
        {
            var data = Make(trial % 2 == 0 ? "geometric" : "skewed", 500 + rng.Next(5000), trial);
            var (_, enc, dec) = Tables(data);
            var buffer = new byte[Rans.MaxEncodedLength(data.Length)];
            int length = Rans.Encode(data, enc, buffer);
            var stream = buffer[..length];
            // Flip a few bits anywhere (states included), or cut or extend the stream by a few words.
            switch (trial % 3)
            {
                case 0:
                    for (int k = 0; k < 1 + rng.Next(3); k++) stream[rng.Next(length)] ^= (byte)(1 << rng.Next(8));
                    break;
                case 1: stream = stream[..Math.Max(0, length - 2 * (1 + rng.Next(40)))]; break;
                default: stream = [.. stream, .. Enumerable.Range(0, 2 * (1 + rng.Next(40))).Select(_ => (byte)rng.Next(256))]; break;
            }
            var scalar = new byte[data.Length];
            var scalarStatus = Rans.Decode(stream, dec, scalar, Rans.WideStates, Rans.WideLoop.Scalar, out int scalarAt);
            foreach (var loop in vectors)
            {
                var vector = new byte[data.Length];
                var vectorStatus = Rans.Decode(stream, dec, vector, Rans.WideStates, loop, out int vectorAt);
                Assert.Equal(scalarStatus, vectorStatus);
                Assert.Equal(scalarAt, vectorAt);
                Assert.Equal(scalar, vector);
            }
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

    [Theory]
    [InlineData(Rans.NarrowStates)]
    [InlineData(Rans.WideStates)]
    public void DecoderRejectsTruncatedAndExtendedStreamsWithoutReadingPastTheEnd(int states)
    {
        var data = Make("geometric", 10_000, 3);
        var (freqs, enc, dec) = Tables(data);
        var buffer = new byte[Rans.MaxEncodedLength(data.Length, states)];
        int length = Rans.Encode(data, enc, buffer, states);
        var decoded = new byte[data.Length];
        foreach (var loop in Loops(states))
        {
            for (int cut = 0; cut < length; cut += 1 + cut / 7)
            {
                // Copy to an exact-size array so any overrun would hit the end of the array, not spare capacity.
                var truncated = buffer[..cut];
                Assert.NotEqual(RansStatus.Ok, Rans.Decode(truncated, dec, decoded, states, loop, out int at));
                Assert.InRange(at, 0, cut);
                Assert.Null(RansReference.Decode(truncated, freqs, data.Length, states));
            }
            var extended = buffer[..(length + 2)];
            Assert.Equal(RansStatus.TrailingData, Rans.Decode(extended, dec, decoded, states, loop, out _));
        }
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
