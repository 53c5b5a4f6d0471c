using MathNet.Numerics.LinearAlgebra;
using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.LowRank;
using Nanoscale.Pipeline;
using Nanoscale.Tensors;
using Nanoscale.Tests.Support;

namespace Nanoscale.Tests.Pipeline;

public class BudgetTests
{
    [Theory]
    [InlineData("3.8bpw", 3.8, BudgetUnit.BitsPerWeight)]
    [InlineData(" 4 BPW ", 4, BudgetUnit.BitsPerWeight)]
    [InlineData("3GB", 3e9, BudgetUnit.Bytes)]
    [InlineData("250MiB", 250.0 * 1024 * 1024, BudgetUnit.Bytes)]
    [InlineData("1.5kb", 1500, BudgetUnit.Bytes)]
    [InlineData("123456B", 123456, BudgetUnit.Bytes)]
    public void ParsesBitsPerWeightAndSizes(string text, double value, BudgetUnit unit)
    {
        var budget = Budget.Parse(text);
        Assert.Equal(unit, budget.Unit);
        Assert.Equal(value, budget.Value, 6);
    }

    [Theory]
    [InlineData("3.8")]
    [InlineData("-1GB")]
    [InlineData("0bpw")]
    [InlineData("lots")]
    [InlineData("")]
    public void RefusesWhatIsNotABudget(string text)
    {
        var error = Assert.Throws<InvalidOptionException>(() => Budget.Parse(text));
        Assert.Equal("PlanOptions.Budget", error.Option);
    }

    [Fact]
    public void ParsesAList() =>
        Assert.Equal([3.5, 4, 4.5], Budget.ParseList("3.5bpw, 4bpw,4.5bpw").Select(b => b.Value));
}

public class BudgetSolverTests
{
    /// <summary>A made-up table: every size and cost is given, nothing encoded.</summary>
    private static SensitivityTable Table(Random random, int tensors, int candidates, long scale = 1)
    {
        var rows = Enumerable.Range(0, tensors).Select(t =>
        {
            long weights = 64L * random.Next(1, 9) * scale;
            var measures = Enumerable.Range(0, candidates).Select(c =>
            {
                long bytes = weights * (2 + c) / 8 + random.Next(0, 7);
                double cost = Math.Pow(2, -2.0 * c) * (0.5 + random.NextDouble()) * random.Next(1, 20);
                return new CandidateMeasure(bytes, cost, cost, ErrorMetrics.Zero);
            }).ToList();
            return new TensorSensitivity($"t{t}", DType.F32, [weights / 64, 64], weights * 4, false, measures);
        }).ToList();
        return new SensitivityTable("made-up", [.. Enumerable.Range(0, candidates).Select(c => $"c{c}")], rows, 1000, "made up", TimeSpan.Zero);
    }

    /// <summary>The best assignment by trying every one.</summary>
    private static (double Cost, long Bytes) BruteForce(SensitivityTable table, long allowed)
    {
        int t = table.Tensors.Count, c = table.Candidates.Count;
        double best = double.PositiveInfinity;
        long bestBytes = 0;
        var pick = new int[t];
        for (long code = 0; code < (long)Math.Pow(c, t); code++)
        {
            long x = code, bytes = 0;
            double cost = 0;
            for (int i = 0; i < t; i++)
            {
                pick[i] = (int)(x % c);
                x /= c;
                bytes += table.Tensors[i].Candidates[pick[i]].Bytes;
                cost += table.Tensors[i].Candidates[pick[i]].Cost;
            }
            if (bytes <= allowed && cost < best) (best, bestBytes) = (cost, bytes);
        }
        return (best, bestBytes);
    }

