using Nanoscale.IO;
using Nanoscale.Tensors;
using static Nanoscale.Runtime.LlamaTensorNames;

namespace Nanoscale.Runtime;

/// <summary>
/// A Llama-architecture model ready to run on the CPU (SPEC §12): token embedding, blocks of RMSNorm → grouped-query
/// attention with RoPE → RMSNorm → SwiGLU, a final RMSNorm and an output head (the embedding when tied).
/// Immutable and thread-safe; each caller runs it through its own <see cref="InferenceSession"/>.
/// </summary>
public sealed class LlamaModel
{
    private LlamaModel(ModelConfig config, RuntimeOptions options, ILinearWeight embedding, LlamaLayer[] layers, float[] finalNorm, ILinearWeight head)
    {
        Config = config;
        Options = options;
        Embedding = embedding;
        Layers = layers;
        FinalNorm = finalNorm;
        Head = head;
    }

    public ModelConfig Config { get; }

    public RuntimeOptions Options { get; }

    /// <summary>Token embedding, vocab × dim.</summary>
    public ILinearWeight Embedding { get; }

    internal IReadOnlyList<LlamaLayer> Layers { get; }

    public float[] FinalNorm { get; }

    /// <summary>Output head (classifier), vocab × dim; the same object as <see cref="Embedding"/> when tied.</summary>
    public ILinearWeight Head { get; }

    /// <summary>Loads the plain (uncompressed) weights of a checkpoint that describes its architecture.</summary>
    /// <exception cref="CheckpointFormatException">A tensor is missing or its shape does not match the configuration.</exception>
    public static LlamaModel Load(ICheckpoint checkpoint, RuntimeOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ModelConfig config = checkpoint.Config
            ?? throw new CheckpointFormatException(checkpoint.Path, "config", null, "the checkpoint does not describe a model architecture (no llama2.c header or config.json)");
        return Load(config, new CheckpointWeightSource(checkpoint), options, checkpoint.Path);
    }

    /// <summary>Loads a model whose weights come from any source, e.g. a compressed checkpoint's block-decoding weights.</summary>
    public static LlamaModel Load(ModelConfig config, IWeightSource weights, RuntimeOptions? options = null, string? origin = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(weights);
        string file = origin ?? "(weights)";
        Validate(config, file);
        int dim = config.Dim, qDim = config.QueryDim, kvDim = config.KvDim, hidden = config.HiddenDim, vocab = config.VocabSize;

        ILinearWeight Linear(string name, int rows, int columns)
        {
            CheckShape(weights, name, [rows, columns], file);
            ILinearWeight w = weights.Linear(name);
            if (w.Rows != rows || w.Columns != columns)
                throw new CheckpointFormatException(file, name, null, $"expected [{rows}, {columns}], the weight source gave [{w.Rows}, {w.Columns}]");
            return w;
        }

        float[] Vector(string name, int length)
        {
            CheckShape(weights, name, [length], file);
            return weights.Vector(name);
        }

        float[]? OptionalBias(string name, int length) =>
            config.AttentionBias || weights.Contains(name) ? Vector(name, length) : null;

        ILinearWeight embedding = Linear(LlamaTensorNames.Embedding, vocab, dim);
        var layers = new LlamaLayer[config.Layers];
        for (int l = 0; l < layers.Length; l++)
        {
            layers[l] = new LlamaLayer(
                Vector(AttentionNorm(l), dim),
                Linear(Query(l), qDim, dim),
                Linear(Key(l), kvDim, dim),
                Linear(LlamaTensorNames.Value(l), kvDim, dim),
                OptionalBias(QueryBias(l), qDim),
                OptionalBias(KeyBias(l), kvDim),
                OptionalBias(ValueBias(l), kvDim),
                Linear(Output(l), dim, qDim),
                Vector(FfnNorm(l), dim),
                Linear(Gate(l), hidden, dim),
                Linear(Up(l), hidden, dim),
                Linear(Down(l), dim, hidden),
                config.QkNorm ? Vector(QueryNorm(l), config.HeadDim) : null,
                config.QkNorm ? Vector(KeyNorm(l), config.HeadDim) : null);
        }
        float[] finalNorm = Vector(LlamaTensorNames.FinalNorm, dim);
        ILinearWeight head = weights.Contains(OutputHead) ? Linear(OutputHead, vocab, dim)
            : config.TiedEmbeddings ? embedding
            : throw new CheckpointFormatException(file, OutputHead, null, "the configuration says the output head is not tied to the embedding, but the tensor is missing");
        return new LlamaModel(config, options ?? RuntimeOptions.Default, embedding, layers, finalNorm, head);
    }

    /// <summary>A fresh inference state with a key/value cache for <paramref name="capacity"/> positions
    /// (default: the model's maximum sequence length), in <see cref="RuntimeOptions.KvCache"/>'s type.</summary>
    /// <exception cref="InvalidOperationException">A q8 cache for key/value rows that are not whole blocks of 32
    /// (<c>LoadedModel.Open</c> refuses such a model up front).</exception>
    public InferenceSession CreateSession(int? capacity = null) => new(this, capacity ?? Config.MaxSeqLen);

    private static void Validate(ModelConfig c, string file)
    {
        void Check(bool ok, string field, string problem)
        {
            if (!ok) throw new CheckpointFormatException(file, field, null, problem);
        }
        if (c.Unsupported is { } why)
            throw new InputException($"{file}: the {c.Architecture} model cannot run: {why}");
        Check(c.Dim > 0 && c.HiddenDim > 0 && c.Layers > 0 && c.VocabSize > 0 && c.MaxSeqLen > 0, "config",
            $"dimensions must be positive: dim {c.Dim}, hidden {c.HiddenDim}, layers {c.Layers}, vocab {c.VocabSize}, max_seq_len {c.MaxSeqLen}");
        Check(c.Heads > 0 && c.HeadDim > 0, "heads", $"{c.Heads} heads of {c.HeadDim} dimensions");
        Check(c.HeadDim % 2 == 0, "head_dim", $"head size {c.HeadDim} must be even for rotary embeddings");
        Check(c.KvHeads > 0 && c.Heads % c.KvHeads == 0, "kv_heads", $"{c.Heads} heads are not a multiple of {c.KvHeads} key/value heads");
        Check(c.NormEps > 0 && float.IsFinite(c.NormEps), "norm_eps", $"expected a positive epsilon, found {c.NormEps}");
        Check(c.RopeTheta > 0 && float.IsFinite(c.RopeTheta), "rope_theta", $"expected a positive base, found {c.RopeTheta}");
    }

    private static void CheckShape(IWeightSource weights, string name, long[] expected, string file)
    {
        if (!weights.Contains(name))
            throw new CheckpointFormatException(file, name, null, "tensor not found");
        IReadOnlyList<long> shape = weights.Shape(name);
        if (!shape.SequenceEqual(expected))
            throw new CheckpointFormatException(file, name, null, $"expected shape [{string.Join(", ", expected)}], found [{string.Join(", ", shape)}]");
    }
}
