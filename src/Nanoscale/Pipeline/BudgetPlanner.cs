using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Nanoscale.Codecs;
using Nanoscale.Formats;
using Nanoscale.IO;
using Nanoscale.LowRank;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>What the budget planner measures: which formats to choose from, over which tensors, with which Hessians.</summary>
public sealed record PlanOptions
{
    /// <summary>The default ladder: NxFP 3–6 bits, MX 4/6/8 bits and NVFP4, each also with its codes rANS-coded.</summary>
    public static IReadOnlyList<string> DefaultCandidates { get; } =
    [
        "nxfp3", "nxfp4", "nxfp5", "nxfp6", "mxfp4", "nvfp4", "mxfp6", "mxfp8",
        "nxfp3:entropy=rans", "nxfp4:entropy=rans", "nxfp5:entropy=rans", "nxfp6:entropy=rans",
        "mxfp4:entropy=rans", "nvfp4:entropy=rans", "mxfp6:entropy=rans", "mxfp8:entropy=rans",
    ];

    /// <summary>Format specs to choose from per tensor; null: <see cref="DefaultCandidates"/>.</summary>
    public IReadOnlyList<string>? Candidates { get; init; }

    /// <summary>Regexes that change which tensors are planned (<see cref="TensorSelection"/>; the same for every candidate).</summary>
    public string? Include { get; init; }

    public string? Exclude { get; init; }

    /// <summary>Input Hessians (from <see cref="Calibration"/>); null: H = I, the cost is the plain squared weight error.</summary>
    public CalibrationSet? Calibration { get; init; }

    /// <summary>Text to probe the model's loss on (usually the calibration text): each tensor's cost is scaled by the
    /// KL divergence its roundest candidate causes (<see cref="LossProbe"/>); null: output error alone.</summary>
    public string? ProbeTextPath { get; init; }

    /// <summary>Tokens of <see cref="ProbeTextPath"/> each probe runs.</summary>
    public int ProbeTokens { get; init; } = 2048;

    /// <summary>Tokenizer for the probe (default: the one beside the model).</summary>
    public string? TokenizerPath { get; init; }

    /// <summary>See <see cref="EncodeOptions.AllowNonFinite"/>.</summary>
    public bool AllowNonFinite { get; init; }

    /// <summary>Threads (default: every core).</summary>
    public Parallelism Parallelism { get; init; }

    /// <summary>Folder for the small work files (one tensor in one candidate at a time); default: the system temp folder.</summary>
    public string? WorkFolder { get; init; }

    internal IReadOnlyList<string> CandidateSpecs => Candidates ?? DefaultCandidates;
}

/// <summary>One tensor in one candidate format, measured from its stored bytes (docs/budget.md): <see cref="Bytes"/>
/// stored; <see cref="OutputError"/> the layer's squared output error <c>s·tr(ΔHΔᵀ)</c> (‖Δ‖² when H = I);
/// <see cref="Cost"/> the predicted cost the allocation minimises (the output error times the tensor's
/// <see cref="TensorSensitivity.LossWeight"/>); <see cref="Error"/> the plain weight error; <see cref="Failure"/> when
/// the format cannot store the tensor (then the rest is zero).</summary>
public sealed record CandidateMeasure(long Bytes, double Cost, double OutputError, ErrorMetrics Error, string? Failure = null)
{
    public bool Fits => Failure is null;
}

/// <summary>A planned tensor and what every candidate costs it (in the order of <see cref="SensitivityTable.Candidates"/>).</summary>
/// <param name="Name">The tensor.</param>
/// <param name="DType">Its stored dtype.</param>
/// <param name="Shape">Its shape.</param>
/// <param name="OriginalBytes">Its bytes as stored now.</param>
/// <param name="Calibrated">True when its cost is Hessian-weighted; false: H = I.</param>
/// <param name="Candidates">Per candidate, what it costs.</param>
/// <param name="LossWeight">Measured KL per unit of output error (1 without a probe).</param>
/// <param name="ProbeKl">The KL divergence measured for the probed candidate; null without a probe.</param>
/// <param name="ProbedCandidate">Which candidate was probed (the one with the largest output error); -1 without a probe.</param>
public sealed record TensorSensitivity(string Name, DType DType, long[] Shape, long OriginalBytes, bool Calibrated,
    IReadOnlyList<CandidateMeasure> Candidates, double LossWeight = 1, double? ProbeKl = null, int ProbedCandidate = -1)
{
    public long Weights => TensorShape.ElementCount(Shape);
}

