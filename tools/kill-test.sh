#!/bin/bash
# Interrupts `compress` and `decompress` of a multi-GB checkpoint at random moments with SIGKILL or SIGTERM and checks
# what docs/reliability.md promises (issue 17):
#   - no complete-looking output that is not complete: after each interruption the output is absent, empty or
#     byte-identical to an uninterrupted run's (the run finished before the signal);
#   - SIGTERM: exit code 143 and no temporary left (output folder and the system's temporary folder);
#   - SIGKILL: whatever the dead process left is removed by `nanoscale clean`, and nothing else is;
#   - the input model's bytes are unchanged at the end.
# Usage: tools/kill-test.sh [WORKDIR] [SIZE_GB] [TRIALS] [SEED]   (defaults: /tmp/nanoscale-kill 2 20 17)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/nanoscale-kill}; GB=${2:-2}; TRIALS=${3:-20}; SEED=${4:-17}
N=$PWD/src/Nanoscale.Cli/bin/Release/net10.0/nanoscale
[ -x "$N" ] || dotnet build src/Nanoscale.Cli -c Release -v q
rm -rf "$WORK" && mkdir -p "$WORK/tmp"
export TMPDIR="$WORK/tmp"   # the system temporary folder of every run, so its leftovers are seen too
FORMAT=nxfp4
layers=$(( (GB * 1000 - 525) / 122 ))
"$N" sample "$WORK/model" --preset llama3.2-1b --layers "$layers" > /dev/null
input_sum() { find "$WORK/model" -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1; }
tree_sum() { [ -d "$1" ] && (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum) | sha256sum | cut -d' ' -f1 || echo absent; }
temporaries() { { find "$@" \( -name '*.partial' -o -name '*.spill' -o -name 'nanoscale-work.ns*' -o -name 'nanoscale-demo.ns*' \) 2>/dev/null || true; } | wc -l; }
before=$(input_sum)
echo "input: $(du -sh "$WORK/model" | cut -f1) ($layers layers), format $FORMAT"

# Uninterrupted runs: the reference outputs and their durations.
t0=$(date +%s.%N); "$N" compress "$WORK/model" -f "$FORMAT" -o "$WORK/ref-c" --no-error > /dev/null 2>&1
t1=$(date +%s.%N); "$N" decompress "$WORK/ref-c" -o "$WORK/ref-d" > /dev/null 2>&1
t2=$(date +%s.%N)
dc=$(echo "$t1 - $t0" | bc); dd=$(echo "$t2 - $t1" | bc)
ref_c=$(tree_sum "$WORK/ref-c"); ref_d=$(tree_sum "$WORK/ref-d")
echo "uninterrupted: compress ${dc} s, decompress ${dd} s"
echo
echo "| trial | verb | signal | after s | exit | output | temporaries after exit | after clean |"
echo "|---:|---|---|---:|---:|---|---:|---:|"
RANDOM=$SEED
failures=0
for i in $(seq 1 "$TRIALS"); do
  if (( i % 2 )); then verb=compress; duration=$dc; else verb=decompress; duration=$dd; fi
  if (( (i / 2) % 2 )); then sig=KILL; else sig=TERM; fi
  # A moment uniformly inside the uninterrupted run (startup included), in milliseconds.
  ms=$(echo "$duration * 1000 * $RANDOM / 32768" | bc)
  out="$WORK/out/o$i"; mkdir -p "$WORK/out"
  if [ "$verb" = compress ]; then
    "$N" compress "$WORK/model" -f "$FORMAT" -o "$out" --no-error > /dev/null 2> "$WORK/err.txt" & pid=$!
    ref=$ref_c
  else
    "$N" decompress "$WORK/ref-c" -o "$out" > /dev/null 2> "$WORK/err.txt" & pid=$!
    ref=$ref_d
  fi
  sleep "$(echo "scale=3; $ms / 1000" | bc)"
  kill -s "$sig" "$pid" 2>/dev/null || true
  set +e; wait "$pid"; code=$?; set -e
  sum=$(tree_sum "$out")
  if [ "$sum" = absent ] || [ -z "$(find "$out" -type f ! -name '.*' 2>/dev/null)" ]; then state=none
  elif [ "$sum" = "$ref" ]; then state=complete
  else state=INCOMPLETE; failures=$((failures + 1)); fi
  left=$(temporaries "$WORK/out" "$TMPDIR")
  "$N" clean "$WORK/out" > /dev/null 2>&1 || true
  cleaned=$(temporaries "$WORK/out" "$TMPDIR")
  if [ "$sig" = TERM ] && [ "$state" != complete ] && { [ "$code" != 143 ] || [ "$left" != 0 ]; }; then failures=$((failures + 1)); state="$state (SIGTERM not handled)"; fi
  if [ "$cleaned" != 0 ]; then failures=$((failures + 1)); fi
  printf '| %d | %s | %s | %.2f | %d | %s | %d | %d |\n' "$i" "$verb" "$sig" "$(echo "scale=3; $ms / 1000" | bc)" "$code" "$state" "$left" "$cleaned"
  rm -rf "$out"
done
after=$(input_sum)
echo
if [ "$before" = "$after" ]; then echo "input unchanged (sha256 of every file)"; else echo "INPUT CHANGED"; failures=$((failures + 1)); fi
echo "$failures failures"
rm -rf "$WORK"
[ "$failures" = 0 ]
