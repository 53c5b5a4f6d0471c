using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// 16-bit key/value caches (<see cref="RuntimeOptions.KvCache"/>): the attention kernel reading them equals the float
/// kernel on the widened numbers exactly, every path that writes and reads the cache (windows, steps, several
/// sequences in one pass) agrees, the model stays close to its f32 cache, and the memory and the KV budget halve.
/// </summary>
public class KvCacheTests
{
    private static readonly Lazy<ICheckpoint> Checkpoint = new(() => CheckpointLoader.Open(SharedData.Stories260K));

    private static LlamaModel Stories(KvCacheType type) => LlamaModel.Load(Checkpoint.Value, new RuntimeOptions { KvCache = type });

    private static int[] StoryTokens(int count)
    {
        var tokenizer = Llama2cTokenizer.Load(SharedData.Tok512);
        string story = Perplexity.SplitDocuments(File.ReadAllText(SharedData.TinyStoriesText), "<|endoftext|>")[0];
        return tokenizer.Encode(story, addBos: true)[..count];
    }

    /// <summary>The 16-bit attention row = the float attention row over the same numbers widened beforehand, bit for
    /// bit (heads of 64 and 48, a head at an offset inside wider rows; halves include subnormals).</summary>
    [Theory]
    [InlineData(false, 64, 37)]
    [InlineData(true, 64, 37)]
    [InlineData(false, 48, 5)]
    [InlineData(true, 8, 1)]
    public void TheSixteenBitRowEqualsTheFloatRowOnTheWidenedNumbers(bool bfloat16, int headDim, int positions)
    {
        if (!Kernels.AttendRowApplies(headDim)) return; // no AVX2 here: the generic loops run
        var random = new Random(headDim + positions);
        int stride = 3 * headDim, offset = headDim, length = positions * stride;
        var type = bfloat16 ? KvCacheType.BF16 : KvCacheType.F16;
        float[] Draw() => [.. Enumerable.Range(0, length).Select(i => i % 7 == 0 ? (float)(random.NextDouble() * 1e-6) : (float)(random.NextDouble() * 8 - 4))];
        var keys = new ushort[length];
        var values = new ushort[length];
        InferenceSession.Narrow(Draw(), keys, type);
        InferenceSession.Narrow(Draw(), values, type);
        var dtype = bfloat16 ? DType.BF16 : DType.F16;
        float[] Widen(ushort[] bits)
        {
            var floats = new float[bits.Length];
            TensorData.ToFloat(System.Runtime.InteropServices.MemoryMarshal.AsBytes(bits.AsSpan()), dtype, floats);
            return floats;
        }
        if (!bfloat16) Assert.Contains(keys, k => (k & 0x7C00) == 0 && k != 0); // subnormal halves are in play
        float[] query = [.. Enumerable.Range(0, headDim).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float scale = 1f / MathF.Sqrt(headDim);
        var expectedScores = new float[positions];
        var expected = new float[headDim];
        Kernels.AttendRow(query, Widen(keys), Widen(values), stride, offset, scale, expectedScores, expected);
        var scores = new float[positions];
        var output = new float[headDim];
        Kernels.AttendRowHalves(query, keys, values, bfloat16, stride, offset, scale, scores, output);
        Assert.Equal(expectedScores, scores);
        Assert.Equal(expected, output);
        Assert.Throws<ArgumentException>(() => Kernels.AttendRowHalves(query, keys.AsSpan(0, length - stride), values, bfloat16, stride, offset, scale, scores, output));
    }

    /// <summary>Narrowing rounds to nearest even; F16 saturates beyond ±65504 instead of storing infinities (an
    /// infinite key makes every score NaN); NaN stays NaN.</summary>
    [Fact]
    public void NarrowingRoundsAndF16Saturates()
    {
        float[] source = [1e6f, -1e9f, 65504f, 1.0009765625f + 1e-7f, float.NaN, 3.3e-8f];
        var f16 = new ushort[source.Length];
        InferenceSession.Narrow(source, f16, KvCacheType.F16);
        Assert.Equal(65504f, (float)BitConverter.UInt16BitsToHalf(f16[0]));
        Assert.Equal(-65504f, (float)BitConverter.UInt16BitsToHalf(f16[1]));
        Assert.Equal(65504f, (float)BitConverter.UInt16BitsToHalf(f16[2]));
        Assert.Equal((float)(Half)source[3], (float)BitConverter.UInt16BitsToHalf(f16[3]));
        Assert.True(Half.IsNaN(BitConverter.UInt16BitsToHalf(f16[4])));
        Assert.Equal((float)(Half)3.3e-8f, (float)BitConverter.UInt16BitsToHalf(f16[5])); // a subnormal half
        var bf16 = new ushort[source.Length];
        InferenceSession.Narrow(source, bf16, KvCacheType.BF16);
        for (int i = 0; i < source.Length; i++) Assert.Equal(TensorData.SingleToBFloat16(source[i]), bf16[i]);
    }

    /// <summary>stories260K over a TinyStories window of 96 tokens and 24 steps: a 16-bit cache moves the logits by a
    /// small fraction of their range (measured: f16 1.1e-3, bf16 5.9e-3) and the greedy choices stay the f32 cache's.</summary>
    [Theory]
    [InlineData(KvCacheType.F16, 4e-3)]
    [InlineData(KvCacheType.BF16, 1.5e-2)]
    public void ASixteenBitCacheStaysCloseToF32(KvCacheType type, double tolerance)
    {
        var exact = Stories(KvCacheType.F32).CreateSession(128);
        var narrow = Stories(type).CreateSession(128);
        Assert.Equal(type, narrow.KvCache);
        int[] tokens = StoryTokens(120);
        int vocab = exact.Model.Config.VocabSize;
        var a = new float[96 * vocab];
        var b = new float[96 * vocab];
        exact.Forward(tokens[..96], a);
        narrow.Forward(tokens[..96], b);
        double worst = Deviation(a, b);
        int agree = 0;
        for (int t = 96; t < 120; t++)
        {
            float[] x = exact.Step(tokens[t]), y = narrow.Step(tokens[t]);
            worst = Math.Max(worst, Deviation(x, y));
            agree += Kernels.ArgMax(x) == Kernels.ArgMax(y) ? 1 : 0;
        }
        Assert.True(worst <= tolerance, $"{type}: largest deviation {worst:g3} of the logits' range");
        Assert.True(worst > 0, "the 16-bit cache was not used");
        Assert.True(agree >= 22, $"{agree} of 24 greedy choices agree");
    }

    private static double Deviation(float[] a, float[] b)
    {
        double range = a.Max() - a.Min(), worst = 0;
        for (int i = 0; i < a.Length; i++) worst = Math.Max(worst, Math.Abs(a[i] - b[i]) / range);
        return worst;
    }

    /// <summary>With a 16-bit cache, a window (keys widened per work item) and steps (widened inside the attention
    /// row) and a pass of several sequences (<see cref="InferenceSession.StepMany"/>) read the same stored numbers:
    /// the logits agree as the f32 paths do, up to float summation order (and a 16-bit rounding that order may flip).</summary>
    [Theory]
    [InlineData(KvCacheType.F16)]
    [InlineData(KvCacheType.BF16)]
    public void WindowsStepsAndBatchesReadTheSameSixteenBitCache(KvCacheType type)
    {
        var model = Stories(type);
        int[] tokens = StoryTokens(40);
        int vocab = model.Config.VocabSize;
        var window = model.CreateSession(64);
        var windowLogits = new float[40 * vocab];
        window.Forward(tokens, windowLogits);
        var stepped = model.CreateSession(64);
        var together = model.CreateSession(64);
        var other = model.CreateSession(64);
        other.Forward(tokens[..7], new float[7 * vocab]);
        var batch = new float[2 * vocab];
        for (int t = 0; t < 40; t++)
        {
            float[] step = stepped.Step(tokens[t]);
            InferenceSession.StepMany([together, other], [tokens[t], tokens[(t + 7) % 40]], batch);
            float[] expected = windowLogits[(t * vocab)..((t + 1) * vocab)];
            double range = expected.Max() - expected.Min();
            for (int v = 0; v < vocab; v++)
            {
                Assert.True(Math.Abs(step[v] - expected[v]) <= 2e-3 * range, $"step {t}, token {v}: {step[v]} vs the window's {expected[v]}");
                Assert.True(Math.Abs(batch[v] - step[v]) <= 2e-3 * range, $"batch {t}, token {v}: {batch[v]} vs the step's {step[v]}");
            }
        }
    }

    /// <summary>A 16-bit cache holds half the bytes per position: a session's allocation, and the KV budget of the
    /// completion service, which then admits a request twice as long.</summary>
    [Fact]
    public void ASixteenBitCacheHalvesTheMemoryAndTheBudgetCount()
    {
        long Allocated(KvCacheType type)
        {
            var model = Stories(type);
            long before = GC.GetAllocatedBytesForCurrentThread();
            var session = model.CreateSession(256);
            long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            GC.KeepAlive(session);
            return bytes;
        }
        long f32 = Allocated(KvCacheType.F32), f16 = Allocated(KvCacheType.F16);
        // stories260K: 5 layers × 2 × 256 positions × 32 numbers = 81 920 numbers; the rotary tables are the rest.
        Assert.InRange(f32 - f16, 81_920 * 2 - 4096, 81_920 * 2 + 4096);
        using var exact = new CompletionService(LoadedModel.Open(SharedData.Stories260K), "s", kvBudgetBytes: 100_000);
        using var half = new CompletionService(LoadedModel.Open(SharedData.Stories260K, new ModelLoadOptions { KvCache = KvCacheType.F16 }), "s",
            kvBudgetBytes: 100_000);
        Assert.Equal(5L * 2 * 100 * 32 * 4, exact.KvBytes(100));
        Assert.Equal(exact.KvBytes(100) / 2, half.KvBytes(100));
    }

    [Fact]
    public void AnUnknownCacheTypeIsRefusedByName()
    {
        var result = CliProcess.Run("generate", SharedData.Stories260K, "--kv-cache", "q8");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--kv-cache must be f32, f16 or bf16, not 'q8'", result.Stderr);
    }
}
