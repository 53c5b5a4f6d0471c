namespace Nanoscale.Runtime;

/// <summary>
/// One transformer block's weights. Shapes (rows × columns, PyTorch <c>[out, in]</c>): query qDim×dim (qDim = heads ·
/// headDim), key and value kvDim×dim, output dim×qDim, gate and up hidden×dim, down dim×hidden; norms dim; biases (Qwen2)
/// q: qDim, k, v: kvDim; per-head norms (Qwen3) q and k: headDim.
/// </summary>
internal sealed record LlamaLayer(
    float[] AttentionNorm,
    ILinearWeight Query,
    ILinearWeight Key,
    ILinearWeight Value,
    float[]? QueryBias,
    float[]? KeyBias,
    float[]? ValueBias,
    ILinearWeight Output,
    float[] FfnNorm,
    ILinearWeight Gate,
    ILinearWeight Up,
    ILinearWeight Down,
    float[]? QueryNorm = null,
    float[]? KeyNorm = null);
