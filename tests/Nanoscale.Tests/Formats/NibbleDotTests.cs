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
}
