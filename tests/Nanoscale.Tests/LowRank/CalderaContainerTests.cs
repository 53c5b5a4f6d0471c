using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.LowRank;
using Nanoscale.Pipeline;
using Nanoscale.Codecs;
using Nanoscale.Runtime;
using Nanoscale.Tests.Support;
using Nanoscale.Tensors;

namespace Nanoscale.Tests.LowRank;

public class CalderaContainerTests
{
    private static readonly Lazy<CalibrationSet> StoriesCalibration = new(() =>
        Calibration.Collect(SharedData.Stories260K, SharedData.WikiText2, SharedData.Tok512, new CalibrationOptions { Tokens = 1024 }));

    [Fact]
    public void CalibrationSharesOneHessianPerInputAndNormalisesIt()
    {
        var set = StoriesCalibration.Value;
        Assert.Equal(1024, set.Tokens);
        Assert.Equal(35, set.Hessians.Count); // 5 layers × 7 linear weights
        for (int l = 0; l < 5; l++)
        {
            var q = set.Find(LlamaTensorNames.Query(l))!;
            Assert.Same(q, set.Find(LlamaTensorNames.Key(l)));
            Assert.Same(q, set.Find(LlamaTensorNames.Value(l)));
            Assert.Same(set.Find(LlamaTensorNames.Gate(l)), set.Find(LlamaTensorNames.Up(l)));
            Assert.NotSame(q, set.Find(LlamaTensorNames.Output(l)));
            Assert.Equal(172, set.Find(LlamaTensorNames.Down(l))!.Size);
            // Mean diagonal 1 after normalisation, plus the 1e-2 damping.
            Assert.Equal(1 + Hessian.Damping, q.Matrix.Diagonal().Average(), 9);
            Assert.Equal(q.Matrix, q.Matrix.Transpose());
        }
    }

    [Theory]
    [InlineData("caldera:rank=4,q=mxint2,lr=mxint4,iters=3", new[] { "q.blocks", "q.scales", "l.blocks", "l.scales", "r.blocks", "r.scales" })]
    [InlineData("caldera:rank=8,q=int3,lr=bf16,iters=2", new[] { "q.codes", "q.scales", "l.data", "r.data" })]
    [InlineData("caldera:rank=0,q=nvfp4", new[] { "q.blocks", "q.scales", "q.tensor_data" })]
    public void RoundTripsThroughTheContainerAndRuns(string spec, string[] parts)
    {
        using var dir = new TempDir();
        var compressed = dir.File("c.safetensors");
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var codec = CodecRegistry.Create(spec);
        var report = Compressor.Compress(source, compressed, new CompressOptions
        {
            Codec = codec,
            EncodeOptions = new EncodeOptions { Calibration = StoriesCalibration.Value, Parallelism = new(2) },
        });
        Assert.Equal(35, report.Tensors.Count(t => t.Codec == codec.Spec));

        using var written = LogicalCheckpoint.Open(compressed);
        var name = LlamaTensorNames.Down(2);
        var logical = written.Find(name)!;
        Assert.Equal(parts.Select(p => $"{name}.{p}").Order(), written.Container.Tensors.Select(t => t.Name).Where(n => n.StartsWith(name + ".", StringComparison.Ordinal)).Order());
        Assert.Equal(parts.Length, parts.Distinct().Count());

        // The stored bytes decode to the decomposition the encoder kept (within float summation order).
        using var view = source.Map(source.Find(name)!);
        var w = view.ToFloatArray();
        var options = ((CalderaTensorCodec)codec).Options;
        var expected = Caldera.Decompose(w, 64, 172, StoriesCalibration.Value.Find(name)!, options).Approximation;
        var decoded = new float[64 * 172];
        using (var decoder = written.OpenDecoder(logical)) decoder.ReadRows(0, 64, decoded);
        // Within 1e-5 absolute (rounding both to 5 decimals would fail on values 3e-8 apart that straddle a boundary).
        for (int i = 0; i < decoded.Length; i++) Assert.Equal(expected[i], decoded[i], 1e-5);
        // Row ranges decode the same as the whole.
        var tile = new float[3 * 172];
        using (var decoder = written.OpenDecoder(logical)) decoder.ReadRows(10, 3, tile);
        Assert.Equal(decoded.AsSpan(10 * 172, 3 * 172).ToArray(), tile);
        Assert.True(double.Parse(logical.Encoded!.Parameters["activation_error"], System.Globalization.CultureInfo.InvariantCulture) < 1);

        // decompress writes the dense result; eval runs the compressed file directly.
        var restored = dir.File("r.safetensors");
        Decompressor.Decompress(written, restored, new DecompressOptions { DType = DType.F32 });
        using (var back = SafetensorsFile.Open(restored))
        using (var dense = back.Map(back.Find(name)!))
            Assert.Equal(decoded, dense.ToFloatArray());
        var eval = Evaluation.Evaluate(compressed, new EvalOptions { TextPath = SharedData.TinyStoriesText, TokenizerPath = SharedData.Tok512, Parallelism = new(2) });
        Assert.True(double.IsFinite(eval.Perplexity!.Perplexity) && eval.Perplexity.Perplexity > 3.5);
    }

