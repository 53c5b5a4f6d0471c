using Nanoscale.IO;

namespace Nanoscale.Tests.Runtime;

/// <summary>
/// A line-by-line port of llama2.c <c>run.c</c>'s <c>forward</c>: one token at a time, plain scalar loops, float
/// accumulation, no shared code with the runtime. The runtime's fast paths are checked against it.
/// </summary>
internal sealed class ReferenceLlama
{
    private readonly ModelConfig _c;
    private readonly float[] _embedding, _finalNorm, _head;
    private readonly float[][] _attNorm, _wq, _wk, _wv, _wo, _ffnNorm, _w1, _w2, _w3;
    private readonly float[]?[] _bq, _bk, _bv;
    private readonly float[][] _keyCache, _valueCache;

    public ReferenceLlama(ICheckpoint checkpoint)
        : this(checkpoint.Config!, name =>
        {
            if (checkpoint.Find(name) is not { } tensor) return null;
            using var view = checkpoint.Map(tensor);
            return view.ToFloatArray();
        })
    {
    }

    /// <param name="config">Architecture; the rotary embedding is llama2.c's (interleaved) whatever the config says.</param>
    /// <param name="tryRead">A tensor by name, or null when absent (lm_head when tied, biases when none).</param>
    public ReferenceLlama(ModelConfig config, Func<string, float[]?> tryRead)
    {
        _c = config;
        float[] Read(string name) => tryRead(name) ?? throw new KeyNotFoundException(name);
        float[][] PerLayer(string suffix) =>
            [.. Enumerable.Range(0, _c.Layers).Select(l => Read($"model.layers.{l}.{suffix}"))];
        float[]?[] OptionalPerLayer(string suffix) =>
            [.. Enumerable.Range(0, _c.Layers).Select(l => tryRead($"model.layers.{l}.{suffix}"))];
        _embedding = Read("model.embed_tokens.weight");
        _finalNorm = Read("model.norm.weight");
        _head = tryRead("lm_head.weight") ?? _embedding;
        _bq = OptionalPerLayer("self_attn.q_proj.bias");
        _bk = OptionalPerLayer("self_attn.k_proj.bias");
        _bv = OptionalPerLayer("self_attn.v_proj.bias");
        _attNorm = PerLayer("input_layernorm.weight");
        _wq = PerLayer("self_attn.q_proj.weight");
        _wk = PerLayer("self_attn.k_proj.weight");
        _wv = PerLayer("self_attn.v_proj.weight");
        _wo = PerLayer("self_attn.o_proj.weight");
        _ffnNorm = PerLayer("post_attention_layernorm.weight");
        _w1 = PerLayer("mlp.gate_proj.weight");
        _w2 = PerLayer("mlp.down_proj.weight");
        _w3 = PerLayer("mlp.up_proj.weight");
        _keyCache = [.. Enumerable.Range(0, _c.Layers).Select(_ => new float[_c.MaxSeqLen * _c.KvDim])];
        _valueCache = [.. Enumerable.Range(0, _c.Layers).Select(_ => new float[_c.MaxSeqLen * _c.KvDim])];
    }

    private static void RmsNorm(float[] o, float[] x, float[] w, float eps)
    {
        float ss = 0;
        for (int j = 0; j < x.Length; j++) ss += x[j] * x[j];
        ss = 1f / MathF.Sqrt(ss / x.Length + eps);
        for (int j = 0; j < x.Length; j++) o[j] = w[j] * (ss * x[j]);
    }

    private static void MatMul(float[] xout, float[] x, float[] w, int n, int d)
    {
        for (int i = 0; i < d; i++)
        {
            float val = 0;
            for (int j = 0; j < n; j++) val += w[i * n + j] * x[j];
            xout[i] = val;
        }
    }

    public float[] Forward(int token, int pos)
    {
        int dim = _c.Dim, kvDim = _c.KvDim, hidden = _c.HiddenDim, headSize = _c.HeadDim, kvMul = _c.Heads / _c.KvHeads;
        var x = new float[dim];
        Array.Copy(_embedding, token * dim, x, 0, dim);
        var xb = new float[dim];
        var xb2 = new float[dim];
        var q = new float[dim];
        var k = new float[kvDim];
        var v = new float[kvDim];
        var hb = new float[hidden];
        var hb2 = new float[hidden];
        var att = new float[pos + 1];
        for (int l = 0; l < _c.Layers; l++)
        {
            RmsNorm(xb, x, _attNorm[l], _c.NormEps);
            MatMul(q, xb, _wq[l], dim, dim);
            MatMul(k, xb, _wk[l], dim, kvDim);
            MatMul(v, xb, _wv[l], dim, kvDim);
            if (_bq[l] is { } bq) for (int i = 0; i < dim; i++) q[i] += bq[i];
            if (_bk[l] is { } bk) for (int i = 0; i < kvDim; i++) k[i] += bk[i];
            if (_bv[l] is { } bv) for (int i = 0; i < kvDim; i++) v[i] += bv[i];
            for (int i = 0; i < dim; i += 2)
            {
                int headDim = i % headSize;
                float freq = 1f / MathF.Pow(_c.RopeTheta, headDim / (float)headSize);
                float val = pos * freq;
                float fcr = MathF.Cos(val), fci = MathF.Sin(val);
                int rotn = i < kvDim ? 2 : 1;
                for (int vi = 0; vi < rotn; vi++)
                {
                    float[] vec = vi == 0 ? q : k;
                    float v0 = vec[i], v1 = vec[i + 1];
                    vec[i] = v0 * fcr - v1 * fci;
                    vec[i + 1] = v0 * fci + v1 * fcr;
                }
            }
            Array.Copy(k, 0, _keyCache[l], pos * kvDim, kvDim);
            Array.Copy(v, 0, _valueCache[l], pos * kvDim, kvDim);
            for (int h = 0; h < _c.Heads; h++)
            {
                int kvh = h / kvMul;
                for (int t = 0; t <= pos; t++)
                {
                    float score = 0;
                    for (int i = 0; i < headSize; i++) score += q[h * headSize + i] * _keyCache[l][t * kvDim + kvh * headSize + i];
                    att[t] = score / MathF.Sqrt(headSize);
                }
                float max = att.Max(), sum = 0;
                for (int t = 0; t <= pos; t++) { att[t] = MathF.Exp(att[t] - max); sum += att[t]; }
                for (int t = 0; t <= pos; t++) att[t] /= sum;
                for (int i = 0; i < headSize; i++)
                {
                    float o = 0;
                    for (int t = 0; t <= pos; t++) o += att[t] * _valueCache[l][t * kvDim + kvh * headSize + i];
                    xb[h * headSize + i] = o;
                }
            }
            MatMul(xb2, xb, _wo[l], dim, dim);
            for (int i = 0; i < dim; i++) x[i] += xb2[i];
            RmsNorm(xb, x, _ffnNorm[l], _c.NormEps);
            MatMul(hb, xb, _w1[l], dim, hidden);
            MatMul(hb2, xb, _w3[l], dim, hidden);
            for (int i = 0; i < hidden; i++)
            {
                float val = hb[i];
                val *= 1f / (1f + MathF.Exp(-val));
                hb[i] = val * hb2[i];
            }
            MatMul(xb, hb, _w2[l], hidden, dim);
            for (int i = 0; i < dim; i++) x[i] += xb[i];
        }
        RmsNorm(x, x, _finalNorm, _c.NormEps);
        var logits = new float[_c.VocabSize];
        MatMul(logits, x, _head, dim, _c.VocabSize);
        return logits;
    }
}
