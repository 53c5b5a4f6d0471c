#!/usr/bin/env bash
# NxFP ablation (docs/nxfp.md): for 3-, 4-, 5- and 6-bit elements, MX alone, each NxFP technique alone, each pair and
# all three, plus larger-metadata variants; bpw + weight error on gpt2-attn and stories260K, perplexity of stories260K
# on tinystories-sample.txt. Writes docs/nxfp-ablation/*.json and prints the markdown tables.
# Usage: tools/nxfp-ablation.sh [widths...]   (default: 4 5 6 3). Needs a Release build.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
[ -d "$DATA" ] || DATA=/work/shared/data
CLI=(dotnet src/Nanoscale.Cli/bin/Release/net10.0/nanoscale.dll)
[ -f src/Nanoscale.Cli/bin/Release/net10.0/nanoscale.dll ] || dotnet build Nanoscale.slnx -c Release >&2
OUT=docs/nxfp-ablation
mkdir -p "$OUT"

# formats_for WIDTH: spec strings separated by ';'. Each spec overrides every option so the preset defaults do not leak in.
formats_for() {
  local w=$1 base am am3 mx extra=""
  case $w in
    3) base=e2m0; am="e2m0|e1m1"; am3="e2m0|e1m1"; mx="mxint3" ;;
    4) base=e2m1; am="e2m1|e1m2"; am3="e2m1|e3m0"; mx="mxfp4;mxfp4:scale=mse;mxint4;nvfp4"; extra="nxfp4-m16" ;;
    5) base=e2m2; am="e2m2|e1m3"; am3="e2m2|e3m1"; mx="mxfp5-e2m2;mxfp5-e3m1;mxfp5-e2m2:scale=mse;mxfp6" ;;
    6) base=e2m3; am="e2m3|e1m4"; am3="e2m3|e3m2"; mx="mxfp6-e2m3;mxfp6-e3m2;mxfp6-e2m3:scale=mse" ;;
  esac
  local n="nxfp$w:" o="se=auto,bias=auto"
  local list=(
    "$mx"
    # nm=0, one format, no recycling: E8M0 scale chosen between its two neighbours (MX with a 2-way MSE rule)
    "${n}nm=0,am=$base,cr=off,$o"
    # NanoMantissa alone (8-bit budget: the exponent shrinks as the mantissa grows)
    "${n}nm=1,am=$base,cr=off,$o" "${n}nm=2,am=$base,cr=off,$o" "${n}nm=3,am=$base,cr=off,$o" "${n}nm=4,am=$base,cr=off,$o"
    # Adaptive Microexponent alone (1 selector bit, UE7M0), and every same-width format as a fixed choice
    "${n}nm=0,am=$am,cr=off,$o"
    # Code Recycling alone: fixed gap / ext (no selector, E8M0) and auto (gap|ext, 1 bit, UE7M0)
    "${n}nm=0,am=$base,cr=gap,$o" "${n}nm=0,am=$base,cr=ext,$o" "${n}nm=0,am=$base,cr=auto,$o"
    # pairs
    "${n}nm=2,am=$am,cr=off,$o" "${n}nm=1,am=$am,cr=off,$o"
    "${n}nm=3,am=$base,cr=gap,$o" "${n}nm=2,am=$base,cr=auto,$o"
    "${n}nm=0,am=$am,cr=gap,$o" "${n}nm=0,am=$am,cr=auto,$o"
    # all three
    "${n}nm=2,am=$am,cr=gap,$o" "${n}nm=1,am=$am,cr=auto,$o"
    # the other same-width partner for AM (E3My, more range)
    "${n}nm=2,am=$am3,cr=gap,$o"
    # 4 scale exponent bits (range 2^-7..2^9 only): better here, but clamps small-magnitude models
    "${n}nm=3,am=$am,cr=gap,$o"
    # larger metadata (16-bit word: 0.5 bits/weight): E8 scale with nm=4, 1 AM bit, 1 CR bit
    "${n}nm=4,se=8,bias=auto,am=$am,cr=auto"
    # the presets
    "nxfp$w" $extra
  )
  (IFS=';'; echo "${list[*]}")
}

for w in "${@:-4 5 6 3}"; do
  for w1 in $w; do
    f=$(formats_for "$w1")
    echo "== width $w1: gpt2-attn" >&2
    "${CLI[@]}" sweep "$DATA/models/gpt2-attn/gpt2-attn.bf16.safetensors" --formats "$f" --chart "$OUT/gpt2-w$w1.png" --json > "$OUT/gpt2-w$w1.json"
    echo "== width $w1: stories260K + perplexity" >&2
    "${CLI[@]}" sweep "$DATA/models/stories260K/stories260K.bin" --formats "$f" --text "$DATA/text/tinystories-sample.txt" \
      --chart "$OUT/stories-w$w1.png" --json > "$OUT/stories-w$w1.json"
  done
done
python3 tools/nxfp_ablation_table.py "$OUT" | tee "$OUT/tables.md"