    [Fact]
    public void BitsPerWeightCountQLAndRWithTheirScales()
    {
        using var dir = new TempDir();
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var report = Compressor.Compress(source, dir.File("c.safetensors"), new CompressOptions { Codec = CodecRegistry.Create("caldera:rank=4,q=mxint2,lr=mxint4,iters=1") });
        var down = report.Tensors.Single(t => t.Name == LlamaTensorNames.Down(0)); // 64 × 172
        // Q: 64 rows × 6 blocks × (8 + 1) bytes; Lᵀ: 4 × 2 blocks × (16 + 1); R: 4 × 6 blocks × (16 + 1).
        Assert.Equal(64 * 6 * 9 + 4 * 2 * 17 + 4 * 6 * 17, down.StoredBytes);
    }

    [Theory]
    [InlineData("caldera:rank=x", "rank must be an integer")]
    [InlineData("caldera:rank=-1", "rank must be an integer")]
    [InlineData("caldera:q=mxfp5", "q: format 'mxfp5'")]
    [InlineData("caldera:lr=int9", "int grids have 2 to 8 bits")]
    [InlineData("caldera:q=caldera", "not a block format")]
    [InlineData("caldera:iters=0", "iters must be an integer from 1")]
    [InlineData("caldera:rnk=4", "valid keys: rank")]
    public void BadSpecsAreClearErrors(string spec, string expected)
    {
        var e = Assert.Throws<FormatSpecException>(() => CodecRegistry.Create(spec));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void RankAboveTheWeightIsAnErrorNamingTheTensor()
    {
        using var dir = new TempDir();
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var e = Assert.Throws<InvalidOptionException>(() => Compressor.Compress(source, dir.File("c.safetensors"),
            new CompressOptions { Codec = CodecRegistry.Create("caldera:rank=65,iters=1") }));
        Assert.Contains("rank 65 exceeds min(rows, cols) = 64", e.Message);
        Assert.Contains("model.layers.0", e.Message);
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    [Fact]
    public void SweepListKeepsCalderaOptionsTogether() =>
        Assert.Equal(["mxint2", "caldera:rank=8,q=mxint2,lr=mxint4", "caldera:rank=0", "mxfp4:scale=mse"],
            Nanoscale.Formats.FormatSpec.SplitList("mxint2, caldera:rank=8,q=mxint2,lr=mxint4,caldera:rank=0,mxfp4:scale=mse"));
}

public class CalderaCliTests
{
    [Fact]
    public void CompressWithCalibrationFromTheCommandLine()
    {
        using var dir = new TempDir();
        var output = dir.File("c.safetensors");
        var result = CliProcess.Run("compress", SharedData.Stories260K, "--format", "caldera:rank=4,q=int3,lr=mxint4,iters=2",
            "--calib", SharedData.WikiText2, "--calib-tokens", "512", "-o", output, "--json");
        Assert.Equal(0, result.ExitCode);
        var json = result.Json();
        Assert.Equal("caldera:rank=4,q=int3,lr=mxint4,iters=2", json.GetProperty("format").GetString());
        var tensor = json.GetProperty("tensors").EnumerateArray().First(t => t.GetProperty("codec").GetString()!.StartsWith("caldera"));
        Assert.Equal("512", tensor.GetProperty("params").GetProperty("calibration_tokens").GetString());
        var eval = CliProcess.Run("eval", output, "--text", SharedData.TinyStoriesText, "--tokenizer", SharedData.Tok512, "--json");
        Assert.Equal(0, eval.ExitCode);
        Assert.InRange(eval.Json().GetProperty("perplexity").GetDouble(), 3.5, 50);
    }

    [Fact]
    public void CalibrationOfAModelThatCannotRunIsAClearError()
    {
        using var dir = new TempDir();
        var result = CliProcess.Run("compress", SharedData.Gpt2Attn, "--format", "caldera:rank=4", "--calib", SharedData.WikiText2,
            "-o", dir.File("g.safetensors"));
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains("caldera uses H = I", result.Stderr);
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    /// <summary>Issue 16: the factored product Q·x' + L·(R·x'), x' = V·x, equals decoding each row (Q + L·R, then
    /// the transform) and multiplying — for Q on a grid with a step kernel and one without, with and without the
    /// incoherence transform (fast Hadamard at width 64, the dense V at 172) — and greedy generation is unchanged.</summary>
    [Theory]
    [InlineData("caldera:rank=4,q=mxint3,lr=mxint8,iters=1")]
    [InlineData("caldera:rank=4,q=mxint3,lr=mxint8,iters=1,had=1")]
    [InlineData("caldera:rank=8,q=int3,lr=bf16,iters=1,had=1")]
    public void TheFactoredProductEqualsDecodingRows(string spec)
    {
        using var dir = new TempDir();
        var path = dir.File("c.safetensors");
        CompressionRun.Run(SharedData.Stories260K, path, new CompressionRequest { Format = spec, MeasureError = false });
        using var checkpoint = LogicalCheckpoint.Open(path);
        using var source = new LogicalWeightSource(checkpoint);
        var random = new Random(4);
        foreach (var tensor in checkpoint.Tensors.Where(t => t.Encoded is not null))
        {
            using var decoder = checkpoint.OpenDecoder(tensor);
            int rows = (int)tensor.Shape[0], cols = (int)tensor.Shape[1];
            var x = Enumerable.Range(0, cols).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
            var y = new float[rows];
            Assert.True(decoder.TryDotRows(0, rows, x, y), tensor.Name);
            var w = new float[rows * cols];
            decoder.ReadRows(0, rows, w);
            for (int r = 0; r < rows; r++)
            {
                double exact = 0, magnitude = 0;
                for (int c = 0; c < cols; c++)
                {
                    exact += (double)w[r * cols + c] * x[c];
                    magnitude += Math.Abs((double)w[r * cols + c] * x[c]);
                }
                Assert.True(Math.Abs(y[r] - exact) <= 1e-4 * magnitude + 1e-6, $"{spec} {tensor.Name} row {r}: {y[r]} vs {exact}");
            }
            // A second tile of the same x (cached x' and R·x') gives the same rows.
            var again = new float[rows - 1];
            Assert.True(decoder.TryDotRows(1, rows - 1, x, again));
            Assert.Equal(y[1..], again);

            // A window of 12 tokens (a prompt): Q's tiles against the inputs transformed once, the rank-k part as two
            // thin products; against the decoded rows (rebuilt and rotated one by one).
            const int tokens = 12;
            var window = Enumerable.Range(0, tokens * cols).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
            var product = new float[tokens * rows];
            source.Linear(tensor.Name).MatMul(window, product, new RuntimeOptions { FusedKernels = false });
            for (int v = 0; v < tokens; v++)
                for (int r = 0; r < rows; r++)
                {
                    double exact = 0, magnitude = 0;
                    for (int c = 0; c < cols; c++)
                    {
                        exact += (double)w[r * cols + c] * window[v * cols + c];
                        magnitude += Math.Abs((double)w[r * cols + c] * window[v * cols + c]);
                    }
                    Assert.True(Math.Abs(product[v * rows + r] - exact) <= 1e-4 * magnitude + 1e-6,
                        $"{spec} {tensor.Name} token {v} row {r}: {product[v * rows + r]} vs {exact}");
                }
        }
        using var weights = new LogicalWeightSource(checkpoint);
        var tokenizer = TokenizerLoader.Open(SharedData.Tok512, 512);
        var fused = LlamaModel.Load(checkpoint.Config!, weights, new RuntimeOptions { FusedKernels = true });
        var decoded = LlamaModel.Load(checkpoint.Config!, weights, new RuntimeOptions { FusedKernels = false });
        Assert.Equal(Generation.Greedy(decoded, tokenizer, "Once upon a time", 30).Tokens, Generation.Greedy(fused, tokenizer, "Once upon a time", 30).Tokens);
    }
}
