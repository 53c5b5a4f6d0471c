#!/usr/bin/env python3
"""Independent cross-check of Nanoscale's runtime on Hugging Face Llama-family folders, in pure Python (no numpy).

Written from transformers' modeling_llama / modeling_qwen2 / modeling_qwen3 and sharing no code with the C# runtime:
reads config.json and model.safetensors (F32 or BF16) of a small folder and prints the logits after every position of
the given token ids as JSON. Covers what the C# runtime covers: grouped-query attention, an explicit head_dim, q/k/v
biases (qwen2), per-head q/k RMSNorm before RoPE (qwen3), rotary embeddings on the two halves of each head with
Llama-3's frequency scaling, SwiGLU, tied or untied output heads. Pure Python is slow: use tiny models.

    python3 tools/hf_llama_ref.py MODEL_DIR 1 5 9 42
"""
import json
import math
import os
import struct
import sys


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = data[begin:end]
        if entry["dtype"] == "F32":
            values = list(struct.unpack("<%df" % (len(raw) // 4), raw))
        elif entry["dtype"] == "BF16":
            halves = struct.unpack("<%dH" % (len(raw) // 2), raw)
            values = [struct.unpack("<f", struct.pack("<I", h << 16))[0] for h in halves]
        else:
            raise SystemExit(f"{name}: dtype {entry['dtype']} not handled")
        shape = entry["shape"]
        if len(shape) == 2:
            rows, cols = shape
            values = [values[r * cols:(r + 1) * cols] for r in range(rows)]
        tensors[name] = values
    return tensors


def rms_norm(x, w, eps):
    ss = sum(v * v for v in x) / len(x)
    inv = 1.0 / math.sqrt(ss + eps)
    return [v * inv * wi for v, wi in zip(x, w)]


def matvec(m, x):
    return [sum(a * b for a, b in zip(row, x)) for row in m]


def inv_frequencies(head_dim, theta, scaling):
    freqs = [1.0 / (theta ** (2 * j / head_dim)) for j in range(head_dim // 2)]
    if not scaling:
        return freqs
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen > low_wavelen:
            out.append(f / factor)
        elif wavelen < high_wavelen:
            out.append(f)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return out


def rope(vec, pos, freqs):
    half = len(vec) // 2
    out = list(vec)
    for j in range(half):
        angle = pos * freqs[j]
        c, s = math.cos(angle), math.sin(angle)
        a, b = vec[j], vec[j + half]
        out[j] = a * c - b * s
        out[j + half] = b * c + a * s
    return out


def main():
    folder, ids = sys.argv[1], [int(t) for t in sys.argv[2:]]
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = read_safetensors(os.path.join(folder, "model.safetensors"))
    dim, heads, kv_heads = cfg["hidden_size"], cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or dim // heads
    eps, qwen3 = cfg["rms_norm_eps"], cfg["model_type"] == "qwen3"
    freqs = inv_frequencies(head_dim, cfg.get("rope_theta", 10000.0), cfg.get("rope_scaling"))
    layers = cfg["num_hidden_layers"]
    head = w.get("lm_head.weight") or w["model.embed_tokens.weight"]
    keys = [[] for _ in range(layers)]
    values = [[] for _ in range(layers)]
    result = []
    for pos, tok in enumerate(ids):
        x = list(w["model.embed_tokens.weight"][tok])
        for l in range(layers):
            p = f"model.layers.{l}."
            xb = rms_norm(x, w[p + "input_layernorm.weight"], eps)
            q, k, v = (matvec(w[p + f"self_attn.{n}_proj.weight"], xb) for n in "qkv")
            if p + "self_attn.q_proj.bias" in w:
                q = [a + b for a, b in zip(q, w[p + "self_attn.q_proj.bias"])]
                k = [a + b for a, b in zip(k, w[p + "self_attn.k_proj.bias"])]
                v = [a + b for a, b in zip(v, w[p + "self_attn.v_proj.bias"])]
            qh = [q[h * head_dim:(h + 1) * head_dim] for h in range(heads)]
            kh = [k[h * head_dim:(h + 1) * head_dim] for h in range(kv_heads)]
            vh = [v[h * head_dim:(h + 1) * head_dim] for h in range(kv_heads)]
            if qwen3:
                qh = [rms_norm(t, w[p + "self_attn.q_norm.weight"], eps) for t in qh]
                kh = [rms_norm(t, w[p + "self_attn.k_norm.weight"], eps) for t in kh]
            qh = [rope(t, pos, freqs) for t in qh]
            kh = [rope(t, pos, freqs) for t in kh]
            keys[l].append(kh)
            values[l].append(vh)
            out = []
            group = heads // kv_heads
            for h in range(heads):
                kv = h // group
                scores = [sum(a * b for a, b in zip(qh[h], keys[l][t][kv])) / math.sqrt(head_dim) for t in range(pos + 1)]
                m = max(scores)
                e = [math.exp(s - m) for s in scores]
                z = sum(e)
                o = [0.0] * head_dim
                for t in range(pos + 1):
                    a = e[t] / z
                    o = [oi + a * vi for oi, vi in zip(o, values[l][t][kv])]
                out.extend(o)
            x = [a + b for a, b in zip(x, matvec(w[p + "self_attn.o_proj.weight"], out))]
            xb = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
            g = matvec(w[p + "mlp.gate_proj.weight"], xb)
            u = matvec(w[p + "mlp.up_proj.weight"], xb)
            hmid = [gi / (1 + math.exp(-gi)) * ui for gi, ui in zip(g, u)]
            x = [a + b for a, b in zip(x, matvec(w[p + "mlp.down_proj.weight"], hmid))]
        x = rms_norm(x, w["model.norm.weight"], eps)
        result.append(matvec(head, x))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
