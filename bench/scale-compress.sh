#!/bin/bash
# Compress time and peak RSS against checkpoint size (docs/scale-out.md): generated Llama-3.2-1B-shaped checkpoints
# (BF16, more layers for more bytes: 2, 8, 32 GB by default), each compressed with mxfp4, nxfp4 and lossless; outputs
# and models deleted as they go. Needs about 2.7× the largest size free on the work disk.
# Usage: bench/scale-compress.sh [WORKDIR] [SIZES_GB...]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/nanoscale-scale}; shift || true
SIZES=${*:-2 8 32}
N=src/Nanoscale.Cli/bin/Release/net10.0/nanoscale
[ -x "$N" ] || dotnet build src/Nanoscale.Cli -c Release -v q
mkdir -p "$WORK"
echo "| size | layers | tensors bytes | format | compress s | GB/s | peak RSS |"
echo "|---:|---:|---:|---|---:|---:|---:|"
for gb in $SIZES; do
  # Llama-3.2-1B: 525 MB of embeddings and 121.6 MB (60.8M BF16 weights) per layer.
  layers=$(( (gb * 1000 - 525) / 122 ))
  model="$WORK/model-${gb}GB"
  rm -rf "$model"
  "$N" sample "$model" --preset llama3.2-1b --layers "$layers" > /dev/null
  bytes=$(du -sb "$model" | cut -f1)
  for format in mxfp4 nxfp4 lossless; do
    out="$WORK/out-$format"
    rm -rf "$out"
    /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$N" compress "$model" --format "$format" -o "$out" --no-error > /dev/null 2> "$WORK/log.txt"
    read -r seconds rss_kb < "$WORK/time.txt"
    awk -v gb="$gb" -v l="$layers" -v b="$bytes" -v f="$format" -v s="$seconds" -v r="$rss_kb" \
      'BEGIN { printf "| %d GB | %d | %.2f GB | %s | %.1f | %.2f | %.2f GB |\n", gb, l, b/1e9, f, s, b/1e9/s, r/1048576 }'
    rm -rf "$out"
  done
  rm -rf "$model"
done