/// <summary>
/// Every (tensor, candidate) pair measured once: the input of the allocation, reusable for any number of budgets.
/// <see cref="OtherBytes"/> are the tensors no format applies to (embeddings, norms, …), kept as they are.
/// </summary>
public sealed record SensitivityTable(string Model, IReadOnlyList<string> Candidates, IReadOnlyList<TensorSensitivity> Tensors,
    long OtherBytes, string CostKind, TimeSpan Elapsed)
{
    /// <summary>Weights of the planned tensors.</summary>
    public long Weights => Tensors.Sum(t => t.Weights);

    /// <summary>Every tensor as it is now.</summary>
    public long OriginalBytes => OtherBytes + Tensors.Sum(t => t.OriginalBytes);

    /// <summary>The planned tensors' bytes with the smallest (largest) fitting candidate each.</summary>
    public long MinEncodedBytes => Tensors.Sum(t => t.Candidates.Where(c => c.Fits).Min(c => c.Bytes));

    public long MaxEncodedBytes => Tensors.Sum(t => t.Candidates.Where(c => c.Fits).Max(c => c.Bytes));

    /// <summary>Stored bytes of the planned tensors with candidate <paramref name="candidate"/> everywhere; null when
    /// it cannot store one of them.</summary>
    public long? UniformBytes(int candidate) =>
        Tensors.All(t => t.Candidates[candidate].Fits) ? Tensors.Sum(t => t.Candidates[candidate].Bytes) : null;

    /// <summary>Predicted cost of candidate <paramref name="candidate"/> everywhere (null as <see cref="UniformBytes"/>).</summary>
    public double? UniformCost(int candidate) =>
        Tensors.All(t => t.Candidates[candidate].Fits) ? Tensors.Sum(t => t.Candidates[candidate].Cost) : null;

    /// <summary>Bits per weight of <paramref name="encodedBytes"/> spread over the planned weights.</summary>
    public double BitsPerWeight(long encodedBytes) => 8.0 * encodedBytes / Math.Max(1, Weights);
}

/// <summary>One tensor's chosen format.</summary>
public sealed record PlannedTensor(string Name, string Format, long Weights, long Bytes, double Cost)
{
    public double BitsPerWeight => 8.0 * Bytes / Math.Max(1, Weights);
}

/// <summary>An allocation: a format per planned tensor, its stored size and its predicted cost.</summary>
/// <param name="Budget">The budget fitted.</param>
/// <param name="Tensors">Every planned tensor's format.</param>
/// <param name="OtherBytes">Bytes of the tensors kept as they are.</param>
/// <param name="AllowedEncodedBytes">The bytes the budget leaves the planned tensors.</param>
/// <param name="BudgetUnitBytes">The allocation's size granularity: sizes were rounded up to it (docs/budget.md).</param>
public sealed record BudgetPlan(Budget Budget, IReadOnlyList<PlannedTensor> Tensors, long OtherBytes, long AllowedEncodedBytes, long BudgetUnitBytes)
{
    public long EncodedBytes => Tensors.Sum(t => t.Bytes);
    public long Weights => Tensors.Sum(t => t.Weights);
    public double BitsPerWeight => 8.0 * EncodedBytes / Math.Max(1, Weights);

    /// <summary>Every tensor's bytes as the compressed checkpoint stores them.</summary>
    public long ModelBytes => OtherBytes + EncodedBytes;

    public double PredictedCost => Tensors.Sum(t => t.Cost);

    /// <summary>Tensor name → format spec.</summary>
    public IReadOnlyDictionary<string, string> Assignment => Tensors.ToDictionary(t => t.Name, t => t.Format, StringComparer.Ordinal);
}

/// <summary>
/// Fits a model into a size budget (docs/budget.md): <see cref="Measure"/> encodes every planned tensor in every
/// candidate format and decodes it from the stored bytes, giving its exact size and its predicted cost
/// <c>s·tr((Ŵ−W) H (Ŵ−W)ᵀ)</c> (H the calibration Hessian, s its scale: the layer's squared output error);
/// <see cref="Solve"/> picks one candidate per tensor minimising the summed cost within the budget, a multiple-choice
/// knapsack solved exactly by dynamic programming over sizes rounded up to a fine unit.
/// </summary>
public static partial class BudgetPlanner
{
    /// <summary>Multiply-adds of tr(ΔHΔᵀ) per candidate above which it is estimated from a subset of rows (2^31).</summary>
    internal const double MaxWeightedProducts = 2147483648;

