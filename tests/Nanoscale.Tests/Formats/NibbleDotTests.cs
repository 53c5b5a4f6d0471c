using Nanoscale.Formats;

namespace Nanoscale.Tests.Formats;

/// <summary>The 4-bit integer step kernel's activation quantizer (vectorised) against its scalar twin, byte for byte,
/// and the pair layout the kernel reads.</summary>
public class NibbleDotTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void VectorQuantizerEqualsTheScalarTwinByteForByte(bool evensThenOdds)
    {
        var random = new Random(evensThenOdds ? 2 : 1);
        Span<sbyte> fast = stackalloc sbyte[32], reference = stackalloc sbyte[32];
        var x = new float[32];
        for (int trial = 0; trial < 2000; trial++)
        {
            int kind = trial % 5;
            for (int i = 0; i < 32; i++)
                x[i] = kind switch
                {
                    0 => 0f,                                                                          // all zero: scale 0
                    1 => (float)((random.Next(255) - 127) / 127.0 * 3.0),                             // many exact ties
                    2 => (float)((random.NextDouble() - 0.5) * 1e-40),                                // subnormals
                    3 => (float)((random.NextDouble() - 0.5) * 3e38),                                 // near the top
                    _ => (float)((random.NextDouble() - 0.5) * Math.Exp(random.Next(-20, 20))),
                };
            if (kind == 1) x[random.Next(32)] = 3f;                                                   // amax = 3 exactly
            int sumFast = NibbleDot.QuantizeBlock(x, evensThenOdds, fast, out float scaleFast);
            int sumReference = NibbleDot.QuantizeBlockReference(x, evensThenOdds, reference, out float scaleReference);
            Assert.Equal(scaleReference, scaleFast);
            Assert.Equal(sumReference, sumFast);
            Assert.True(fast.SequenceEqual(reference), $"trial {trial} (kind {kind}): codes differ");
        }
    }

    /// <summary>The integer products with AVX-VNNI (vpdpbusd) equal the AVX2 pair (vpmaddubsw + vpmaddwd) lane for lane,
    /// at the extremes the kernels allow: unsigned weights up to 64 with both halves added in int16, up to 127 widened
    /// apart, int8's sign trick with |w| = 128; activations ±127.</summary>
    [Fact]
    public void VnniProductsEqualTheAvx2Pair()
    {
        if (!System.Runtime.Intrinsics.X86.AvxVnni.IsSupported || !NibbleDot.IsSupported)
        {
            Assert.False(System.Runtime.Intrinsics.X86.AvxVnni.IsSupported, "VNNI without AVX2?");
            return; // the AVX2 pair is the only path on this CPU
        }
        var random = new Random(5);
        var ones = System.Runtime.Intrinsics.Vector256.Create((short)1);
        static System.Runtime.Intrinsics.Vector256<sbyte> Bytes(Random random, int low, int high, int trial) =>
            System.Runtime.Intrinsics.Vector256.Create([.. Enumerable.Range(0, 32).Select(_ => (sbyte)(trial % 3 == 0 ? (random.Next(2) == 0 ? low : high - 1) : random.Next(low, high)))]);
        for (int trial = 0; trial < 3000; trial++)
        {
            var qLo = Bytes(random, -127, 128, trial);
            var qHi = Bytes(random, -127, 128, trial);
            var lo = Bytes(random, 0, 65, trial);
            var hi = Bytes(random, 0, 65, trial);
            Assert.Equal(NibbleDot.UnsignedTimesSigned<NibbleDot.PairTables>(lo, hi, qLo, qHi, vnni: false, ones),
                NibbleDot.UnsignedTimesSigned<NibbleDot.PairTables>(lo, hi, qLo, qHi, vnni: true, ones));
            var wideLo = Bytes(random, 0, 128, trial);
            var wideHi = Bytes(random, 0, 128, trial);
            Assert.Equal(NibbleDot.UnsignedTimesSigned<NibbleDot.WidePairTables>(wideLo, wideHi, qLo, qHi, vnni: false, ones),
                NibbleDot.UnsignedTimesSigned<NibbleDot.WidePairTables>(wideLo, wideHi, qLo, qHi, vnni: true, ones));
            var w = Bytes(random, -128, 128, trial);
            var magnitudes = System.Runtime.Intrinsics.X86.Avx2.Abs(w);
            var signed = System.Runtime.Intrinsics.X86.Avx2.Sign(qLo, w);
            Assert.Equal(Int8Dot.BlockProducts(magnitudes, signed, vnni: false, ones), Int8Dot.BlockProducts(magnitudes, signed, vnni: true, ones));
        }
    }

    /// <summary>Pairs of blocks are stored by 16-byte halves (block 2p's first half, block 2p+1's first half, then both
    /// second halves); an odd last block as it is; the bias vector carries bias·Σq in the first lane of each block.</summary>
    [Fact]
    public void ActivationsArePairedByHalves()
    {
        var x = Enumerable.Range(0, 96).Select(i => (float)(i % 32 + 1) * (i / 32 + 1)).ToArray();
        var a = new NibbleDot.Activations();
        a.Set(x, evensThenOdds: false, bias: 8);
        Span<sbyte> block = stackalloc sbyte[32];
        var expected = new sbyte[3][];
        for (int j = 0; j < 3; j++)
        {
            Assert.Equal(NibbleDot.QuantizeBlockReference(x.AsSpan(j * 32, 32), false, block, out float s), a.Sums[j]);
            Assert.Equal(s, a.Scales[j]);
            expected[j] = block.ToArray();
        }
        Assert.Equal(expected[0][..16], a.Q[0..16]);
        Assert.Equal(expected[1][..16], a.Q[16..32]);
        Assert.Equal(expected[0][16..], a.Q[32..48]);
        Assert.Equal(expected[1][16..], a.Q[48..64]);
        Assert.Equal(expected[2], a.Q[64..96]);
        Assert.Equal(8 * a.Sums[0], a.Bias[0]);
        Assert.Equal(8 * a.Sums[1], a.Bias[4]);
        Assert.Equal(0, a.Bias[1] | a.Bias[2] | a.Bias[3] | a.Bias[5] | a.Bias[6] | a.Bias[7]);
    }

    /// <summary>With a scale per 16 weights (NVFP4), each block's activation sum splits over its two halves (elements
    /// 0–15 and 16–31; in evens-then-odds order q[0..7] + q[16..23] and q[8..15] + q[24..31]), and the bias lands in
    /// the first int32 lane of each half.</summary>
    [Fact]
    public void HalvesSplitEachBlocksSum()
    {
        var random = new Random(5);
        var x = Enumerable.Range(0, 64).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray();
        var a = new NibbleDot.Activations();
        a.Set(x, evensThenOdds: true, bias: 12, halves: true);
        for (int j = 0; j < 2; j++)
        {
            var (first, second) = (0.0, 0.0);
            for (int i = 0; i < 32; i++)
            {
                double q = Math.Round(x[j * 32 + i] / a.Scales[j], MidpointRounding.ToEven);
                if (i < 16) first += q; else second += q;
            }
            Assert.Equal(first, a.HalfSums[2 * j]);
            Assert.Equal(second, a.HalfSums[2 * j + 1]);
            Assert.Equal(a.Sums[j], a.HalfSums[2 * j] + a.HalfSums[2 * j + 1]);
        }
        Assert.Equal([12 * a.HalfSums[0], 0, 12 * a.HalfSums[1], 0, 12 * a.HalfSums[2], 0, 12 * a.HalfSums[3], 0], a.Bias[..8]);
    }

    /// <summary>A set keeps its results only while the same activations (bit for bit) come with the same parameters:
    /// after every change (an element, its sign bit, the order, the bias, half sums, the length) it equals a fresh set.</summary>
    [Fact]
    public void ASetIsKeptOnlyForTheSameActivations()
    {
        var random = new Random(9);
        float[] x = [.. Enumerable.Range(0, 5 * 32).Select(_ => (float)(random.NextDouble() * 4 - 2))];
        var kept = new NibbleDot.Activations();
        void Check(int length, bool evensThenOdds, int bias, bool halves)
        {
            kept.Set(x.AsSpan(0, length), evensThenOdds, bias, halves);
            var fresh = new NibbleDot.Activations();
            fresh.Set(x.AsSpan(0, length), evensThenOdds, bias, halves);
            int nb = length / 32;
            Assert.Equal(nb, kept.Blocks);
            Assert.Equal(fresh.Q.AsSpan(0, length).ToArray(), kept.Q.AsSpan(0, length).ToArray());
            Assert.Equal(fresh.Scales.AsSpan(0, nb).ToArray(), kept.Scales.AsSpan(0, nb).ToArray());
            Assert.Equal(fresh.Sums.AsSpan(0, nb).ToArray(), kept.Sums.AsSpan(0, nb).ToArray());
            Assert.Equal(fresh.Spread.AsSpan(0, 4 * nb).ToArray(), kept.Spread.AsSpan(0, 4 * nb).ToArray());
            Assert.Equal(fresh.Bias.AsSpan(0, 4 * nb).ToArray(), kept.Bias.AsSpan(0, 4 * nb).ToArray());
            if (halves) Assert.Equal(fresh.HalfSums.AsSpan(0, 2 * nb).ToArray(), kept.HalfSums.AsSpan(0, 2 * nb).ToArray());
        }
        Check(160, true, 12, false);
        Check(160, true, 12, false);   // the same: kept
        x[100] = -x[100];              // changed in place
        Check(160, true, 12, false);
        x[7] = 0f;
        Check(160, true, 12, false);
        x[7] = -0f;                    // equal as floats, another bit pattern: recomputed
        Check(160, true, 12, false);
        Check(160, false, 12, false);  // the other nibble order
        Check(160, false, 8, false);   // another bias
        Check(160, false, 8, true);    // half sums asked for
        Check(128, false, 8, true);    // a shorter vector (the first four blocks)
        x[159] = 1e30f;                // the last element
        Check(160, false, 8, true);
    }
}
