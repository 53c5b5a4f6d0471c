using Nanoscale.IO;

namespace Nanoscale.Runtime;

/// <summary>
/// Where the runtime gets its weights, by Hugging Face Llama tensor name (see <see cref="ICheckpoint"/>).
/// <see cref="CheckpointWeightSource"/> reads plain tensors; a compressed checkpoint supplies its own source whose
/// <see cref="Linear"/> returns a block-decoding <see cref="ILinearWeight"/>.
/// </summary>
public interface IWeightSource
{
    /// <summary>True when the tensor exists (e.g. <c>lm_head.weight</c> is absent when tied).</summary>
    bool Contains(string name);

    /// <summary>A 2-D weight <c>[rows, columns]</c>.</summary>
    ILinearWeight Linear(string name);

    /// <summary>A 1-D tensor (norm weights, biases) as float32.</summary>
    float[] Vector(string name);

    /// <summary>The shape of a tensor, for validation against the configuration.</summary>
    IReadOnlyList<long> Shape(string name);
}