    /// <summary>Most size steps of the dynamic programme (its table is tensors × steps bytes).</summary>
    internal const int MaxSteps = 100_000;

    /// <summary>Measures every (tensor, candidate) pair of <paramref name="source"/>, tensor by tensor (one tensor's
    /// encodings in memory at a time).</summary>
    /// <exception cref="NanoscaleException">A bad candidate spec, no tensor to plan, or a tensor no candidate can store.</exception>
    public static SensitivityTable Measure(ICheckpoint source, PlanOptions options, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        var specs = options.CandidateSpecs;
        if (specs.Count == 0) throw new InvalidOptionException("PlanOptions.Candidates", "give at least one candidate format");
        var codecs = specs.Select(CodecRegistry.Create).ToList(); // a bad spec fails before any work
        var duplicate = codecs.GroupBy(c => c.Spec).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new InvalidOptionException("PlanOptions.Candidates", $"{duplicate.Key} is given twice");
        if (codecs.Count > 250) throw new InvalidOptionException("PlanOptions.Candidates", $"at most 250 candidates, not {codecs.Count}");

        var selection = new TensorSelection(options.Include, options.Exclude);
        var planned = source.Tensors.Where(selection.Selects).ToList();
        if (planned.Count == 0) throw new InputException($"{source.Path} has no tensors a format applies to; nothing to plan", "PlanOptions.Include");
        long other = source.Tensors.Where(t => !selection.Selects(t)).Sum(t => t.ByteLength);
        var encodeOptions = new EncodeOptions { Parallelism = options.Parallelism, AllowNonFinite = options.AllowNonFinite, Calibration = options.Calibration };

        using var probe = options.ProbeTextPath is { } probeText
            ? LossProbe.Open(source.Path, probeText, options.TokenizerPath, options.ProbeTokens, options.Parallelism, cancellationToken)
            : null;
        var rows = new List<TensorSensitivity>();
        int step = 0, steps = planned.Count * codecs.Count;
        foreach (var tensor in planned)
        {
            var hessian = options.Calibration?.Find(tensor.Name);
            if (hessian is not null && hessian.Size != TensorShape.Columns(tensor.Shape)) hessian = null;
            // Candidates in parallel, one thread each (a tensor's encodings are few; its rows are many only at real widths,
            // where one candidate per core keeps both cores busy through the single-threaded parts: entropy coding, decoding).
            var measures = new CandidateMeasure[codecs.Count];
            var single = encodeOptions with { Parallelism = Parallelism.SingleThread };
            int done = 0;
            options.Parallelism.For(codecs.Count, c =>
            {
                cancellationToken.ThrowIfCancellationRequested();
                measures[c] = MeasureOne(source, tensor, codecs[c], single, hessian, options, null, cancellationToken);
                int finished = Interlocked.Increment(ref done);
                progress?.Report(new PipelineProgress("plan", tensor.Name, step + finished, steps, "encodings"));
            });
            step += codecs.Count;
            hessian?.ReleaseFloatCopy();
            // With a probe, the candidate with the largest output error is decoded once more, whole, and run.
            int probedCandidate = -1;
            if (probe is not null && tensor.ElementCount <= Array.MaxLength)
                for (int c = 0; c < codecs.Count; c++)
                    if (measures[c].Fits && measures[c].OutputError > 0 && (probedCandidate < 0 || measures[c].OutputError > measures[probedCandidate].OutputError))
                        probedCandidate = c;
            if (!measures.Any(m => m.Fits))
                throw new InputException($"{source.Path}: no candidate can store {tensor.Name} {TensorShape.Text(tensor.Shape)}: " +
                    string.Join("; ", measures.Select((m, i) => $"{codecs[i].Spec}: {m.Failure}")));
            double? kl = null;
            if (probedCandidate >= 0)
            {
                progress?.Report(new PipelineProgress("probe", $"{tensor.Name} {codecs[probedCandidate].Spec}", step, steps, "encodings"));
                var decoded = new float[tensor.ElementCount];
                MeasureOne(source, tensor, codecs[probedCandidate], encodeOptions, null, options, decoded, cancellationToken);
                kl = probe!.MeanKl(tensor.Name, decoded, cancellationToken);
            }
            rows.Add(new TensorSensitivity(tensor.Name, tensor.DType, tensor.Shape, tensor.ByteLength, hessian is { IsIdentity: false }, measures,
                1, kl, kl is null ? -1 : probedCandidate));
        }
        progress?.Report(new PipelineProgress("plan", null, steps, steps, "encodings"));
        if (probe is not null) rows = WeighByLoss(rows);
        string costKind = rows.Any(r => r.Calibrated)
            ? $"Hessian-weighted output error s·tr(ΔHΔᵀ) on {options.Calibration!.Tokens} tokens of {Path.GetFileName(options.Calibration.Source)}"
            : "squared weight error ‖ΔW‖² (H = I, no calibration)";
        if (probe is not null) costKind = $"predicted KL (nats/token): {costKind}, times each tensor's measured KL per unit of it ({probe.Positions} tokens of {Path.GetFileName(options.ProbeTextPath)})";
        return new SensitivityTable(source.Path, [.. codecs.Select(c => c.Spec)], rows, other, costKind, clock.Elapsed);
    }

