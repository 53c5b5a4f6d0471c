using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Formats;

/// <summary>
/// The generation step's products on stored codes (issue 14's first kernel, MXFP4) against their reference twin:
/// decode the rows with the reference kernel, then multiply in double.
/// </summary>
public class FusedDotTests
{
    [Theory]
    [InlineData(1, 32, 1)]
    [InlineData(7, 256, 2)]
    [InlineData(64, 2048, 3)]
    public void Mxfp4DotOnTheCodesEqualsDecodeThenMultiply(int rows, int cols, int seed)
    {
        var codec = CodecRegistry.CreateBlockCodec("mxfp4");
        var random = new Random(seed);
        // Heavy-tailed weights over several binades, so the blocks' scales differ.
        float[] w = [.. Enumerable.Range(0, rows * cols).Select(_ => (float)(Math.Exp(random.NextDouble() * 8 - 4) * (random.Next(2) * 2 - 1)))];
        float[] x = [.. Enumerable.Range(0, cols).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        var blocks = new byte[rows * codec.BlocksPerRow(cols) * codec.BytesPerBlock];
        var scales = new byte[rows * codec.BlocksPerRow(cols) * codec.ScaleBytesPerBlock];
        codec.Quantize(w, rows, cols, [], new CodecOptions(), 0, blocks, scales);

        var y = new float[rows];
        if (!codec.TryDotRows(blocks, scales, [], rows, cols, x, y))
        {
            Assert.False(System.Runtime.Intrinsics.X86.Avx2.IsSupported && System.Runtime.Intrinsics.X86.Fma.IsSupported, "AVX2+FMA machine without the kernel");
            return;
        }
        var decoded = new float[rows * cols];
        codec.Dequantize(blocks, scales, [], rows, cols, new CodecOptions { Kernel = CodecKernel.Reference }, decoded);
        for (int r = 0; r < rows; r++)
        {
            double exact = 0, magnitude = 0;
            for (int c = 0; c < cols; c++)
            {
                exact += (double)decoded[r * cols + c] * x[c];
                magnitude += Math.Abs((double)decoded[r * cols + c] * x[c]);
            }
            // float accumulation over cols terms: a few ulps of the sum of magnitudes.
            Assert.True(Math.Abs(y[r] - exact) <= 1e-6 * magnitude + 1e-30, $"row {r}: {y[r]} vs {exact} (Σ|w·x| = {magnitude})");
        }
    }

    [Fact]
    public void OtherFormatsAndPartialBlocksFallBackToDecoding()
    {
        var y = new float[1];
        Assert.False(CodecRegistry.CreateBlockCodec("mxfp8").TryDotRows(new byte[32], new byte[1], [], 1, 32, new float[32], y));
        Assert.False(CodecRegistry.CreateBlockCodec("mxfp4").TryDotRows(new byte[32], new byte[2], [], 1, 40, new float[40], y));
    }

    [Fact]
    public void GenerationOnMxfp4WeightsIsTheSameWithAndWithoutTheFusedKernel()
    {
        using var dir = new TempDir();
        var compressed = dir.File("m.safetensors");
        CompressionRun.Run(SharedData.Stories260K, compressed, new CompressionRequest { Format = "mxfp4", MeasureError = false });
        using var checkpoint = LogicalCheckpoint.Open(compressed);
        using var weights = new LogicalWeightSource(checkpoint);
        var tokenizer = TokenizerLoader.Open(SharedData.Tok512, 512);
        var fused = LlamaModel.Load(checkpoint.Config!, weights, new RuntimeOptions { FusedKernels = true });
        var decoded = LlamaModel.Load(checkpoint.Config!, weights, new RuntimeOptions { FusedKernels = false });

        var a = Generation.Greedy(fused, tokenizer, "Once upon a time", 40);
        var b = Generation.Greedy(decoded, tokenizer, "Once upon a time", 40);
        Assert.Equal(b.Tokens, a.Tokens);

        // The step's logits agree to float summation order.
        var sa = fused.CreateSession(8);
        var sb = decoded.CreateSession(8);
        sa.Forward([1], new float[512]);
        sb.Forward([1], new float[512]);
        float[] la = sa.Step(403), lb = sb.Step(403);
        double scale = lb.Max(Math.Abs);
        for (int i = 0; i < la.Length; i++) Assert.True(Math.Abs(la[i] - lb[i]) <= 1e-5 * scale, $"logit {i}: {la[i]} vs {lb[i]}");
    }
}
