#!/usr/bin/env python3
"""Independent cross-check of Nanoscale's runtime: llama2.c forward pass and tokenizer in pure Python (no numpy).

Computes the SPEC §13 negative log-likelihood of a llama2.c model on a text, one window at a time, written from
llama2.c run.c and sharing no code with the C# runtime. Pure Python is slow (~100-300 tokens/s for stories260K),
so by default it scores only the first window of the first document.

    python3 tools/llama2c_ref.py ../shared/data/models/stories260K/stories260K.bin \
        ../shared/data/models/stories260K/tok512.bin ../shared/data/text/tinystories-sample.txt [--ctx 512] [--all]
"""
import argparse
import math
import operator
import struct
import sys


def read_model(path):
    data = open(path, "rb").read()
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack_from("<7i", data, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    floats = struct.unpack_from("<%df" % ((len(data) - 28) // 4), data, 28)
    pos = 0
    head_size = dim // heads
    kv_dim = kv_heads * head_size

    def take(n):
        nonlocal pos
        out = floats[pos:pos + n]
        pos += n
        return out

    def matrices(rows, cols):
        out = []
        for _ in range(layers):
            flat = take(rows * cols)
            out.append([list(flat[r * cols:(r + 1) * cols]) for r in range(rows)])
        return out

    w = {}
    w["emb"] = [list(take(dim)) for _ in range(vocab)]
    w["att_norm"] = [list(take(dim)) for _ in range(layers)]
    w["wq"] = matrices(dim, dim)
    w["wk"] = matrices(kv_dim, dim)
    w["wv"] = matrices(kv_dim, dim)
    w["wo"] = matrices(dim, dim)
    w["ffn_norm"] = [list(take(dim)) for _ in range(layers)]
    w["w1"] = matrices(hidden, dim)
    w["w2"] = matrices(dim, hidden)
    w["w3"] = matrices(hidden, dim)
    w["final_norm"] = list(take(dim))
    take(seq_len * head_size // 2)  # legacy freq_cis_real
    take(seq_len * head_size // 2)  # legacy freq_cis_imag
    w["head"] = w["emb"] if shared else [list(take(dim)) for _ in range(vocab)]
    cfg = dict(dim=dim, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, vocab=vocab, seq_len=seq_len,
               head_size=head_size, kv_dim=kv_dim)
    return cfg, w


def read_tokenizer(path):
    data = open(path, "rb").read()
    (max_len,) = struct.unpack_from("<i", data, 0)
    off, pieces, scores = 4, [], []
    while off < len(data):
        score, length = struct.unpack_from("<fi", data, off)
        off += 8
        pieces.append(data[off:off + length])
        scores.append(score)
        off += length
    return pieces, scores


def encode(pieces, scores, text):
    """llama2.c encode: BOS, dummy-prefix " ", code points or byte fallback (id = byte + 3), best-score merges."""
    ids = {}
    for i, p in enumerate(pieces):
        ids.setdefault(p, i)
    toks, mergeable = [1], [False]
    if text:
        toks.append(ids[b" "])
        mergeable.append(True)
    for ch in text:
        b = ch.encode("utf-8")
        if b in ids:
            toks.append(ids[b])
            mergeable.append(True)
        else:
            toks.extend(x + 3 for x in b)
            mergeable.extend(False for _ in b)
    while True:
        best, best_i, best_id = -1e10, -1, -1
        for i in range(len(toks) - 1):
            if not (mergeable[i] and mergeable[i + 1]):
                continue
            j = ids.get(pieces[toks[i]] + pieces[toks[i + 1]])
            if j is not None and scores[j] > best:
                best, best_i, best_id = scores[j], i, j
        if best_i < 0:
            return toks
        toks[best_i:best_i + 2] = [best_id]
        mergeable[best_i:best_i + 2] = [True]


def matvec(m, x):
    return [sum(map(operator.mul, row, x)) for row in m]


def rmsnorm(x, w):
    ss = 1.0 / math.sqrt(sum(v * v for v in x) / len(x) + 1e-5)
    return [wi * ss * xi for wi, xi in zip(w, x)]


def forward(cfg, w, token, pos, kcache, vcache):
    hs, kv_dim = cfg["head_size"], cfg["kv_dim"]
    kv_mul = cfg["heads"] // cfg["kv_heads"]
    x = list(w["emb"][token])
    for l in range(cfg["layers"]):
        xb = rmsnorm(x, w["att_norm"][l])
        q, k, v = matvec(w["wq"][l], xb), matvec(w["wk"][l], xb), matvec(w["wv"][l], xb)
        for i in range(0, cfg["dim"], 2):
            freq = 1.0 / 10000.0 ** ((i % hs) / hs)
            c, s = math.cos(pos * freq), math.sin(pos * freq)
            for vec in ((q, k) if i < kv_dim else (q,)):
                v0, v1 = vec[i], vec[i + 1]
                vec[i], vec[i + 1] = v0 * c - v1 * s, v0 * s + v1 * c
        kcache[l].append(k)
        vcache[l].append(v)
        out = []
        for h in range(cfg["heads"]):
            o = (h // kv_mul) * hs
            qh = q[h * hs:(h + 1) * hs]
            att = [sum(map(operator.mul, qh, kt[o:o + hs])) / math.sqrt(hs) for kt in kcache[l]]
            m = max(att)
            e = [math.exp(a - m) for a in att]
            z = sum(e)
            out.extend(sum(e[t] * vcache[l][t][o + i] for t in range(len(e))) / z for i in range(hs))
        x = [a + b for a, b in zip(x, matvec(w["wo"][l], out))]
        xb = rmsnorm(x, w["ffn_norm"][l])
        h1, h3 = matvec(w["w1"][l], xb), matvec(w["w3"][l], xb)
        hb = [a / (1.0 + math.exp(-a)) * b for a, b in zip(h1, h3)]
        x = [a + b for a, b in zip(x, matvec(w["w2"][l], hb))]
    return matvec(w["head"], rmsnorm(x, w["final_norm"]))


def window_nll(cfg, w, tokens):
    kc, vc = [[] for _ in range(cfg["layers"])], [[] for _ in range(cfg["layers"])]
    total = 0.0
    for pos in range(len(tokens) - 1):
        logits = forward(cfg, w, tokens[pos], pos, kc, vc)
        m = max(logits)
        total += math.log(sum(math.exp(v - m) for v in logits)) - (logits[tokens[pos + 1]] - m)
    return total, len(tokens) - 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("tokenizer")
    ap.add_argument("text")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--all", action="store_true", help="score every window of every document (slow)")
    a = ap.parse_args()
    cfg, w = read_model(a.model)
    pieces, scores = read_tokenizer(a.tokenizer)
    text = open(a.text, encoding="utf-8").read()
    docs = [d.strip() for d in text.split("<|endoftext|>")] if "<|endoftext|>" in text else [text.strip()]
    docs = [d for d in docs if d]
    total, count = 0.0, 0
    for d, doc in enumerate(docs):
        toks = encode(pieces, scores, doc)
        start = 0
        while len(toks) - start >= 2:
            end = min(len(toks), start + a.ctx)
            nll, n = window_nll(cfg, w, toks[start:end])
            total, count = total + nll, count + n
            print("document %d window [%d, %d): %d predicted, mean NLL %.10f" % (d, start, end, n, nll / n), file=sys.stderr)
            if not a.all or end == len(toks):
                break
            start = end - 1
        if not a.all:
            break
    print("predicted %d mean_nll %.12f perplexity %.12f" % (count, total / count, math.exp(total / count)))


if __name__ == "__main__":
    main()