    [Fact]
    public void TheDynamicProgrammeFindsTheExactOptimum()
    {
        var random = new Random(7);
        for (int trial = 0; trial < 40; trial++)
        {
            var table = Table(random, tensors: 6, candidates: 4);
            long min = table.MinEncodedBytes, max = table.MaxEncodedBytes;
            long allowed = min + (long)((max - min) * random.NextDouble());
            var plan = BudgetPlanner.Solve(table, new Budget(table.OtherBytes + allowed, BudgetUnit.Bytes));
            Assert.Equal(1, plan.BudgetUnitBytes); // small budgets are solved byte by byte: exact
            var (cost, _) = BruteForce(table, allowed);
            Assert.True(plan.EncodedBytes <= allowed, $"trial {trial}: {plan.EncodedBytes} > {allowed}");
            Assert.Equal(cost, plan.PredictedCost, 9);
        }
    }

    [Fact]
    public void ALargeBudgetIsRoundedUpSoThePlanStillFits()
    {
        var random = new Random(3);
        var table = Table(random, tensors: 30, candidates: 5, scale: 100_003); // sizes that need a unit of many bytes
        var budget = new Budget(8.0 * (table.MinEncodedBytes + table.MaxEncodedBytes) / 2 / table.Weights, BudgetUnit.BitsPerWeight);
        var plan = BudgetPlanner.Solve(table, budget);
        Assert.True(plan.BudgetUnitBytes > 1);
        Assert.True(plan.BitsPerWeight <= budget.Value);
        // No uniform choice that fits is predicted to be better than the allocation.
        for (int c = 0; c < table.Candidates.Count; c++)
            if (table.UniformBytes(c) <= plan.AllowedEncodedBytes)
                Assert.True(plan.PredictedCost <= table.UniformCost(c)!.Value + 1e-9);
    }

    [Fact]
    public void BudgetsOutsideTheAchievableRangeAreRefusedNamingIt()
    {
        var table = Table(new Random(1), tensors: 4, candidates: 3);
        var low = Assert.Throws<InvalidOptionException>(() => BudgetPlanner.Solve(table, new Budget(table.OtherBytes + table.MinEncodedBytes - 1, BudgetUnit.Bytes)));
        Assert.Contains("below the smallest achievable size", low.Message);
        Assert.Contains($"{table.OtherBytes + table.MinEncodedBytes}–{table.OtherBytes + table.MaxEncodedBytes} bytes", low.Message);
        Assert.Contains("bpw", low.Message);
        var high = Assert.Throws<InvalidOptionException>(() => BudgetPlanner.Solve(table, new Budget(40, BudgetUnit.BitsPerWeight)));
        Assert.Contains("above the original size", high.Message);
        // Exactly the smallest size is fine: every tensor gets its smallest candidate.
        var tight = BudgetPlanner.Solve(table, new Budget(table.OtherBytes + table.MinEncodedBytes, BudgetUnit.Bytes));
        Assert.Equal(table.MinEncodedBytes, tight.EncodedBytes);
    }
}

public class BudgetPlannerTests
{
    [Fact]
    public void TheFloatWeightedNormEqualsTheDoubleOne()
    {
        var random = new Random(5);
        int n = 48, rows = 13;
        var x = Matrix<double>.Build.Dense(200, n, (_, _) => random.NextDouble() - 0.5);
        var h = Hessian.FromMatrix(x.TransposeThisAndMultiply(x) / 200 + 0.01 * Matrix<double>.Build.DenseIdentity(n));
        var delta = new float[rows * n];
        for (int i = 0; i < delta.Length; i++) delta[i] = (float)(random.NextDouble() - 0.5);
        var d = Matrix<double>.Build.Dense(rows, n, (r, c) => delta[r * n + c]);
        double expected = h.WeightedSquaredNorm(d);
        Assert.Equal(expected, h.WeightedSquaredNorm(delta, rows, Parallelism.AllCores), expected * 1e-5);
        Assert.Equal(Hessian.SquaredNorm(d), Hessian.Identity(n).WeightedSquaredNorm(delta, rows, Parallelism.SingleThread), 1e-6);
    }