    /// <summary>Each tensor's costs become predicted KL: its output errors times its measured KL per unit of output
    /// error. A tensor that could not be probed (lossless everywhere, or too large to hold decoded) gets the median
    /// weight of the others.</summary>
    private static List<TensorSensitivity> WeighByLoss(List<TensorSensitivity> rows)
    {
        static double? Measured(TensorSensitivity r) => r.ProbeKl is { } kl ? kl / r.Candidates[r.ProbedCandidate].OutputError : null;
        var weights = rows.Select(Measured).OfType<double>().Order().ToList();
        double median = weights.Count == 0 ? 1 : weights[weights.Count / 2];
        return [.. rows.Select(r =>
        {
            double weight = Measured(r) ?? median;
            return r with { LossWeight = weight, Candidates = [.. r.Candidates.Select(m => m with { Cost = m.OutputError * weight })] };
        })];
    }

    private static CandidateMeasure MeasureOne(ICheckpoint source, TensorInfo tensor, ITensorCodec codec, EncodeOptions encodeOptions,
        Hessian? hessian, PlanOptions options, float[]? decodedCopy, CancellationToken cancellationToken)
    {
        EncodedTensor encoded;
        try
        {
            using var view = source.Map(tensor);
            encoded = codec.Encode(view, encodeOptions, cancellationToken);
        }
        catch (NanoscaleException e) when (e is not NonFiniteValueException)
        {
            return new CandidateMeasure(0, 0, 0, ErrorMetrics.Zero, e.Message);
        }
        long bytes = encoded.Parts.Sum(p => (long)p.Data.Length);

        // Decoded from a stored container, as compress would store it and the runtime would read it.
        using var file = TemporaryFile.In(options.WorkFolder, "nanoscale-plan", ".safetensors");
        EncodedContainer.Write(file.Path, [new EncodedContainer.Item(tensor.Name, tensor.DType, tensor.Shape, codec.Spec, encoded)], cancellationToken);
        encoded = null!; // the parts are in the file now: let them go before the decoding below
        using var container = LogicalCheckpoint.Open(file.Path);
        using var decoder = container.OpenDecoder(container.Tensors[0]);
        using var sourceView = source.Map(tensor);
        int columns = checked((int)TensorShape.Columns(tensor.Shape));
        long rows = TensorShape.Rows(tensor.Shape);
        int rowsPerTile = (int)Math.Max(1, Math.Min(rows, (1 << 20) / Math.Max(1, columns)));
        var original = new float[rowsPerTile * columns];
        var delta = new float[rowsPerTile * columns];
        var error = ErrorMetrics.Zero;
        double cost = 0;
        // tr(ΔHΔᵀ) costs rows·n² multiply-adds: at real widths (a 2048 × 8192 down projection: 137 G per candidate) it is
        // estimated from every s-th row, scaled by s — unbiased, the same rows for every candidate of the tensor.
        long stride = hessian is null ? 1 : Math.Max(1, (long)Math.Ceiling(rows * (double)columns * columns / MaxWeightedProducts));
        var sampled = stride > 1 ? new float[delta.Length] : null;
        for (long row = 0; row < rows; row += rowsPerTile)
        {
            cancellationToken.ThrowIfCancellationRequested();
            int count = (int)Math.Min(rowsPerTile, rows - row);
            int n = count * columns;
            sourceView.ReadFloats(row * columns, original.AsSpan(0, n));
            decoder.ReadRows(row, count, delta.AsSpan(0, n));
            if (decodedCopy is not null) delta.AsSpan(0, n).CopyTo(decodedCopy.AsSpan(checked((int)(row * columns)), n));
            error += ErrorMetrics.Of(original.AsSpan(0, n), delta.AsSpan(0, n));
            System.Numerics.Tensors.TensorPrimitives.Subtract(delta.AsSpan(0, n), original.AsSpan(0, n), delta.AsSpan(0, n));
            if (hessian is null) continue;
            if (sampled is null)
            {
                cost += hessian.Scale * hessian.WeightedSquaredNorm(delta.AsMemory(0, n), count, encodeOptions.Parallelism);
                continue;
            }
            int taken = 0;
            for (int i = 0; i < count; i++)
                if ((row + i) % stride == 0) delta.AsSpan(i * columns, columns).CopyTo(sampled.AsSpan(taken++ * columns, columns));
            if (taken > 0) cost += stride * hessian.Scale * hessian.WeightedSquaredNorm(sampled.AsMemory(0, taken * columns), taken, encodeOptions.Parallelism);
        }
        double output = hessian is null ? error.SquaredError : cost;
        return new CandidateMeasure(bytes, output, output, error);
    }

