namespace Nanoscale.IO;

/// <summary>What kind of file or folder a checkpoint was read from.</summary>
public enum CheckpointKind
{
    Safetensors,
    ShardedSafetensors,
    HuggingFaceDirectory,
    Llama2c,
    Gguf,
}

/// <summary>
/// A read-only view of a checkpoint as named tensors, whatever the file format. Tensor bytes are mapped, not read,
/// and only while a <see cref="TensorView"/> is held, so a checkpoint far larger than memory can be streamed
/// tensor by tensor.
/// </summary>
/// <remarks>
/// Tensor names follow Hugging Face Llama naming for every model kind (docs/checkpoints.md):
/// <c>model.embed_tokens.weight</c>, <c>model.layers.{i}.input_layernorm.weight</c>,
/// <c>model.layers.{i}.self_attn.{q,k,v,o}_proj.weight</c>, <c>model.layers.{i}.post_attention_layernorm.weight</c>,
/// <c>model.layers.{i}.mlp.{gate,up,down}_proj.weight</c>, <c>model.norm.weight</c>, <c>lm_head.weight</c>
/// (absent when tied). llama2.c's w1/w3/w2 are gate/up/down.
/// </remarks>
public interface ICheckpoint : IDisposable
{
    /// <summary>The file or folder the checkpoint was opened from.</summary>
    string Path { get; }

    /// <summary>Every file the checkpoint is read from (tensor files, index, config), as full paths: what no output
    /// may replace (<see cref="OutputGuard"/>).</summary>
    IReadOnlyList<string> Files { get; }

    CheckpointKind Kind { get; }

    /// <summary>Tensors in file order.</summary>
    IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>The safetensors <c>__metadata__</c> map (empty when there is none), in file order.</summary>
    IReadOnlyList<KeyValuePair<string, string>> Metadata { get; }

    /// <summary>The architecture when the checkpoint describes one (llama2.c header, config.json), else null.</summary>
    ModelConfig? Config { get; }

    /// <summary>Finds a tensor by name; null when absent.</summary>
    TensorInfo? Find(string name);

    /// <summary>Maps one tensor's bytes. Dispose the view to release the mapping. A file that carries Nanoscale's
    /// integrity record checks the tensor against it the first time.</summary>
    /// <exception cref="CheckpointFormatException">The tensor is damaged.</exception>
    TensorView Map(TensorInfo tensor);

    /// <summary>Checks every tensor against the integrity records of the checkpoint's files.</summary>
    IntegrityReport Verify(CancellationToken cancellationToken = default);
}
