#!/usr/bin/env bash
# Generation speed of Nanoscale and llama.cpp on the same GGUF files (issue 14's side-by-side).
# Writes a Llama-3.2-1B-shaped model (LAYERS layers, real Llama-3 tokenizer, random weights), exports it with
# `nanoscale export` as f16, q8_0, q4_0 and mxfp4 GGUF files, then times on each file, with the same protocol
# (the same synthetic prompt ids as one batch, then greedy steps; best of two runs after a warm-up; load not timed):
#   nanoscale bench FILE.gguf --generate --formats original      (our runtime on the file's own blocks)
#   Nanoscale.Benchmarks llamacpp-generate FILE.gguf              (llama.cpp's AVX2 CPU build via LLamaSharp)
# and prints a Markdown table (results: docs/runtime.md); then Nanoscale's own formats (FORMATS, default
# mxfp4,nxfp4,nvfp4,mxfp8,mxint8,bf16) on the same weights, embedding and head included, against llama.cpp's Q4_0,
# ROUNDS times (default 3) with llama.cpp timed right before ours each round: medians and the ratio's range.
#
#   [FORMATS=...] [ROUNDS=N] bash bench/llamacpp-compare.sh [WORKDIR] [LAYERS] [THREADS] [PROMPT] [TOKENS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/nanoscale-llamacpp.XXXXXX)}
layers=${2:-4}
threads=${3:-2}
prompt=${4:-64}
tokens=${5:-32}
shared=../shared/data
cli="dotnet src/Nanoscale.Cli/bin/Release/net10.0/nanoscale.dll"
bench="dotnet bench/Nanoscale.Benchmarks/bin/Release/net10.0/Nanoscale.Benchmarks.dll"
dotnet build src/Nanoscale.Cli -c Release -v q >/dev/null
dotnet build bench/Nanoscale.Benchmarks -c Release -v q >/dev/null
mkdir -p "$work"
model=$work/model
[ -d "$model" ] || $cli sample "$model" --preset llama3.2-1b --layers "$layers" --tokenizer $shared/tokenizers/llama3 >&2

echo "| type | file | Nanoscale prompt tokens/s | llama.cpp prompt tokens/s | Nanoscale generated tokens/s | llama.cpp generated tokens/s | ratio |"
echo "|---|---|---|---|---|---|---|"
for type in f16 q8_0 q4_0 mxfp4; do
  file=$work/model-$type.gguf
  [ -f "$file" ] || $cli export "$model" --type $type -o "$file" >&2
  ours=$($cli bench "$file" --generate --formats original --threads "$threads" --prompt-tokens "$prompt" --tokens "$tokens" --json)
  theirs=$($bench llamacpp-generate "$file" --threads "$threads" --prompt-tokens "$prompt" --tokens "$tokens")
  python3 - "$type" "$file" "$ours" "$theirs" <<'PY'
import json, os, sys
t, f, ours, theirs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
row = ours["results"][0]
g, lg = row["generated_tokens_per_second"], theirs["generated_tokens_per_second"]
print(f"| {t} | {os.path.getsize(f) / 2**20:.0f} MiB | {row['prompt_tokens_per_second']:.1f} | {theirs['prompt_tokens_per_second']:.1f} "
      f"| {g:.1f} | {lg:.1f} | {g / lg:.2f} |")
PY
done

# Nanoscale's own formats on the same weights (embedding and head compressed too, as the GGUF files have them),
# against llama.cpp's Q4_0 generation. The VM's speed drifts by tens of percent within minutes, so each of ROUNDS
# rounds (default 3) times llama.cpp's Q4_0 right before our formats, and the table gives each format's median over
# the rounds with the range of its per-round ratio.
rounds=${ROUNDS:-3}
echo
echo "| Nanoscale format | bpw | prompt tokens/s | generated tokens/s | vs llama.cpp Q4_0 generation (median, range over $rounds rounds) |"
echo "|---|---|---|---|---|"
for r in $(seq "$rounds"); do
  $bench llamacpp-generate "$work/model-q4_0.gguf" --threads "$threads" --prompt-tokens "$prompt" --tokens "$tokens" > "$work/round$r-llamacpp.json"
  $cli bench "$model" --generate --formats "${FORMATS:-mxfp4,nxfp4,nvfp4,mxfp8,mxint8,bf16}" --include 'embed|lm_head' \
    --threads "$threads" --prompt-tokens "$prompt" --tokens "$tokens" --json > "$work/round$r-ours.json"
done
python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
theirs = [json.load(open(f"{work}/round{r}-llamacpp.json")) for r in range(1, rounds + 1)]
ours = [json.load(open(f"{work}/round{r}-ours.json")) for r in range(1, rounds + 1)]
for i, row in enumerate(ours[0]["results"]):
    rows = [o["results"][i] for o in ours]
    gen = [x["generated_tokens_per_second"] for x in rows]
    ratio = [g / t["generated_tokens_per_second"] for g, t in zip(gen, theirs)]
    print(f"| {row['format']} | {row['bits_per_weight']:.2f} | {statistics.median(x['prompt_tokens_per_second'] for x in rows):.1f} "
          f"| {statistics.median(gen):.1f} | {statistics.median(ratio):.2f} ({min(ratio):.2f}–{max(ratio):.2f}) |")
q4 = [t["generated_tokens_per_second"] for t in theirs]
print(f"\nllama.cpp Q4_0 per round: {', '.join(f'{g:.1f}' for g in q4)} generated tokens/s")
PY
