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
        var ggml = LlamaCppGgml.Load();
        var decoded = ggml.Dequantize("mxfp4", ggml.Quantize("mxfp4", block, 1, 32), 32);
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

public class LlamaCppRealWeightsCrossCheckTests
{
    /// <summary>
    /// Quantizes real GPT-2 attention rows to MXFP4 with llama.cpp and with Nanoscale. The shared scales must agree
    /// block for block, and every element where the decoded values differ must be an exact tie: v / 2^X halfway
    /// between the two neighbouring E2M1 values, which llama.cpp resolves by its own rule and we resolve to even.
    /// </summary>
    [Theory]
    [InlineData("h.0.attn.q_proj.weight")]
    [InlineData("h.5.attn.v_proj.weight")]
    [InlineData("h.11.attn.out_proj.weight")]
    public void OnlyTiesDifferFromLlamaCpp(string tensorName)
    {
        using var file = Nanoscale.IO.SafetensorsFile.Open(SharedData.Gpt2Attn);
        using var view = file.Map(file.Find(tensorName)!);
        var weights = view.ToFloatArray();
        const int rows = 768, cols = 768, blocks = rows * cols / 32;

        var ggml = LlamaCppGgml.Load();
        var theirs = ggml.Dequantize("mxfp4", ggml.Quantize("mxfp4", weights, rows, cols), rows * cols);
        var codec = Nanoscale.Codecs.CodecRegistry.CreateBlockCodec("mxfp4");
        var packed = new byte[blocks * codec.BytesPerBlock];
        var scales = new byte[blocks];
        codec.Quantize(weights, rows, cols, [], Nanoscale.Formats.CodecOptions.Default, 0, packed, scales);
        var ours = new float[rows * cols];
        codec.Dequantize(packed, scales, [], rows, cols, Nanoscale.Formats.CodecOptions.Default, ours);

        float[] grid = [0, 0.5f, 1, 1.5f, 2, 3, 4, 6];
        int differences = 0, ties = 0;
        for (int i = 0; i < ours.Length; i++)
        {
            if (ours[i] == theirs[i] || (ours[i] == 0 && theirs[i] == 0)) continue;
            differences++;
            float scale = MathF.Pow(2, scales[i / 32] - 127);
            float x = Math.Abs(weights[i]) / scale, a = Math.Abs(ours[i]) / scale, b = Math.Abs(theirs[i]) / scale;
            Assert.True(Math.Sign(ours[i]) * Math.Sign(theirs[i]) >= 0, $"element {i}: signs differ ({ours[i]} vs {theirs[i]})");
            int ia = Array.IndexOf(grid, a), ib = Array.IndexOf(grid, b);
            Assert.True(ia >= 0 && ib >= 0 && Math.Abs(ia - ib) == 1, $"element {i}: {ours[i]} vs {theirs[i]} are not neighbours (scale mismatch?)");
            Assert.True(Math.Abs(x - a) == Math.Abs(x - b), $"element {i}: {weights[i]} is not a tie between {ours[i]} and {theirs[i]}");
            ties++;
        }
        Assert.Equal(differences, ties);
        // Real bf16-rounded weights do hit ties (about 0.47% of elements here), so the check is not vacuous.
        Assert.InRange(differences, 100, ours.Length / 100);
    }
}
