using BenchmarkDotNet.Attributes;
using Nanoscale.IO;
using Nanoscale.Runtime;

namespace Nanoscale.Benchmarks;

/// <summary>
/// Evaluation throughput of the runtime (docs/runtime.md): one perplexity window (matrix–matrix path) and
/// token-by-token decoding, on stories260K and on a synthetic 8-layer dim-512 model (random weights, ~29M parameters)
/// where the matrix products dominate. Tokens/s = tokens per operation / mean time.
/// </summary>
[SimpleJob(launchCount: 1, warmupCount: 2, iterationCount: 5)]
public class RuntimeBenchmarks
{
    private LlamaModel _model = null!;
    private int[] _tokens = null!;
    private float[] _hidden = null!;
    private InferenceSession _session = null!;

    [Params("stories260K", "synthetic-dim512")]
    public string Model { get; set; } = "";

    [Params(1, 2)]
    public int Threads { get; set; }

    /// <summary>Window length (tokens per <see cref="Window"/> operation).</summary>
    public const int WindowTokens = 256;

    /// <summary>Tokens per <see cref="TokenByToken"/> operation.</summary>
    public const int StepTokens = 32;

    [GlobalSetup]
    public void Setup()
    {
        var options = new RuntimeOptions { Parallelism = new(Threads) };
        if (Model == "stories260K")
        {
            using ICheckpoint checkpoint = CheckpointLoader.Open(FindSharedData("models", "stories260K", "stories260K.bin"));
            _model = LlamaModel.Load(checkpoint, options);
        }
        else
        {
            var config = new ModelConfig
            {
                Architecture = "synthetic", Dim = 512, HiddenDim = 1376, Layers = 8, Heads = 8, KvHeads = 4,
                VocabSize = 4096, MaxSeqLen = 512, TiedEmbeddings = true,
            };
            _model = LlamaModel.Load(config, new RandomWeights(), options);
        }
        var random = new Random(1);
        _tokens = [.. Enumerable.Range(0, WindowTokens).Select(_ => random.Next(3, _model.Config.VocabSize))];
        _hidden = new float[WindowTokens * _model.Config.Dim];
        _session = _model.CreateSession(WindowTokens);
    }

    [Benchmark]
    public void Window()
    {
        _session.Reset();
        _session.ForwardHidden(_tokens, _hidden);
    }

    [Benchmark]
    public float TokenByToken()
    {
        _session.Reset();
        float sum = 0;
        for (int i = 0; i < StepTokens; i++) sum += _session.Step(_tokens[i])[0];
        return sum;
    }

    private static string FindSharedData(params string[] parts)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine([dir.FullName, "shared", "data", .. parts]);
            if (File.Exists(candidate)) return candidate;
        }
        throw new FileNotFoundException($"shared/data/{string.Join('/', parts)} not found above {AppContext.BaseDirectory}");
    }

    /// <summary>Deterministic random weights with the scale of a trained model (~1/sqrt(columns)).</summary>
    private sealed class RandomWeights : IWeightSource
    {
        private readonly Dictionary<string, long[]> _shapes = [];

        public bool Contains(string name) => !name.StartsWith("lm_head", StringComparison.Ordinal) && !name.EndsWith(".bias", StringComparison.Ordinal);

        public IReadOnlyList<long> Shape(string name) => ShapeOf(name);

        public ILinearWeight Linear(string name)
        {
            long[] shape = ShapeOf(name);
            int rows = (int)shape[0], columns = (int)shape[1];
            var random = new Random(name.GetHashCode(StringComparison.Ordinal));
            float scale = 1f / MathF.Sqrt(columns);
            var data = new float[rows * columns];
            for (int i = 0; i < data.Length; i++) data[i] = (float)(random.NextDouble() * 2 - 1) * scale;
            return new DenseLinearWeight(data, rows, columns);
        }

        public float[] Vector(string name) => [.. Enumerable.Repeat(1f, (int)ShapeOf(name)[0])];

        private long[] ShapeOf(string name)
        {
            if (_shapes.TryGetValue(name, out var shape)) return shape;
            const int dim = 512, kvDim = 256, hidden = 1376, vocab = 4096;
            shape = name switch
            {
                _ when name.EndsWith("norm.weight", StringComparison.Ordinal) => [dim],
                "model.embed_tokens.weight" => [vocab, dim],
                _ when name.Contains("k_proj") || name.Contains("v_proj") => [kvDim, dim],
                _ when name.Contains("gate_proj") || name.Contains("up_proj") => [hidden, dim],
                _ when name.Contains("down_proj") => [dim, hidden],
                _ => [dim, dim],
            };
            return _shapes[name] = shape;
        }
    }
}
