#!/usr/bin/env bash
# Peak memory and speed of eval/generate on a generated 1B-parameter bf16 model (issue 12's benchmark).
# Writes a Llama-3.2-1B-shaped model (16 layers, 1.24B parameters, real Llama-3 tokenizer), compresses it to mxfp4
# and nxfp4 folders, then for each of bf16, mxfp4, nxfp4 measures with /usr/bin/time:
#   eval  --max-tokens N : peak RSS, prompt (scoring) tokens/s
#   generate -n G        : peak RSS, prompt tokens/s, generated tokens/s
# and prints a Markdown table (results: docs/models.md).
#
#   bash bench/model-memory.sh [WORKDIR] [LAYERS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/nanoscale-model-memory.XXXXXX)}
layers=${2:-16}
shared=../shared/data
cli="dotnet src/Nanoscale.Cli/bin/Release/net10.0/nanoscale.dll"
dotnet build src/Nanoscale.Cli -c Release -v q >/dev/null
mkdir -p "$work"
model=$work/llama3.2-1b
[ -d "$model" ] || $cli sample "$model" --preset llama3.2-1b --layers "$layers" --tokenizer $shared/tokenizers/llama3 >&2
for f in mxfp4 nxfp4; do
  [ -d "$work/$f" ] || $cli compress "$model" -f $f -o "$work/$f" --no-error >&2
done
text=$shared/text/tinystories-sample.txt
prompt="Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day,"

size() { du -sb --apparent-size "$1" | cut -f1; }
rss() { grep "Maximum resident" "$1" | awk '{printf "%d", $6 * 1024}'; }

echo "| weights | folder | eval peak RSS | RSS / folder | scoring tokens/s | generate peak RSS | prompt tokens/s | generated tokens/s |"
echo "|---|---|---|---|---|---|---|---|"
for f in bf16 mxfp4 nxfp4; do
  dir=$work/$f; [ $f = bf16 ] && dir=$model
  bytes=$(size "$dir")
  /usr/bin/time -v $cli eval "$dir" --text $text --max-tokens 256 --json > "$work/eval-$f.json" 2> "$work/eval-$f.time"
  /usr/bin/time -v $cli generate "$dir" --prompt "$prompt" -n 32 --json > "$work/gen-$f.json" 2> "$work/gen-$f.time"
  python3 - "$f" "$bytes" "$(rss "$work/eval-$f.time")" "$(rss "$work/gen-$f.time")" "$work/eval-$f.json" "$work/gen-$f.json" <<'PY'
import json, sys
f, size, eval_rss, gen_rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
e, g = json.load(open(sys.argv[5])), json.load(open(sys.argv[6]))
gb = lambda b: f"{b / 1e9:.2f} GB"
print(f"| {f} | {gb(size)} | {gb(eval_rss)} | {eval_rss / size:.2f}× | {e['tokens_per_second']:.1f} | {gb(gen_rss)} | "
      f"{g['prompt_tokens_per_second']:.1f} | {g['generated_tokens_per_second']:.2f} |")
PY
done
echo "(work folder: $work)" >&2
