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

    private readonly int _headDim;

    /// <summary>Width of one attention head: <c>Dim / Heads</c> unless the config says otherwise (Qwen3-0.6B: 128 with
    /// hidden 1024 and 16 heads; Llama-3.2-1B: 64).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int HeadDim
    {
        get => _headDim > 0 ? _headDim : Dim / Math.Max(1, Heads);
        init => _headDim = value;
    }

    /// <summary>The head width as written: null when it is the default <c>Dim / Heads</c>, so a config that never named
    /// it and one that named the default round-trip through JSON unchanged.</summary>
    [System.Text.Json.Serialization.JsonInclude, System.Text.Json.Serialization.JsonPropertyName("HeadDim")]
    private int? ExplicitHeadDim
    {
        get => _headDim > 0 ? _headDim : null;
        init => _headDim = value ?? 0;
    }

    /// <summary>Qwen3: an RMSNorm over each query and key head (weights <c>q_norm</c>, <c>k_norm</c>) before RoPE.</summary>
    public bool QkNorm { get; init; }

    /// <summary>Llama-3.1/3.2 rotary frequency scaling; null for plain RoPE.</summary>
    public RopeScaling? RopeScaling { get; init; }

    /// <summary>One divisor per rotary pair (HeadDim / 2 of them), as a GGUF file's <c>rope_freqs.weight</c> gives
    /// Llama-3's scaling to llama.cpp; applied after <see cref="RopeScaling"/> (a file has one or the other).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public float[]? RopeFrequencyFactors { get; init; }

    /// <summary>Why this model cannot run (an architecture or option Nanoscale does not implement), named so that it
    /// is refused instead of run wrongly; null when it can run. Its tensors can still be inspected and compressed.</summary>
    public string? Unsupported { get; init; }

    /// <summary>Width of the query projection's output and the output projection's input: <c>Heads · HeadDim</c>.</summary>
    public int QueryDim => Heads * HeadDim;

    public int KvDim => KvHeads * HeadDim;
}

/// <summary>
/// Llama-3's rotary scaling (<c>rope_scaling</c> with <c>rope_type: llama3</c>): inverse frequencies whose wavelength
/// exceeds <c>OriginalMaxPositions / LowFreqFactor</c> are divided by <see cref="Factor"/>, those below
/// <c>OriginalMaxPositions / HighFreqFactor</c> are kept, and those between are blended smoothly.
/// </summary>
public sealed record RopeScaling(float Factor, float LowFreqFactor, float HighFreqFactor, int OriginalMaxPositions);
