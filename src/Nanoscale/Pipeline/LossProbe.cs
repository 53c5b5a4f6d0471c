using Nanoscale.IO;
using Nanoscale.Runtime;
using Nanoscale.Tensors;

namespace Nanoscale.Pipeline;

/// <summary>
/// Measures what one tensor's rounding does to the model's predictions (docs/budget.md): the model runs once over
/// the probe tokens to keep its next-token distributions, then, for a tensor replaced by its decoded values, again,
/// and the mean KL divergence <c>KL(p_original ‖ p_rounded)</c> per position is the tensor's measured loss. KL, not
/// the change of NLL, because it is never negative and is the Fisher quadratic form to second order, so a small
/// perturbation gives a small positive number rather than noise of either sign.
/// </summary>
internal sealed class LossProbe : IDisposable
{
    private readonly LoadedModel _loaded;
    private readonly SwappingWeightSource _weights;
    private readonly int[] _tokens;
    private readonly int _context;
    private readonly float[] _referenceLogProbs; // positions × vocab
    private readonly Parallelism _parallelism;

    private LossProbe(LoadedModel loaded, SwappingWeightSource weights, int[] tokens, int context, Parallelism parallelism)
    {
        _loaded = loaded;
        _weights = weights;
        _tokens = tokens;
        _context = context;
        _parallelism = parallelism;
        _referenceLogProbs = LogProbs(loaded.Model);
    }

    /// <summary>Positions scored per probe.</summary>
    public int Positions => _tokens.Length;

    /// <summary>Opens the model at <paramref name="modelPath"/> and runs it once over the first <paramref name="tokens"/>
    /// tokens of the text.</summary>
    public static LossProbe Open(string modelPath, string textPath, string? tokenizerPath, int tokens, Parallelism parallelism,
        CancellationToken cancellationToken = default)
    {
        if (tokens < 2) throw new InvalidOptionException("PlanOptions.SensitivityTokens", $"the loss probe needs at least 2 tokens, not {tokens}");
        var text = TextInput.Read(textPath, "CalibrationPath");
        SwappingWeightSource? swapping = null;
        var loaded = LoadedModel.Open(modelPath, new ModelLoadOptions
        {
            TokenizerPath = tokenizerPath,
            Parallelism = parallelism,
            WrapWeights = (_, weights) => swapping = new SwappingWeightSource(weights),
        });
        try
        {
            long characters = Math.Min(text.Length, 16L * tokens + 1024);
            var ids = loaded.Tokenizer.Encode(text[..(int)characters], addBos: true);
            if (ids.Length > tokens) ids = ids[..tokens];
            if (ids.Length < 2) throw new InputException($"{textPath}: the text gives fewer than 2 tokens to probe the model's loss on");
            cancellationToken.ThrowIfCancellationRequested();
            return new LossProbe(loaded, swapping!, ids, Math.Min(loaded.Config.MaxSeqLen, 2048), parallelism);
        }
        catch
        {
            loaded.Dispose();
            throw;
        }
    }

    /// <summary>Mean KL divergence per position between the original model and the model with <paramref name="tensor"/>
    /// replaced by <paramref name="decoded"/> (row-major, its shape).</summary>
    public double MeanKl(string tensor, float[] decoded, CancellationToken cancellationToken = default)
    {
        var original = _weights.Linear(tensor);
        var model = LlamaModel.Load(_loaded.Config, _weights.With(tensor, new DenseLinearWeight(decoded, original.Rows, original.Columns)),
            new RuntimeOptions { Parallelism = _parallelism });
        cancellationToken.ThrowIfCancellationRequested();
        var logProbs = LogProbs(model);
        int vocab = _loaded.Config.VocabSize;
        double total = 0;
        for (int position = 0; position < _tokens.Length; position++)
        {
            var p = _referenceLogProbs.AsSpan(position * vocab, vocab);
            var q = logProbs.AsSpan(position * vocab, vocab);
            double kl = 0;
            for (int i = 0; i < vocab; i++) kl += Math.Exp(p[i]) * (p[i] - q[i]);
            total += Math.Max(0, kl);
        }
        return total / _tokens.Length;
    }

    private float[] LogProbs(LlamaModel model)
    {
        int vocab = _loaded.Config.VocabSize;
        var result = new float[(long)_tokens.Length * vocab];
        var session = model.CreateSession(_context);
        for (int start = 0; start < _tokens.Length; start += _context)
        {
            int count = Math.Min(_context, _tokens.Length - start);
            session.Reset();
            var logits = result.AsSpan(start * vocab, count * vocab);
            session.Forward(_tokens.AsSpan(start, count), logits);
            for (int t = 0; t < count; t++)
            {
                var row = logits.Slice(t * vocab, vocab);
                float max = System.Numerics.Tensors.TensorPrimitives.Max(row);
                double sum = 0;
                foreach (float v in row) sum += Math.Exp(v - max);
                float logSum = max + (float)Math.Log(sum);
                System.Numerics.Tensors.TensorPrimitives.Subtract(row, logSum, row);
            }
        }
        return result;
    }

    public void Dispose() => _loaded.Dispose();

    /// <summary>The loaded model's weights, each opened once, with one tensor replaceable per model built.</summary>
    private sealed class SwappingWeightSource(IWeightSource inner) : IWeightSource
    {
        private readonly Dictionary<string, ILinearWeight> _linear = new(StringComparer.Ordinal);
        private readonly Dictionary<string, float[]> _vectors = new(StringComparer.Ordinal);

        public bool Contains(string name) => inner.Contains(name);

        public IReadOnlyList<long> Shape(string name) => inner.Shape(name);

        public float[] Vector(string name) => _vectors.TryGetValue(name, out var v) ? v : _vectors[name] = inner.Vector(name);

        public ILinearWeight Linear(string name) => _linear.TryGetValue(name, out var w) ? w : _linear[name] = inner.Linear(name);

        public IWeightSource With(string name, ILinearWeight replacement) => new Replaced(this, name, replacement);

        private sealed class Replaced(SwappingWeightSource source, string name, ILinearWeight replacement) : IWeightSource
        {
            public bool Contains(string n) => source.Contains(n);
            public IReadOnlyList<long> Shape(string n) => source.Shape(n);
            public float[] Vector(string n) => source.Vector(n);
            public ILinearWeight Linear(string n) => n == name ? replacement : source.Linear(n);
        }
    }
}
