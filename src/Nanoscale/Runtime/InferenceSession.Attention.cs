using System.Buffers;
using System.Numerics.Tensors;

namespace Nanoscale.Runtime;

public sealed partial class InferenceSession
{
    /// <summary>Queries per work item, so a window splits into (heads × chunks) items for the workers.</summary>
    private const int QueryChunk = 16;

    /// <summary>Calls of at most this many rows (generation steps, a token factory's step) attend through
    /// <see cref="Kernels.AttendRows"/>; windows (perplexity) keep the TensorPrimitives loops, whose summation order
    /// the llama.cpp cross-checks were measured with.</summary>
    private const int FastRows = 4;

    /// <summary>
    /// Causal grouped-query attention for the batch's queries at positions start.., over the cached keys and values
    /// at positions 0..(own position). Query head h reads key/value head h / (heads / kvHeads). A narrower cache is
    /// widened as it is read: inside <see cref="Kernels.AttendRows"/> for steps, else once per work item, the item's
    /// head into float rows for all its queries (as is a cache that begins with a shared prefix, the prefix's rows
    /// first). <paramref name="serial"/>: the caller runs several sequences' calls
    /// on its threads already (the token factory's step), so this one stays on its thread: a loop nested in each
    /// sequence's item cost more than it spread (the attention's share of a 16-sequence step 27% → 18%).
    /// </summary>
    private unsafe void Attend(int layer, ReadOnlySpan<float> q, int start, int count, Span<float> output, bool serial = false)
    {
        int heads = _config.Heads, headDim = _config.HeadDim, kvDim = _config.KvDim, dim = _config.QueryDim; // a row of q and of the output
        int group = heads / _config.KvHeads;
        float scale = 1f / MathF.Sqrt(headDim);
        KvRows keyCache = _keyCache[layer], valueCache = _valueCache[layer];
        float[] keyFloats = (keyCache as FloatKvRows)?.Data ?? [], valueFloats = (valueCache as FloatKvRows)?.Data ?? [];
        // A shared beginning's rows are read before the own ones: the generic loops read both widened into one run.
        KvPrefix? prefix = _prefix;
        bool narrow = _kvType != KvCacheType.F32 || prefix is not null;
        long work = (long)heads * count * (start + count) * headDim * 2;
        if (count <= FastRows && Kernels.AttendRowApplies(headDim))
        {
            // Steps: an item is a row's query heads that read one cached head, all of them together when the caller
            // already spreads sequences over the threads (each block of cached rows is then read once for the group),
            // else one head each, so a single sequence's step still has enough items for every thread.
            int together = serial ? group : 1, parts = group / together, items = count * _config.KvHeads * parts;
            fixed (float* qPtr = q)
            fixed (float* outPtr = output)
            {
                nint qAddress = (nint)qPtr, outAddress = (nint)outPtr;
                _model.Options.For(items, serial ? 0 : work, item =>
                {
                    int t = item / (_config.KvHeads * parts), kvHead = item / parts % _config.KvHeads, part = item % parts;
                    int positions = start + t + 1;
                    float[] scores = ArrayPool<float>.Shared.Rent(together * positions);
                    try
                    {
                        int first = t * dim + (kvHead * group + part * together) * headDim;
                        Kernels.AttendRows(new ReadOnlySpan<float>((float*)qAddress + first, together * headDim), together, keyCache, valueCache,
                            kvDim, kvHead * headDim, scale, scores.AsSpan(0, together * positions),
                            new Span<float>((float*)outAddress + first, together * headDim),
                            prefix?.Keys[layer], prefix?.Values[layer], prefix?.Positions ?? 0);
                    }
                    finally
                    {
                        ArrayPool<float>.Shared.Return(scores);
                    }
                });
            }
            return;
        }
        int chunks = (count + QueryChunk - 1) / QueryChunk;
        fixed (float* qPtr = q)
        fixed (float* outPtr = output)
        {
            nint qAddress = (nint)qPtr, outAddress = (nint)outPtr;
            _model.Options.For(heads * chunks, serial ? 0 : work, item =>
            {
                int h = item % heads, t0 = item / heads * QueryChunk, t1 = Math.Min(count, t0 + QueryChunk);
                int kvOffset = h / group * headDim;
                var queries = new ReadOnlySpan<float>((float*)qAddress, count * dim);
                var result = new Span<float>((float*)outAddress, count * dim);
                float[] scores = ArrayPool<float>.Shared.Rent(start + t1);
                float[]? widened = null;
                try
                {
                    // The rows the generic loops read: the f32 cache itself, or this head of a narrower cache widened
                    // once for all the item's queries (positions × headDim each for keys and values).
                    ReadOnlySpan<float> keys = keyFloats, values = valueFloats;
                    int stride = kvDim, offset = kvOffset;
                    if (narrow)
                    {
                        int all = start + t1;
                        widened = ArrayPool<float>.Shared.Rent(2 * all * headDim);
                        WidenHead(layer, keys: true, kvOffset, all, widened.AsSpan(0, all * headDim));
                        WidenHead(layer, keys: false, kvOffset, all, widened.AsSpan(all * headDim, all * headDim));
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
