#!/usr/bin/env python3
"""Small valid inputs for each fuzz target (AFL mutates best from files of a few hundred bytes).

    python3 fuzz/make_seeds.py OUT_DIR NANOSCALE_CLI...
Writes OUT_DIR/{safetensors,gguf,llama2c,tokenizer-bin,tokenizer-json,spec,rans,sp-model}/; compressed containers are
made by the CLI. The model-folder targets (index, config) are seeded by the harness itself (`Nanoscale.Fuzz T seed F`).
"""
import json, os, struct, subprocess, sys

out, cli = sys.argv[1], sys.argv[2:]
def folder(name):
    path = os.path.join(out, name)
    os.makedirs(path, exist_ok=True)
    return path

def safetensors(path, tensors, metadata=None):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata: header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)

st = folder("safetensors")
floats = struct.pack("<64f", *[((i * 37) % 17 - 8) / 3.0 for i in range(64)])
safetensors(os.path.join(st, "plain.safetensors"), {"w": ("F32", [2, 32], floats), "b": ("BF16", [4], b"\x80\x3f" * 4)})
for spec in ["mxfp4", "nvfp4", "q4_0", "lossless", "nxfp4:entropy=rans"]:
    name = spec.replace(":", "-").replace("=", "-")
    subprocess.run(cli + ["compress", os.path.join(st, "plain.safetensors"), "-f", spec, "--include", "w",
                          "-o", os.path.join(st, name + ".safetensors"), "--no-error"], check=True, capture_output=True)

gg = folder("gguf")
def gguf_string(s): b = s.encode(); return struct.pack("<Q", len(b)) + b
meta = [("general.architecture", 8, gguf_string("llama"))]
body = struct.pack("<IIQQ", 0x46554747, 3, 1, len(meta))
for key, kind, value in meta: body += gguf_string(key) + struct.pack("<I", kind) + value
body += gguf_string("token_embd.weight") + struct.pack("<IQQIQ", 2, 32, 2, 0, 0)
body += b"\0" * (-len(body) % 32) + floats
open(os.path.join(gg, "tiny.gguf"), "wb").write(body)

l2 = folder("llama2c")
dim, hidden, layers, heads, kv, vocab, seq = 8, 16, 1, 2, 2, 4, 4
n = vocab * dim + layers * (dim + 4 * dim * dim + dim + 3 * dim * hidden) + dim
open(os.path.join(l2, "tiny.bin"), "wb").write(struct.pack("<7i", dim, hidden, layers, heads, kv, -vocab, seq) + struct.pack(f"<{n}f", *([0.01] * n)))

tb = folder("tokenizer-bin")
pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [b"<0x%02X>" % i for i in range(256)] + [b" t", b"he", b" the"]
open(os.path.join(tb, "tok.bin"), "wb").write(struct.pack("<i", 16) + b"".join(struct.pack("<fi", -i, len(p)) + p for i, p in enumerate(pieces)))

sp = folder("spec")
for i, spec in enumerate(["mxfp4:scale=mse,round=away", "nxfp4:nm=2,am=e2m1|e1m2,cr=5", "caldera:rank=4,q=mxfp4:scale=mse;round=away,lr=int4",
                          "vp:mant=2,taper=1,floor=100", "q4_0", "nvfp4:zero=positive,entropy=rans"]):
    open(os.path.join(sp, f"{i}.txt"), "w").write(spec)

ra = folder("rans")
subprocess.run(cli + ["compress", os.path.join(st, "plain.safetensors"), "-f", "lossless", "--include", "w,b",
                      "-o", os.path.join(out, "lossless-all.safetensors"), "--no-error"], check=True, capture_output=True)
# The coded stream of the lossless container's first tensor: the bytes of its part, cut out by the header's offsets.
raw = open(os.path.join(out, "lossless-all.safetensors"), "rb").read()
n = struct.unpack_from("<Q", raw)[0]
header = json.loads(raw[8:8 + n])
for name, entry in header.items():
    if name != "__metadata__" and name.endswith(".ans") or (name != "__metadata__" and entry.get("dtype") == "U8"):
        a, b = entry["data_offsets"]
        open(os.path.join(ra, name.replace("/", "_") + ".bin"), "wb").write(raw[8 + n + a:8 + n + b])
os.remove(os.path.join(out, "lossless-all.safetensors"))

tj = folder("tokenizer-json")
vocab = {c: i for i, c in enumerate(["a", "b", "c", "Ġ", "ab", "Ġa"])}
json.dump({"version": "1.0", "added_tokens": [], "normalizer": None,
           "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
           "post_processor": None, "decoder": {"type": "ByteLevel"},
           "model": {"type": "BPE", "vocab": vocab, "merges": ["a b", "Ġ a"]}}, open(os.path.join(tj, "tokenizer.json"), "w"))

# A SentencePiece ModelProto (BPE with byte fallback): pieces <unk>, <s>, </s>, the 256 byte pieces and a few merges.
def varint(v):
    v &= (1 << 64) - 1
    out = b""
    while True:
        b = v & 0x7F; v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v: return out
def field(number, kind, payload): return varint(number << 3 | kind) + payload
def message(number, body): return field(number, 2, varint(len(body)) + body)
def piece(text, score, kind):
    b = text.encode()
    return message(1, field(1, 2, varint(len(b)) + b) + field(2, 5, struct.pack("<f", score)) + field(3, 0, varint(kind)))
pieces = [("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)] + [("<0x%02X>" % i, 0.0, 6) for i in range(256)]
pieces += [(p, -i - 1.0, 1) for i, p in enumerate(["\u2581t", "he", "\u2581the", "\u2581a", "on", "ce"])]
model = b"".join(piece(*p) for p in pieces)
model += message(2, field(3, 0, varint(2)) + field(4, 0, varint(len(pieces))) + field(35, 0, varint(1))
                 + field(40, 0, varint(0)) + field(41, 0, varint(1)) + field(42, 0, varint(2)) + field(43, 0, varint(-1)))
name = b"identity"
model += message(3, field(1, 2, varint(len(name)) + name) + field(3, 0, varint(1)) + field(4, 0, varint(0)) + field(5, 0, varint(1)))
open(os.path.join(folder("sp-model"), "tokenizer.model"), "wb").write(model)
