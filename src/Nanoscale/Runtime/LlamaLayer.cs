namespace Nanoscale.Runtime;

/// <summary>
/// One transformer block's weights. Shapes (rows × columns, PyTorch <c>[out, in]</c>): query dim×dim, key and value
/// kvDim×dim, output dim×dim, gate and up hidden×dim, down dim×hidden; norms dim; biases (Qwen2) q: dim, k, v: kvDim.
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
    ILinearWeight Down);
