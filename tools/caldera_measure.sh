#!/usr/bin/env bash
# Reproduces every number in docs/caldera.md (about 18 minutes on the 2-core VM).
# Writes docs/data/caldera-*.json and docs/img/caldera-*.png, then prints the markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
STORIES=$DATA/models/stories260K/stories260K.bin
GPT2=$DATA/models/gpt2-attn/gpt2-attn.bf16.safetensors
CALIB=$DATA/text/wikitext2-test.raw          # calibration text: WikiText-2, not the evaluation text
TEXT=$DATA/text/tinystories-sample.txt
THREADS=${THREADS:-2}
dotnet build src/Nanoscale.Cli -c Release -v q >/dev/null
NS="dotnet src/Nanoscale.Cli/bin/Release/net10.0/nanoscale.dll"

# stories260K: round-to-nearest, LDLQ alone (rank 0) and CALDERA, perplexity on TinyStories, calibrated on WikiText-2.
S="mxint2,mxint3,mxint4,mxfp4"
S+=",caldera:rank=0,q=mxint2,caldera:rank=0,q=mxint3,caldera:rank=0,q=mxint4,caldera:rank=0,q=mxfp4"
S+=",caldera:rank=4,q=mxint2,lr=mxint4,caldera:rank=8,q=mxint2,lr=mxint4,caldera:rank=16,q=mxint2,lr=mxint4"
S+=",caldera:rank=4,q=mxint3,lr=mxint4,caldera:rank=8,q=mxint3,lr=mxint4,caldera:rank=16,q=mxint3,lr=mxint4"
S+=",caldera:rank=4,q=mxfp4,lr=mxint4,caldera:rank=8,q=mxfp4,lr=mxint4"
S+=",caldera:rank=8,q=mxint2,lr=mxint8"
S+=",caldera:rank=0,q=int2,caldera:rank=0,q=int3,caldera:rank=4,q=int2,lr=mxint4,caldera:rank=8,q=int2,lr=mxint4,caldera:rank=4,q=int3,lr=mxint4"
$NS sweep "$STORIES" --formats "$S" --text "$TEXT" --calib "$CALIB" --calib-tokens 4096 --threads "$THREADS" \
  --chart docs/img/caldera-stories260K.png --json > docs/data/caldera-stories260K.json
# The same decomposition without calibration (H = I), to see what the Hessian buys.
# (With H = I, rank 0 is round-to-nearest: for int2/int3 the per-row-scale baseline.)
$NS sweep "$STORIES" --formats "caldera:rank=0,q=int2,caldera:rank=0,q=int3,caldera:rank=8,q=int2,lr=mxint4,caldera:rank=0,q=mxint3,caldera:rank=8,q=mxint3,lr=mxint4" \
  --text "$TEXT" --threads "$THREADS" --chart /tmp/caldera-identity.png --json > docs/data/caldera-stories260K-identity.json
# With the input-side incoherence transform (had=1).
$NS sweep "$STORIES" --formats "caldera:rank=0,q=mxint2,had=1,caldera:rank=0,q=mxint3,had=1,caldera:rank=8,q=mxint3,lr=mxint4,had=1,caldera:rank=8,q=int2,lr=mxint4,had=1,caldera:rank=0,q=mxfp4,had=1" \
  --text "$TEXT" --calib "$CALIB" --calib-tokens 4096 --threads "$THREADS" --chart /tmp/caldera-had.png --json > docs/data/caldera-stories260K-had.json
# Per-layer time of one configuration (20 outer iterations).
$NS compress "$STORIES" --format caldera:rank=8,q=mxint3,lr=mxint4 --calib "$CALIB" --threads "$THREADS" \
  -o /tmp/caldera-stories.safetensors --json > docs/data/caldera-stories260K-compress.json

# gpt2-attn: no runnable model, so H = I; weight error only. 5 outer iterations (20 take ~4x as long for <1% error).
G="mxint2,mxint3,mxint4,mxfp4"
G+=",caldera:rank=16,q=mxint2,lr=mxint4,iters=5,caldera:rank=64,q=mxint2,lr=mxint4,iters=5"
G+=",caldera:rank=16,q=mxint3,lr=mxint4,iters=5,caldera:rank=64,q=mxint3,lr=mxint4,iters=5"
G+=",caldera:rank=16,q=mxfp4,lr=mxint4,iters=5"
$NS sweep "$GPT2" --formats "$G" --threads "$THREADS" --chart docs/img/caldera-gpt2-attn.png --json > docs/data/caldera-gpt2-attn.json
$NS sweep "$GPT2" --formats "caldera:rank=0,q=mxint2,had=1,caldera:rank=16,q=mxint3,lr=mxint4,iters=5,had=1" --threads "$THREADS" \
  --chart /tmp/caldera-gpt2-had.png --json > docs/data/caldera-gpt2-attn-had.json
$NS compress "$GPT2" --format caldera:rank=64,q=mxint2,lr=mxint4,iters=5 --threads "$THREADS" \
  -o /tmp/caldera-gpt2.safetensors --json > docs/data/caldera-gpt2-attn-compress.json
rm -f /tmp/caldera-stories.safetensors /tmp/caldera-gpt2.safetensors

python3 tools/caldera_tables.py
