using System.Buffers;
using System.Numerics.Tensors;

namespace Nanoscale.Runtime;

public sealed partial class InferenceSession
{
    /// <summary>Queries per work item, so a window splits into (heads × chunks) items for the workers.</summary>
    private const int QueryChunk = 16;

    /// <summary>Calls of at most this many rows (generation steps, a token factory's step) attend through
    /// <see cref="Kernels.AttendRow(ReadOnlySpan{float}, KvRows, KvRows, int, int, float, Span{float}, Span{float})"/>; windows (perplexity) keep the TensorPrimitives loops, whose summation order
    /// the llama.cpp cross-checks were measured with.</summary>
    private const int FastRows = 4;

    /// <summary>
    /// Causal grouped-query attention for the batch's queries at positions start.., over the cached keys and values
    /// at positions 0..(own position). Query head h reads key/value head h / (heads / kvHeads). A 16- or 8-bit
    /// cache is widened as it is read: inside <see cref="Kernels.AttendRow(ReadOnlySpan{float}, KvRows, KvRows, int, int, float, Span{float}, Span{float})"/>
    /// for steps, else once per work item, the item's head into float rows for all its queries.
    /// </summary>
    private unsafe void Attend(int layer, ReadOnlySpan<float> q, int start, int count, Span<float> output)
    {
        int heads = _config.Heads, headDim = _config.HeadDim, kvDim = _config.KvDim, dim = _config.QueryDim; // a row of q and of the output
        int group = heads / _config.KvHeads;
        float scale = 1f / MathF.Sqrt(headDim);
        KvRows keyCache = _keyCache[layer], valueCache = _valueCache[layer];
        float[] keyFloats = (keyCache as FloatKvRows)?.Data ?? [], valueFloats = (valueCache as FloatKvRows)?.Data ?? [];
        bool narrow = _kvType != KvCacheType.F32;
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
                float[]? widened = null;
                try
                {
                    bool fast = count <= FastRows && Kernels.AttendRowApplies(headDim);
                    // The rows the generic loops read: the f32 cache itself, or this head of a narrower cache widened
                    // once for all the item's queries (positions × headDim each for keys and values).
                    ReadOnlySpan<float> keys = keyFloats, values = valueFloats;
                    int stride = kvDim, offset = kvOffset;
                    if (narrow && !fast)
                    {
                        int all = start + t1;
                        widened = ArrayPool<float>.Shared.Rent(2 * all * headDim);
                        WidenHead(keyCache, kvOffset, all, widened.AsSpan(0, all * headDim));
                        WidenHead(valueCache, kvOffset, all, widened.AsSpan(all * headDim, all * headDim));
                        keys = widened.AsSpan(0, all * headDim);
                        values = widened.AsSpan(all * headDim, all * headDim);
                        (stride, offset) = (headDim, 0);
                    }
                    for (int t = t0; t < t1; t++)
                    {
                        int positions = start + t + 1;
                        ReadOnlySpan<float> query = queries.Slice(t * dim + h * headDim, headDim);
                        Span<float> att = scores.AsSpan(0, positions);
                        Span<float> o = result.Slice(t * dim + h * headDim, headDim);
                        if (fast)
                        {
                            Kernels.AttendRow(query, keyCache, valueCache, kvDim, kvOffset, scale, att, o);
                            continue;
                        }
                        for (int p = 0; p < positions; p++)
                            att[p] = TensorPrimitives.Dot(query, keys.Slice(p * stride + offset, headDim)) * scale;
                        Kernels.Softmax(att);
                        o.Clear();
                        for (int p = 0; p < positions; p++)
                            TensorPrimitives.MultiplyAdd(values.Slice(p * stride + offset, headDim), att[p], o, o);
                    }
                }
                finally
                {
                    ArrayPool<float>.Shared.Return(scores);
                    if (widened is not null) ArrayPool<float>.Shared.Return(widened);
                }
            });
        }
    }
}
