using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Formats;

public class LlamaCppCrossCheckTests
{
    [Fact]
    public void LlamaCppMxfp4MatchesTheSpecExample()
    {
        // SPEC §4: E2M1 block {5.9, 7, 0.25, 0.75, 1.25, −2.5, 3.5, 0…}: amax 7 → X = 0 →
        // ties to even {6, 6, 0, 1, 1, −2, 4, …}; ties away from zero {6, 6, 0.5, 1, 1.5, −3, 4, …}.
        var block = new float[32];
        float[] head = [5.9f, 7, 0.25f, 0.75f, 1.25f, -2.5f, 3.5f];
        head.CopyTo(block, 0);
        var ggml = LlamaCppMxfp4.Load();
        var decoded = ggml.Dequantize(ggml.Quantize(block, 1, 32), 32);
        Assert.Equal(6f, decoded[0]);
        Assert.Equal(6f, decoded[1]);
        // The ties (0.25, 0.75, 1.25, −2.5, 3.5) land on one of their two neighbours; which one is ggml's choice.
        Assert.Contains(decoded[6], new[] { 3f, 4f });
        Assert.Contains(decoded[2], new[] { 0f, 0.5f });
        Assert.Contains(decoded[3], new[] { 0.5f, 1f });
        Assert.Contains(decoded[4], new[] { 1f, 1.5f });
        Assert.Contains(decoded[5], new[] { -2f, -3f });
        Assert.All(decoded[7..], v => Assert.Equal(0f, v));
    }
}
