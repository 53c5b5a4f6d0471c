using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Runtime;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// 16-, 8- and 4-bit key/value caches (<see cref="RuntimeOptions.KvCache"/>): the attention kernel reading them equals the
/// float kernel on the widened numbers exactly, every path that writes and reads the cache (windows, steps, several
/// sequences in one pass) agrees, the model stays close to its f32 cache, and the memory and the KV budget shrink.
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

    /// <summary>The attention row over a 16- or 8-bit cache = the float attention row over the same numbers widened
    /// beforehand (<see cref="KvRows.Widen"/>), bit for bit (heads of 64, 48 and 8, a head at an offset inside wider
    /// rows; halves include subnormals).</summary>
    [Theory]
    [InlineData(KvCacheType.F16, 64, 37)]
    [InlineData(KvCacheType.BF16, 64, 37)]
    [InlineData(KvCacheType.Q8, 64, 37)]
    [InlineData(KvCacheType.F16, 48, 5)]
    [InlineData(KvCacheType.Q8, 48, 5)]
    [InlineData(KvCacheType.BF16, 8, 1)]
    [InlineData(KvCacheType.Q8, 8, 3)]
    [InlineData(KvCacheType.Q4, 64, 37)]
    [InlineData(KvCacheType.Q4, 48, 5)]
    [InlineData(KvCacheType.Q4, 8, 3)]
    public void TheNarrowRowEqualsTheFloatRowOnTheWidenedNumbers(KvCacheType type, int headDim, int positions)
    {
        if (!Kernels.AttendRowApplies(headDim)) return; // no AVX2 here: the generic loops run
        var random = new Random(headDim + positions);
        int stride = 4 * headDim, offset = headDim, length = positions * stride;
        float[] Draw() => [.. Enumerable.Range(0, length).Select(i => i % 7 == 0 ? (float)(random.NextDouble() * 1e-6) : (float)(random.NextDouble() * 8 - 4))];
        KvRows Rows()
        {
            var rows = KvRows.Create(type, stride);
            rows.Resize(length);
            rows.Write(0, Draw());
            return rows;
        }
        KvRows keys = Rows(), values = Rows();
        float[] Widen(KvRows rows)
        {
            var floats = new float[length];
            rows.Widen(0, floats);
            return floats;
        }
        if (keys is HalfKvRows { BFloat16: false } halves) Assert.Contains(halves.Data, k => (k & 0x7C00) == 0 && k != 0); // subnormal halves in play
        float[] query = [.. Enumerable.Range(0, headDim).Select(_ => (float)(random.NextDouble() * 2 - 1))];
        float scale = 1f / MathF.Sqrt(headDim);
        var expectedScores = new float[positions];
        var expected = new float[headDim];
        Kernels.AttendRow(query, Widen(keys), Widen(values), stride, offset, scale, expectedScores, expected);
        var scores = new float[positions];
        var output = new float[headDim];
        Kernels.AttendRow(query, keys, values, stride, offset, scale, scores, output);
        Assert.Equal(expectedScores, scores);
        Assert.Equal(expected, output);
        var shorter = KvRows.Create(type, stride);
        shorter.Resize(length - stride);
        Assert.Throws<ArgumentException>(() => Kernels.AttendRow(query, shorter, values, stride, offset, scale, scores, output));
    }

    /// <summary>Narrowing rounds to nearest even; F16 saturates beyond ±65504 instead of storing infinities (an
    /// infinite key makes every score NaN); NaN stays NaN. Q8: each block of 32 within half a step of its scale
    /// (amax/127); a block with a NaN or an infinity reads back as NaN, the other blocks are untouched.</summary>
    [Fact]
    public void NarrowingRoundsAndSaturatesAndQ8MarksBrokenBlocks()
    {
        float[] source = [1e6f, -1e9f, 65504f, 1.0009765625f + 1e-7f, float.NaN, 3.3e-8f];
        var f16 = new ushort[source.Length];
        HalfKvRows.Narrow(source, f16, bfloat16: false);
        Assert.Equal(65504f, (float)BitConverter.UInt16BitsToHalf(f16[0]));
        Assert.Equal(-65504f, (float)BitConverter.UInt16BitsToHalf(f16[1]));
        Assert.Equal(65504f, (float)BitConverter.UInt16BitsToHalf(f16[2]));
        Assert.Equal((float)(Half)source[3], (float)BitConverter.UInt16BitsToHalf(f16[3]));
        Assert.True(Half.IsNaN(BitConverter.UInt16BitsToHalf(f16[4])));
        Assert.Equal((float)(Half)3.3e-8f, (float)BitConverter.UInt16BitsToHalf(f16[5])); // a subnormal half
        var bf16 = new ushort[source.Length];
        HalfKvRows.Narrow(source, bf16, bfloat16: true);
        for (int i = 0; i < source.Length; i++) Assert.Equal(TensorData.SingleToBFloat16(source[i]), bf16[i]);

        var random = new Random(9);
        float[] numbers = [.. Enumerable.Range(0, 128).Select(_ => (float)(random.NextDouble() * 6 - 3))];
        numbers[40] = float.NaN;          // block 1
        numbers[100] = float.PositiveInfinity; // block 3
        var q8 = KvRows.Create(KvCacheType.Q8, 128);
        q8.Resize(128);
        q8.Write(0, numbers);
        var back = new float[128];
        q8.Widen(0, back);
        foreach (int block in new[] { 0, 2 })
        {
            float amax = numbers.Skip(32 * block).Take(32).Max(Math.Abs);
            for (int i = 32 * block; i < 32 * block + 32; i++) Assert.True(Math.Abs(back[i] - numbers[i]) <= amax / 127 / 2 * 1.0001, $"number {i}");
        }
        Assert.All(back[32..64], v => Assert.True(float.IsNaN(v)));
        Assert.All(back[96..128], v => Assert.True(float.IsNaN(v)));
        Assert.Throws<InvalidOperationException>(() => KvRows.Create(KvCacheType.Q8, 48));
    }

    /// <summary>Q4 as llama.cpp's q4_0: per block of 32 the scale is the largest-magnitude number ÷ −8, so that number
    /// is exact and every other one within half a step (a step = |scale|), except numbers of the other sign beyond 7
    /// steps, kept at 7; each eight numbers' nibbles are four bytes; a broken block reads NaN.</summary>
    [Fact]
    public void Q4RoundsLikeQ4_0AndMarksBrokenBlocks()
    {
        var random = new Random(11);
        float[] numbers = [.. Enumerable.Range(0, 128).Select(_ => (float)(random.NextDouble() * 6 - 3))];
        numbers[5] = -7.5f;                 // block 0: its extreme is negative, so the scale is positive
        numbers[33] = 6.25f;                // block 1: a positive extreme
        numbers[34] = -6.2f;                // ... and the other sign beyond 7 steps: kept at 7 steps
        numbers[70] = float.NaN;            // block 2
        var q4 = KvRows.Create(KvCacheType.Q4, 128);
        q4.Resize(128);
        Assert.Equal(128, q4.Length);
        q4.Write(0, numbers);
        var back = new float[128];
        q4.Widen(0, back);
        Assert.Equal(-7.5f, back[5]);
        Assert.Equal(6.25f, back[33]);
        Assert.Equal(-6.25f / 8 * 7, back[34]);
        foreach (int block in new[] { 0, 1, 3 })
        {
            float step = numbers.Skip(32 * block).Take(32).Max(Math.Abs) / 8;
            for (int i = 32 * block; i < 32 * block + 32; i++)
                if (i != 34) Assert.True(Math.Abs(back[i] - numbers[i]) <= step / 2 * 1.0001, $"number {i}: {numbers[i]} read back as {back[i]}");
        }
        Assert.All(back[64..96], v => Assert.True(float.IsNaN(v)));
        // Each eight numbers in four bytes: byte 4g + t holds numbers 8g + t (low nibble) and 8g + t + 4 (high).
        var rows = (Q4KvRows)q4;
        int Code(int n) => (int)MathF.Round(numbers[n] / (-7.5f / -8)) + 8;
        Assert.Equal(Code(0), rows.Codes[0] & 0x0F);
        Assert.Equal(Code(4), rows.Codes[0] >> 4);
        Assert.Equal(Code(11), rows.Codes[7] & 0x0F);
        Assert.Equal(Code(15), rows.Codes[7] >> 4);
        Assert.Throws<InvalidOperationException>(() => KvRows.Create(KvCacheType.Q4, 48));
    }

    /// <summary>stories260K over a TinyStories window of 96 tokens and 24 steps: a narrower cache moves the logits by a
    /// small fraction of their range (measured: f16 1.1e-3, bf16 5.9e-3, q8 3.8e-2) and the greedy choices stay the f32 cache's.</summary>
    [Theory]
    [InlineData(KvCacheType.F16, 4e-3)]
    [InlineData(KvCacheType.BF16, 1.5e-2)]
    [InlineData(KvCacheType.Q8, 8e-2)]
    public void ANarrowerCacheStaysCloseToF32(KvCacheType type, double tolerance)
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
        Assert.True(worst > 0, "the narrower cache was not used");
        Assert.True(agree >= 22, $"{agree} of 24 greedy choices agree");
    }

    private static double Deviation(float[] a, float[] b)
    {
        double range = a.Max() - a.Min(), worst = 0;
        for (int i = 0; i < a.Length; i++) worst = Math.Max(worst, Math.Abs(a[i] - b[i]) / range);
        return worst;
    }

    /// <summary>With a 16- or 8-bit cache, a window (keys widened per work item) and steps (widened inside the
    /// attention row) and a pass of several sequences (<see cref="InferenceSession.StepMany"/>) read the same stored
    /// numbers: the logits agree as the f32 paths do, up to float summation order (and a rounding that order may flip).</summary>
    [Theory]
    [InlineData(KvCacheType.F16)]
    [InlineData(KvCacheType.BF16)]
    [InlineData(KvCacheType.Q8)]
    [InlineData(KvCacheType.Q4)]
    public void WindowsStepsAndBatchesReadTheSameNarrowCache(KvCacheType type)
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

    /// <summary>A 16-bit cache holds half the bytes per position, an 8-bit one 1.125 bytes a number: a session's
    /// allocation, and what the completion service counts against its KV budget.</summary>
    [Fact]
    public void NarrowerCachesShrinkTheMemoryAndTheBudgetCount()
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
        long f32 = Allocated(KvCacheType.F32), f16 = Allocated(KvCacheType.F16), q8 = Allocated(KvCacheType.Q8), q4 = Allocated(KvCacheType.Q4);
        // stories260K: 5 layers × 2 × 256 positions × 32 numbers = 81 920 numbers; the rotary tables are the rest.
        Assert.InRange(f32 - f16, 81_920 * 2 - 4096, 81_920 * 2 + 4096);
        Assert.InRange(f32 - q8, 81_920 * (4 - 1.125) - 4096, 81_920 * (4 - 1.125) + 4096);
        Assert.InRange(f32 - q4, 81_920 * (4 - 0.625) - 4096, 81_920 * (4 - 0.625) + 4096);
        using var exact = new CompletionService(LoadedModel.Open(SharedData.Stories260K), "s", kvBudgetBytes: 100_000);
        using var half = new CompletionService(LoadedModel.Open(SharedData.Stories260K, new ModelLoadOptions { KvCache = KvCacheType.F16 }), "s",
            kvBudgetBytes: 100_000);
        Assert.Equal(5L * 2 * 100 * 32 * 4, exact.KvBytes(100));
        Assert.Equal(exact.KvBytes(100) / 2, half.KvBytes(100));
        using var eight = new CompletionService(LoadedModel.Open(SharedData.Stories260K, new ModelLoadOptions { KvCache = KvCacheType.Q8 }), "s");
        Assert.Equal(exact.KvBytes(100) / 4 * 9 / 8, eight.KvBytes(100));
        using var four = new CompletionService(LoadedModel.Open(SharedData.Stories260K, new ModelLoadOptions { KvCache = KvCacheType.Q4 }), "s");
        Assert.Equal(exact.KvBytes(100) / 4 * 5 / 8, four.KvBytes(100));
    }

    /// <summary>Q4's widening (eight at a time from a group's start) equals its scalar twin bit for bit at every offset
    /// 0–40 and length 0–70 over four blocks, a NaN block included.</summary>
    [Fact]
    public void Q4WideningEqualsItsScalarTwin()
    {
        var random = new Random(11);
        var rows = (Q4KvRows)KvRows.Create(KvCacheType.Q4, 128);
        rows.Resize(128);
        float[] numbers = [.. Enumerable.Range(0, 128).Select(_ => (float)(random.NextDouble() * 6 - 3))];
        numbers[70] = float.NaN; // the third block reads back as NaN
        rows.Write(0, numbers);
        for (int offset = 0; offset <= 40; offset++)
            for (int length = 0; offset + length <= 128 && length <= 70; length++)
            {
                var fast = new float[length];
                var plain = new float[length];
                rows.Widen(offset, fast);
                rows.WidenReference(offset, plain);
                Assert.Equal(plain, fast);
            }
        var all = new float[128];
        rows.Widen(0, all);
        Assert.All(all.AsSpan(64, 32).ToArray(), v => Assert.True(float.IsNaN(v)));
    }

    /// <summary>q8 on a model whose key/value rows are not whole blocks of 32 (here 12) is refused when the model is
    /// opened, naming the flag, not at the first request.</summary>
    [Fact]
    public void Q8NeedsRowsOfWholeBlocks()
    {
        using var dir = new TempDir();
        SampleCheckpoint.Write(dir.Path, new SampleOptions { Dim = 48, HiddenDim = 96, Layers = 1, Heads = 4, KvHeads = 1, VocabSize = 512 });
        var e = Assert.Throws<InvalidOptionException>(() =>
            LoadedModel.Open(dir.Path, new ModelLoadOptions { TokenizerPath = SharedData.Tok512, KvCache = KvCacheType.Q8 }));
        Assert.Contains("rows of 12", e.Message);
        Assert.Equal(ModelLoadOptions.KvCacheName, e.Option);
        var four = Assert.Throws<InvalidOptionException>(() =>
            LoadedModel.Open(dir.Path, new ModelLoadOptions { TokenizerPath = SharedData.Tok512, KvCache = KvCacheType.Q4 }));
        Assert.Contains("q4 stores the key/value rows in blocks of 32", four.Message);
        using var half = LoadedModel.Open(dir.Path, new ModelLoadOptions { TokenizerPath = SharedData.Tok512, KvCache = KvCacheType.F16 });
        Assert.Equal(12, half.Model.Config.KvDim);
    }

    [Fact]
    public void AnUnknownCacheTypeIsRefusedByName()
    {
        var result = CliProcess.Run("generate", SharedData.Stories260K, "--kv-cache", "q5");
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("--kv-cache must be f32, f16, bf16, q8 or q4, not 'q5'", result.Stderr);
    }
}