    [Fact]
    public void SizesAreTheStoredBytesAndCostsTheDecodedError()
    {
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var table = BudgetPlanner.Measure(source, new PlanOptions { Candidates = ["nxfp4", "mxfp4:entropy=rans", "nvfp4"] });
        Assert.Equal(35, table.Tensors.Count);
        Assert.Equal(["nxfp4", "mxfp4:entropy=rans", "nvfp4"], table.Candidates);
        using var dir = new TempDir();
        for (int c = 0; c < table.Candidates.Count; c++)
        {
            // What compress stores for each tensor, and the error measured from it, are what the table holds.
            var result = CompressionRun.Run(source, dir.File($"{c}.safetensors"), new CompressOptions { Codec = CodecRegistry.Create(table.Candidates[c]) });
            var stored = result.Report.Tensors.Where(t => t.Codec != "plain").ToDictionary(t => t.Name, t => t.StoredBytes);
            var errors = result.Errors.ToDictionary(e => e.Name, e => e.Error);
            foreach (var t in table.Tensors)
            {
                Assert.Equal(stored[t.Name], t.Candidates[c].Bytes);
                Assert.Equal(errors[t.Name].SquaredError, t.Candidates[c].Cost, errors[t.Name].SquaredError * 1e-9);
                Assert.False(t.Calibrated);
            }
            Assert.Equal(result.Report.Tensors.Where(t => t.Codec == "plain").Sum(t => t.StoredBytes), table.OtherBytes);
        }
    }

    [Fact]
    public void ACandidateThatCannotStoreATensorIsSkippedForIt()
    {
        // Rank 40 does not fit the 32-row key and value projections.
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var table = BudgetPlanner.Measure(source, new PlanOptions { Candidates = ["caldera:rank=40,iters=1", "nxfp3"] });
        var narrow = table.Tensors.Where(t => t.Shape[0] == 32).ToList();
        Assert.Equal(10, narrow.Count);
        Assert.All(narrow, t => Assert.False(t.Candidates[0].Fits));
        Assert.All(narrow, t => Assert.Contains("rank", t.Candidates[0].Failure));
        Assert.All(table.Tensors.Except(narrow), t => Assert.True(t.Candidates[0].Fits));
        Assert.Null(table.UniformBytes(0));
        var plan = BudgetPlanner.Solve(table, new Budget(30, BudgetUnit.BitsPerWeight));
        Assert.All(plan.Tensors.Where(t => t.Name.Contains("k_proj") || t.Name.Contains("v_proj")), t => Assert.Equal("nxfp3", t.Format));
    }

    [Fact]
    public void TheLossProbeSeesNothingForTheOriginalWeightsAndSomethingForRoundedOnes()
    {
        using var probe = LossProbe.Open(SharedData.Stories260K, SharedData.WikiText2, null, 256, Parallelism.AllCores);
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var tensor = source.Find("model.layers.2.mlp.down_proj.weight")!;
        float[] original;
        using (var view = source.Map(tensor)) original = view.ToFloatArray();
        Assert.True(probe.MeanKl(tensor.Name, original) < 1e-9);
        var rounded = original.Select(v => MathF.Round(v * 4) / 4).ToArray();
        double kl = probe.MeanKl(tensor.Name, rounded);
        Assert.True(kl > 1e-4, $"KL {kl}");
        var coarser = original.Select(v => MathF.Round(v * 2) / 2).ToArray();
        Assert.True(probe.MeanKl(tensor.Name, coarser) > kl);
    }

