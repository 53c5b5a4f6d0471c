namespace Nanoscale.IO;

/// <summary>How rotary embeddings pair up the dimensions of a head.</summary>
public enum RopeStyle
{
    /// <summary>llama2.c / Meta: rotate pairs (2i, 2i+1).</summary>
    Interleaved,

    /// <summary>Hugging Face: rotate pairs (i, i + headDim/2).</summary>
    Halves,
}

/// <summary>
/// Architecture of a Llama-family model, from a llama2.c header or a Hugging Face <c>config.json</c>.
/// </summary>
public sealed record ModelConfig
{
    public required string Architecture { get; init; }
    public required int Dim { get; init; }
    public required int HiddenDim { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public required int KvHeads { get; init; }
    public required int VocabSize { get; init; }
    public required int MaxSeqLen { get; init; }
    public float NormEps { get; init; } = 1e-5f;
    public float RopeTheta { get; init; } = 10000f;
    public RopeStyle RopeStyle { get; init; } = RopeStyle.Halves;
    public bool TiedEmbeddings { get; init; }

    /// <summary>Qwen2 stores biases on the q, k and v projections.</summary>
    public bool AttentionBias { get; init; }

    public int HeadDim => Dim / Heads;
    public int KvDim => KvHeads * HeadDim;
}
