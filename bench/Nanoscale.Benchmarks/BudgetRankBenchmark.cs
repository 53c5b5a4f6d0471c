using System.Globalization;
using Nanoscale.Codecs;
using Nanoscale.IO;
using Nanoscale.Pipeline;
using Nanoscale.Tests.Support;
using static Nanoscale.Benchmarks.ProcessMemory;

namespace Nanoscale.Benchmarks;

/// <summary>
/// Does the budget planner's predicted cost rank real damage correctly (docs/budget.md)? For every planned tensor of a
/// model, only that tensor is rounded to one format and the model's perplexity measured on the evaluation text; the
/// Spearman rank correlation of the measured increase of mean NLL with each predictor is printed: the plain weight
/// error ‖ΔW‖², the Hessian-weighted output error s·tr(ΔHΔᵀ), and that scaled by the KL probe (what plan uses).
/// Usage: budget-rank [--model PATH] [--format SPEC] [--calib FILE] [--text FILE] [--calib-tokens N] [--probe-tokens N]
/// </summary>
internal static class BudgetRankBenchmark
{
    public static int Run(string[] args)
    {
        string model = Arg(args, "--model") ?? SharedData.Stories260K;
        string format = Arg(args, "--format") ?? "nxfp3";
        string calib = Arg(args, "--calib") ?? SharedData.WikiText2;
        string text = Arg(args, "--text") ?? SharedData.TinyStoriesText;
        int calibTokens = int.Parse(Arg(args, "--calib-tokens") ?? "4096", CultureInfo.InvariantCulture);
        int probeTokens = int.Parse(Arg(args, "--probe-tokens") ?? "2048", CultureInfo.InvariantCulture);

        using var source = CheckpointLoader.Open(model);
        var calibration = Calibration.Collect(model, calib, null, new CalibrationOptions { Tokens = calibTokens });
        var plain = BudgetPlanner.Measure(source, new PlanOptions { Candidates = [format] });
        var hessian = BudgetPlanner.Measure(source, new PlanOptions { Candidates = [format], Calibration = calibration });
        var probed = BudgetPlanner.Measure(source, new PlanOptions
        {
            Candidates = [format], Calibration = calibration, ProbeTextPath = calib, ProbeTokens = probeTokens,
        });
        var evalOptions = new EvalOptions { TextPath = text };
        double baseline = Evaluation.Evaluate(model, evalOptions).Perplexity!.MeanNll;
        var codec = CodecRegistry.Create(format);
        var measured = new List<double>();
        Console.WriteLine($"# {Path.GetFileName(model)}: one tensor at a time in {format}; ΔNLL on {Path.GetFileName(text)} (baseline mean NLL {baseline:0.000000})");
        Console.WriteLine("tensor\tdelta_nll\tweight_error\toutput_error\tpredicted_kl");
        for (int i = 0; i < plain.Tensors.Count; i++)
        {
            string name = plain.Tensors[i].Name;
            var (_, file) = CompressionRun.RunTemporary(source, null, new CompressOptions
            {
                Assignment = new Dictionary<string, ITensorCodec> { [name] = codec },
            }, measureError: false);
            double nll;
            using (file) nll = Evaluation.Evaluate(file.Path, evalOptions with { TokenizerPath = Runtime.TokenizerLoader.FindBeside(model) }).Perplexity!.MeanNll;
            measured.Add(nll - baseline);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{name}\t{nll - baseline:0.000000}\t{plain.Tensors[i].Candidates[0].Cost:0.000e+0}\t{hessian.Tensors[i].Candidates[0].Cost:0.000e+0}\t{probed.Tensors[i].Candidates[0].Cost:0.000e+0}"));
        }
        double Rank(SensitivityTable t) => Spearman(measured, [.. t.Tensors.Select(r => r.Candidates[0].Cost)]);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"# Spearman rank correlation with the measured ΔNLL over {measured.Count} tensors: weight error {Rank(plain):0.000}, " +
            $"Hessian output error {Rank(hessian):0.000}, KL-probed (plan's cost) {Rank(probed):0.000}"));
        return 0;
    }

    internal static double Spearman(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        double[] ra = Ranks(a), rb = Ranks(b);
        double ma = ra.Average(), mb = rb.Average(), num = 0, da = 0, db = 0;
        for (int i = 0; i < ra.Length; i++)
        {
            num += (ra[i] - ma) * (rb[i] - mb);
            da += (ra[i] - ma) * (ra[i] - ma);
            db += (rb[i] - mb) * (rb[i] - mb);
        }
        return num / Math.Sqrt(da * db);
    }

    /// <summary>Ranks from 1, ties sharing their mean rank.</summary>
    private static double[] Ranks(IReadOnlyList<double> values)
    {
        var order = Enumerable.Range(0, values.Count).OrderBy(i => values[i]).ToArray();
        var ranks = new double[values.Count];
        for (int i = 0; i < order.Length;)
        {
            int j = i;
            while (j + 1 < order.Length && values[order[j + 1]] == values[order[i]]) j++;
            for (int k = i; k <= j; k++) ranks[order[k]] = (i + j) / 2.0 + 1;
            i = j + 1;
        }
        return ranks;
    }
}