    [Fact]
    public void CompressWithABudgetWritesEachTensorInItsPlannedFormatWithinTheBudget()
    {
        using var dir = new TempDir();
        var output = dir.File("fit.safetensors");
        var result = CompressionRun.Run(SharedData.Stories260K, output, new CompressionRequest
        {
            Budget = Budget.Parse("4bpw"),
            Candidates = ["nxfp3", "nxfp4", "nxfp5"],
            CalibrationPath = SharedData.WikiText2,
            CalibrationTokens = 1024,
        });
        var plan = result.Plan!;
        Assert.True(result.Report.EncodedBitsPerWeight <= 4.0, $"{result.Report.EncodedBitsPerWeight} bpw");
        Assert.True(result.Report.EncodedBitsPerWeight > 3.9, $"{result.Report.EncodedBitsPerWeight} bpw leaves the budget unused");
        Assert.Equal(plan.BitsPerWeight, result.Report.EncodedBitsPerWeight, 12);
        Assert.True(plan.Tensors.Select(t => t.Format).Distinct().Count() >= 2);
        Assert.Equal("mixed", result.Report.Format);
        using var written = LogicalCheckpoint.Open(output);
        foreach (var t in plan.Tensors)
            Assert.Equal(t.Format, written.Find(t.Name)!.Encoded!.Spec);
        Assert.Equal("mixed", written.Format);
    }

    [Fact]
    public void CompressRefusesAFormatAndABudgetTogetherOrNeither()
    {
        using var dir = new TempDir();
        Assert.Throws<InvalidOptionException>(() => CompressionRun.Run(SharedData.Stories260K, dir.File("x.safetensors"),
            new CompressionRequest { Format = "mxfp4", Budget = Budget.Parse("4bpw") }));
        Assert.Throws<InvalidOptionException>(() => CompressionRun.Run(SharedData.Stories260K, dir.File("x.safetensors"), new CompressionRequest()));
        using var source = CheckpointLoader.Open(SharedData.Stories260K);
        var missing = Assert.Throws<InputException>(() => Compressor.Compress(source, dir.File("y.safetensors"),
            new CompressOptions { Assignment = new Dictionary<string, ITensorCodec> { ["no.such.weight"] = CodecRegistry.Create("mxfp4") } }));
        Assert.Contains("no.such.weight", missing.Message);
        Assert.Empty(Directory.GetFiles(dir.Path));
    }

    /// <summary>The point of the allocator, on the model and texts of docs/budget.md: at 4 bpw the allocation beats
    /// the straight line between the uniform nxfp3 and nxfp4 points, and at nxfp4's own size it is no worse.</summary>
    [Fact]
    public void TheAllocationBeatsUniformFormatsOnStories260K()
    {
        var report = BudgetPlanner.Run(SharedData.Stories260K, new PlanRequest
        {
            Budgets = Budget.ParseList("4bpw,4.37bpw"),
            Candidates = ["nxfp3", "nxfp4", "nxfp5", "mxfp4", "nvfp4"],
            CalibrationPath = SharedData.WikiText2,
            TextPath = SharedData.TinyStoriesText,
            Uniform = true,
        });
        var nxfp3 = report.Uniform.Single(u => u.Label == "nxfp3");
        var nxfp4 = report.Uniform.Single(u => u.Label == "nxfp4");
        var at4 = report.Plans[0];
        double line = nxfp3.Perplexity!.Perplexity + (at4.BitsPerWeight - nxfp3.BitsPerWeight) / (nxfp4.BitsPerWeight - nxfp3.BitsPerWeight)
            * (nxfp4.Perplexity!.Perplexity - nxfp3.Perplexity.Perplexity);
        Assert.True(at4.Perplexity!.Perplexity < line, $"allocation {at4.Perplexity.Perplexity} vs line {line}");
        var atNxfp4 = report.Plans[1];
        Assert.True(atNxfp4.BitsPerWeight <= nxfp4.BitsPerWeight + 1e-9);
        Assert.True(atNxfp4.Perplexity!.Perplexity <= nxfp4.Perplexity.Perplexity, $"{atNxfp4.Perplexity.Perplexity} vs {nxfp4.Perplexity.Perplexity}");
        Assert.True(atNxfp4.PredictedCost <= nxfp4.PredictedCost);
    }
}
