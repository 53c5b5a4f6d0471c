using System.Buffers;
using System.Numerics.Tensors;

namespace Nanoscale.Runtime;

public sealed partial class InferenceSession
{
    /// <summary>Queries per work item, so a window splits into (heads × chunks) items for the workers.</summary>
    private const int QueryChunk = 16;

    /// <summary>Calls of at most this many rows (generation steps, a token factory's step) attend through
    /// <see cref="Kernels.AttendRow"/>; windows (perplexity) keep the TensorPrimitives loops, whose summation order
    /// the llama.cpp cross-checks were measured with.</summary>
    private const int FastRows = 4;

    /// <summary>
    /// Causal grouped-query attention for the batch's queries at positions start.., over the cached keys and values
    /// at positions 0..(own position). Query head h reads key/value head h / (heads / kvHeads).
    /// </summary>
    private unsafe void Attend(int layer, ReadOnlySpan<float> q, int start, int count, Span<float> output)
    {
        int heads = _config.Heads, headDim = _config.HeadDim, kvDim = _config.KvDim, dim = _config.QueryDim; // a row of q and of the output
        int group = heads / _config.KvHeads;
        float scale = 1f / MathF.Sqrt(headDim);
        float[] keyCache = _keyCache[layer], valueCache = _valueCache[layer];
        int chunks = (count + QueryChunk - 1) / QueryChunk;
        long work = (long)heads * count * (start + count) * headDim * 2;
        fixed (float* qPtr = q)
        fixed (float* outPtr = output)
        {
            nint qAddress = (nint)qPtr, outAddress = (nint)outPtr;
            _model.Options.For(heads * chunks, work, item =>
            {
                int h = item % heads, t0 = item / heads * QueryChunk, t1 = Math.Min(count, t0 + QueryChunk);
                int kvOffset = h / group * headDim;
                var queries = new ReadOnlySpan<float>((float*)qAddress, count * dim);
                var result = new Span<float>((float*)outAddress, count * dim);
                float[] scores = ArrayPool<float>.Shared.Rent(start + t1);
                try
                {
                    for (int t = t0; t < t1; t++)
                    {
                        int positions = start + t + 1;
                        ReadOnlySpan<float> query = queries.Slice(t * dim + h * headDim, headDim);
                        Span<float> att = scores.AsSpan(0, positions);
                        if (count <= FastRows && Kernels.AttendRowApplies(headDim))
                        {
                            Kernels.AttendRow(query, keyCache, valueCache, kvDim, kvOffset, scale, att, result.Slice(t * dim + h * headDim, headDim));
                            continue;
                        }
                        for (int p = 0; p < positions; p++)
                            att[p] = TensorPrimitives.Dot(query, keyCache.AsSpan(p * kvDim + kvOffset, headDim)) * scale;
                        Kernels.Softmax(att);
                        Span<float> o = result.Slice(t * dim + h * headDim, headDim);
                        o.Clear();
                        for (int p = 0; p < positions; p++)
                            TensorPrimitives.MultiplyAdd(valueCache.AsSpan(p * kvDim + kvOffset, headDim), att[p], o, o);
                    }
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(scores);
                }
            });
        }
    }
}