    /// <summary>
    /// One candidate per tensor, minimising the summed predicted cost with the stored size within <paramref name="budget"/>.
    /// Sizes are rounded up to a unit of at most 1/<see cref="MaxSteps"/> of the budget, so the plan always fits, and
    /// its cost is at most the true optimum of a budget smaller by tensors × unit bytes (docs/budget.md).
    /// </summary>
    /// <exception cref="InvalidOptionException">The budget is below the smallest achievable size or above the original
    /// size; the message names the achievable range in both units.</exception>
    public static BudgetPlan Solve(SensitivityTable table, Budget budget)
    {
        long min = table.MinEncodedBytes, max = table.MaxEncodedBytes, weights = table.Weights;
        long originalEncoded = table.Tensors.Sum(t => t.OriginalBytes);
        long allowed = budget.Unit == BudgetUnit.BitsPerWeight
            ? (long)Math.Floor(Math.Min(budget.Value * weights / 8.0, long.MaxValue / 4.0))
            : (long)budget.Value - table.OtherBytes;
        string Range() =>
            $"achievable with these candidates: {Bpw(min)}–{Bpw(max)} bpw, a checkpoint of {table.OtherBytes + min}–{table.OtherBytes + max} bytes " +
            $"({table.OtherBytes} of them in tensors kept as they are); the original is {Bpw(originalEncoded)} bpw, {table.OriginalBytes} bytes";
        string Bpw(long bytes) => table.BitsPerWeight(bytes).ToString("0.###", CultureInfo.InvariantCulture);
        if (allowed > originalEncoded)
            throw new InvalidOptionException("PlanOptions.Budget", $"{budget} is above the original size; nothing to fit ({Range()})");
        if (allowed < min)
            throw new InvalidOptionException("PlanOptions.Budget", $"{budget} is below the smallest achievable size ({Range()})");

        int t = table.Tensors.Count, c = table.Candidates.Count;
        int maxSteps = (int)Math.Clamp((256L << 20) / Math.Max(1, t), 1000, MaxSteps);
        long unit = Math.Max(1, (allowed + maxSteps - 1) / maxSteps);
        int k = (int)(allowed / unit);
        var size = new int[t][];
        for (int i = 0; i < t; i++)
            size[i] = [.. table.Tensors[i].Candidates.Select(m => m.Fits ? (int)Math.Min(int.MaxValue, (m.Bytes + unit - 1) / unit) : int.MaxValue)];

        // best[j] = least cost of the tensors so far within j units; choice[i][j] = the candidate of tensor i there.
        var best = new double[k + 1];
        var next = new double[k + 1];
        var choice = new byte[t][];
        for (int i = 0; i < t; i++)
        {
            var row = choice[i] = new byte[k + 1];
            var measures = table.Tensors[i].Candidates;
            for (int j = 0; j <= k; j++)
            {
                double value = double.PositiveInfinity;
                int pick = byte.MaxValue;
                for (int candidate = 0; candidate < c; candidate++)
                {
                    int s = size[i][candidate];
                    if (s > j) continue;
                    double v = best[j - s] + measures[candidate].Cost;
                    if (v < value || (v == value && pick != byte.MaxValue && s < size[i][pick]))
                    {
                        value = v;
                        pick = candidate;
                    }
                }
                next[j] = value;
                row[j] = (byte)pick;
            }
            (best, next) = (next, best);
        }
        if (double.IsPositiveInfinity(best[k]))
            throw new InvalidOptionException("PlanOptions.Budget", $"{budget} is too tight once sizes are rounded to {unit} bytes ({Range()})");

        var chosen = new PlannedTensor[t];
        for (int i = t - 1, j = k; i >= 0; i--)
        {
            int pick = choice[i][j];
            var tensor = table.Tensors[i];
            var m = tensor.Candidates[pick];
            chosen[i] = new PlannedTensor(tensor.Name, table.Candidates[pick], tensor.Weights, m.Bytes, m.Cost);
            j -= size[i][pick];
        }
        return new BudgetPlan(budget, chosen, table.OtherBytes, allowed, unit);
    }

