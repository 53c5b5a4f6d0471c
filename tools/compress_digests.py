#!/usr/bin/env python3
"""Digests of what `nanoscale compress` and `nanoscale decompress` write, one line per format.

Used to show that a refactoring changed no stored byte: run it before and after on the same model and diff the two
outputs (docs/architecture.md). The digest of a file is SHA-256 over its safetensors header and data, with the one
field that depends on the clock (the `seconds` parameter CALDERA records per tensor) blanked and the header's padding
spaces stripped, so two runs of the same code give the same line.

    python3 tools/compress_digests.py ../shared/data/models/stories260K/stories260K.bin > before.txt
    python3 tools/compress_digests.py MODEL --formats mxfp4,nvfp4 --cli "dotnet path/to/nanoscale.dll"
"""
import argparse
import hashlib
import os
import re
import shlex
import struct
import subprocess
import sys
import tempfile

# Every canonical name of the format table, then option variants that take other code paths.
DEFAULT_FORMATS = [
    "f32", "bf16", "f16",
    "mxfp8-e4m3", "mxfp8-e5m2", "mxfp6-e2m3", "mxfp6-e3m2", "mxfp5-e2m2", "mxfp5-e3m1", "mxfp4",
    "mxint8", "mxint7", "mxint6", "mxint5", "mxint4", "mxint3", "mxint2",
    "nvfp4", "nxfp3", "nxfp4", "nxfp5", "nxfp6", "nxfp7", "nxfp8", "nxfp4-m16",
    "lossless", "vp", "caldera:rank=4,iters=3",
    "mxfp4:scale=mse", "mxfp4:scale=ceil,round=away", "mxint4:entropy=rans", "nvfp4:round=away",
    "nxfp4:nm=1,am=e2m1|e1m2|e3m0,cr=auto", "nxfp4-m16:entropy=rans", "vp:mant=2,taper=1,floor=100",
    "caldera:rank=4,q=mxfp4:scale=mse;round=away,lr=int4,iters=2,had=1",
    "caldera:rank=2,q=nvfp4,lr=bf16,iters=2",
]

SECONDS = re.compile(rb'(\\"seconds\\":\\")[0-9.]+(\\")')


def digest(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = SECONDS.sub(rb"\g<1>0\g<2>", f.read(n).rstrip(b" "))
        h = hashlib.sha256(header)
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--formats", help="';'-separated spec strings (default: the table and some variants)")
    p.add_argument("--cli", default="dotnet src/Nanoscale.Cli/bin/Release/net10.0/nanoscale.dll",
                   help="command that runs nanoscale (default: the Release build of this checkout)")
    args = p.parse_args()
    formats = args.formats.split(";") if args.formats else DEFAULT_FORMATS
    cli = shlex.split(args.cli)
    with tempfile.TemporaryDirectory(prefix="nanoscale-digests-") as work:
        for spec in formats:
            out = os.path.join(work, "c.safetensors")
            back = os.path.join(work, "d.safetensors")
            run = subprocess.run(cli + ["compress", args.model, "--format", spec, "-o", out, "--no-error", "--json"],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                print(f"{spec}\terror: {run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}")
                continue
            run = subprocess.run(cli + ["decompress", out, "-o", back, "--dtype", "f32", "--json"], capture_output=True, text=True)
            decoded = digest(back) if run.returncode == 0 else "error"
            print(f"{spec}\t{digest(out)}\t{decoded}")
            sys.stdout.flush()
            for f in (out, back):
                if os.path.exists(f):
                    os.remove(f)


if __name__ == "__main__":
    main()
