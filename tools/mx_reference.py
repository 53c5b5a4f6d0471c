#!/usr/bin/env python3
"""An independent MX quantizer, written from microxcaling's published algorithm (mx/mx_ops.py, mx/elemwise_ops.py),
in plain Python, for checking Nanoscale's MX codes bit for bit, sign of zero included.

    python3 tools/mx_reference.py VALUES.f32 ELEMENT ROUND

VALUES.f32 is raw little-endian float32, a whole number of 32-element blocks; ELEMENT is e2m1, e2m3, e3m2, e4m3 or
e5m2; ROUND is even (ties to even) or nearest (ties away from zero). Prints one line per block: the E8M0 scale byte,
then the 32 element codes (sign bit | magnitude index), in hex.

The steps, per block of 32 (microxcaling's "max" shared exponent, saturate_normals=True, denormals allowed):
  shared = floor(log2(max |v|)) - emax(element), clipped to [-127, 127]    (a zero block: shared = -127)
  a = v / 2^shared                                      (float32; exact for these inputs: no float32 underflow)
  p = max(floor(log2 |a|), emin)                        (the element's private exponent; emin = 2 - 2^(ebits-1))
  q = sign(a) * round(|a| * 2^(mbits-2-p)) / 2^(mbits-2-p), clamped to ±max_norm
with sign(a) = 0 for a = ±0 and round per ROUND: so a negative value that rounds to zero gives -0.0, whose code is
the element's -0 code, and ±0.0 gives +0.
"""
import math
import struct
import sys

# ebits, mbits (sign and implicit bit included, as microxcaling counts them), emax, max_norm
FORMATS = {
    "e2m1": (2, 3, 2, 6.0),
    "e2m3": (2, 5, 2, 7.5),
    "e3m2": (3, 4, 4, 28.0),
    "e4m3": (4, 5, 8, 448.0),
    "e5m2": (5, 4, 15, 57344.0),
}


def round_half(x, mode):
    """Rounds x >= 0 to an integer: ties away from zero ('nearest') or to even ('even')."""
    r = math.floor(x + 0.5)
    if mode == "even" and x - math.floor(x) == 0.5 and r % 2 == 1:
        r -= 1
    return r


def quantize_element(a, ebits, mbits, max_norm, mode):
    if a == 0:
        return 0.0                                   # sign(±0) is 0: +0
    emin = 2 - 2 ** (ebits - 1)
    p = max(math.floor(math.log2(abs(a))), emin)
    step = 2.0 ** (p - (mbits - 2))
    q = math.copysign(round_half(abs(a) / step, mode) * step, a)   # -0.0 when a < 0 rounds to zero
    return max(-max_norm, min(max_norm, q))


def magnitudes(ebits, mbits, max_norm):
    """Every non-negative value of the element format, ascending: index = magnitude code."""
    m = mbits - 2                                    # stored mantissa bits
    bias = 2 ** (ebits - 1) - 1
    values = []
    for code in range(2 ** (ebits + m)):
        e, f = code >> m, code & ((1 << m) - 1)
        v = (f / 2 ** m) * 2.0 ** (1 - bias) if e == 0 else (1 + f / 2 ** m) * 2.0 ** (e - bias)
        if v <= max_norm:
            values.append(v)
    return values


def main():
    path, element, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    ebits, mbits, emax, max_norm = FORMATS[element]
    table = {v: i for i, v in enumerate(magnitudes(ebits, mbits, max_norm))}
    sign_bit = 1 << (ebits + mbits - 2)
    data = open(path, "rb").read()
    values = struct.unpack(f"<{len(data) // 4}f", data)
    out = []
    for start in range(0, len(values), 32):
        block = values[start:start + 32]
        amax = max(abs(v) for v in block)
        shared = -127 if amax == 0 else max(-127, min(127, math.floor(math.log2(amax)) - emax))
        codes = []
        for v in block:
            q = quantize_element(v / 2.0 ** shared, ebits, mbits, max_norm, mode)
            codes.append(table[abs(q)] | (sign_bit if math.copysign(1.0, q) < 0 else 0))
        out.append(" ".join(f"{c:02x}" for c in [shared + 127] + codes))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