    /// <summary>The codec of every planned tensor, for <see cref="CompressOptions.Assignment"/>.</summary>
    public static IReadOnlyDictionary<string, ITensorCodec> Codecs(BudgetPlan plan) => Codecs(plan.Assignment);

    /// <summary>
    /// The assignment (tensor name → spec) of a plan file: the JSON of <c>plan --json</c> holding exactly one plan.
    /// Every spec is validated.
    /// </summary>
    /// <exception cref="CheckpointFormatException">Not such a file, or several plans in it (the message lists their budgets).</exception>
    public static IReadOnlyDictionary<string, string> ReadAssignment(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"{path}: no such plan file", path);
        if (info.Length > 64L << 20) throw new CheckpointFormatException(path, null, 0, $"{info.Length} bytes is too large for a plan");
        using var document = JsonErrors.Parse(path, File.ReadAllBytes(path));
        var root = document.RootElement;
        JsonElement plan;
        if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("plans", out var plans) && plans.ValueKind == JsonValueKind.Array)
        {
            var all = plans.EnumerateArray().ToList();
            if (all.Count != 1)
                throw new CheckpointFormatException(path, "plans", null, all.Count == 0 ? "the file holds no plan"
                    : $"the file holds {all.Count} plans ({string.Join(", ", all.Select(p => p.TryGetProperty("budget", out var b) ? b.ToString() : "?"))}); run plan with the one budget to use");
            plan = all[0];
        }
        else throw new CheckpointFormatException(path, null, 0, "not a plan: expected the JSON of plan --json (a \"plans\" array)");
        if (!plan.TryGetProperty("tensors", out var tensors) || tensors.ValueKind != JsonValueKind.Array)
            throw new CheckpointFormatException(path, "tensors", null, "the plan has no \"tensors\" array");
        var assignment = new Dictionary<string, string>(StringComparer.Ordinal);
        int index = 0;
        foreach (var t in tensors.EnumerateArray())
        {
            if (t.ValueKind != JsonValueKind.Object || !t.TryGetProperty("name", out var n) || n.ValueKind != JsonValueKind.String
                || !t.TryGetProperty("format", out var f) || f.ValueKind != JsonValueKind.String)
                throw new CheckpointFormatException(path, $"tensors[{index}]", null, "each tensor needs a string \"name\" and \"format\"");
            if (!assignment.TryAdd(n.GetString()!, CodecRegistry.Create(f.GetString()!).Spec))
                throw new CheckpointFormatException(path, $"tensors[{index}]", null, $"{n.GetString()} is planned twice");
            index++;
        }
        return assignment;
    }

    /// <summary>Tensor name → spec as tensor name → codec, one codec object per distinct spec.</summary>
    internal static IReadOnlyDictionary<string, ITensorCodec> Codecs(IReadOnlyDictionary<string, string> assignment)
    {
        var bySpec = assignment.Values.Distinct().ToDictionary(s => s, CodecRegistry.Create, StringComparer.Ordinal);
        return assignment.ToDictionary(a => a.Key, a => bySpec[a.Value], StringComparer.Ordinal);
    }
}
