#!/usr/bin/env python3
"""An independent reader of the two Hugging Face 4-bit layouts Nanoscale writes (`nanoscale export --layout ...`),
written from those projects' published dequantization code, in plain Python (no numpy or torch needed), for checking
Nanoscale's decode bit for bit.

    python3 tools/hf_layouts_reference.py FOLDER

Prints one line per quantized weight: its name and the SHA-256 of the decoded float32 values (little-endian,
row-major), and nothing else.

hf-mxfp4, as transformers' `integrations/mxfp4.py` `convert_moe_packed_tensors` dequantizes (GPT-OSS's layout):
  NAME_blocks U8 [rows, G, 16], NAME_scales U8 [rows, G]
  FP4_VALUES = [+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
  out[:, 0::2] = FP4_VALUES[blk & 0x0F]; out[:, 1::2] = FP4_VALUES[blk >> 4]; out = ldexp(out, scales - 127)

ct-nvfp4, as compressed-tensors' `NVFP4PackedCompressor.decompress_weight` (`unpack_fp4_from_uint8`, then `dequantize`
with a global scale) does it:
  P.weight_packed U8 [rows, cols/2], P.weight_scale F8_E4M3 [rows, cols/16], P.weight_global_scale F32 [1]
  values: low nibble first, then high; bit 3 the sign, bits 0-2 index [0, 0.5, 1, 1.5, 2, 3, 4, 6]
  scale = weight_scale.to(float32) / weight_global_scale        (float32 division)
  w = values * scale per group of 16                            (float32 product)

Python floats are doubles: every float32 step is rounded to float32 (struct), which gives float32's own result for a
single division or multiplication.
"""
import hashlib
import json
import math
import os
import struct
import sys

FP4_VALUES = [+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]
E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def e4m3fn(byte):
    """OCP float8 E4M3 (torch.float8_e4m3fn): bias 7, no infinities, S.1111.111 is NaN."""
    sign = -1.0 if byte & 0x80 else 1.0
    e, m = (byte >> 3) & 0xF, byte & 7
    if e == 15 and m == 7:
        return math.nan
    if e == 0:
        return sign * m * 2.0 ** -9
    return sign * (1 + m / 8) * 2.0 ** (e - 7)


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            f.seek(base + start)
            tensors[name] = (info["dtype"], info["shape"], f.read(end - start))
        return tensors


def read_folder(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    tensors = {}
    for name in files:
        tensors.update(read_safetensors(os.path.join(folder, name)))
    return tensors


def mxfp4(blocks, scales):
    _, shape, data = blocks
    rows, groups = shape[0], shape[1]
    exps = scales[2]
    out = []
    for r in range(rows):
        for g in range(groups):
            e = exps[r * groups + g] - 127
            block = data[(r * groups + g) * 16:(r * groups + g + 1) * 16]
            for byte in block:
                out.append(f32(math.ldexp(FP4_VALUES[byte & 0x0F], e)))
                out.append(f32(math.ldexp(FP4_VALUES[byte >> 4], e)))
    return out


def nvfp4(packed, scale, global_scale):
    _, shape, data = packed
    rows, half = shape
    cols = half * 2
    (g,) = struct.unpack("<f", global_scale[2])
    scales = scale[2]
    out = []
    for r in range(rows):
        for c in range(cols // 16):
            s = f32(f32(e4m3fn(scales[r * (cols // 16) + c])) / g)
            for byte in data[r * half + c * 8:r * half + c * 8 + 8]:
                for nibble in (byte & 0x0F, byte >> 4):
                    v = E2M1[nibble & 7] * (-1.0 if nibble & 8 else 1.0)
                    out.append(f32(v * s))
    return out


def main():
    tensors = read_folder(sys.argv[1])
    for name in sorted(tensors):
        if name.endswith("_blocks") and name[:-7] + "_scales" in tensors:
            values, weight = mxfp4(tensors[name], tensors[name[:-7] + "_scales"]), name[:-7]
        elif name.endswith(".weight_packed"):
            weight = name[:-len("_packed")]
            values = nvfp4(tensors[name], tensors[weight + "_scale"], tensors[weight + "_global_scale"])
        else:
            continue
        digest = hashlib.sha256(struct.pack("<%df" % len(values), *values)).hexdigest()
        print(weight, digest)


if __name__ == "__main__":
    main()
