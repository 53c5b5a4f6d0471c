#!/usr/bin/env bash
# Fuzzes Nanoscale's readers with AFL++ through SharpFuzz (issue 17). Needs afl++ (apt-get install afl++) and the
# sharpfuzz tool (dotnet tool install --global SharpFuzz.CommandLine). For each target: small valid seeds
# (fuzz/make_seeds.py), the instrumented library, afl-fuzz for SECONDS; then prints the crashes and hangs found and
# replays each crash in-process to show its exception. Results: docs/reliability.md.
#
#   bash fuzz/run.sh [WORKDIR] [SECONDS] [TARGETS] [EXECS]
# Each target runs until SECONDS have passed or, when EXECS is given, until about EXECS executions (whichever first).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/nanoscale-fuzz}
seconds=${2:-120}
targets=${3:-"safetensors gguf llama2c tokenizer-bin tokenizer-json sp-model index config spec rans"}
execs=${4:-}
export PATH="$PATH:$HOME/.dotnet/tools"
command -v afl-fuzz >/dev/null || { echo "afl-fuzz not found: apt-get install afl++" >&2; exit 1; }
command -v sharpfuzz >/dev/null || { echo "sharpfuzz not found: dotnet tool install --global SharpFuzz.CommandLine" >&2; exit 1; }
dotnet build src/Nanoscale.Cli -c Release -v q >/dev/null
# Two builds: $work/bin is instrumented (it runs only under afl-fuzz), $work/plain makes seeds and replays crashes.
rm -rf "$work/bin" "$work/plain" && dotnet build fuzz/Nanoscale.Fuzz -c Release -o "$work/bin" -v q >/dev/null
cp -r "$work/bin" "$work/plain"
sharpfuzz "$work/bin/Nanoscale.Core.dll" >/dev/null
# The SentencePiece reader is Microsoft.ML.Tokenizers': instrumented too, so the sp-model target is guided inside it.
sharpfuzz "$work/bin/Microsoft.ML.Tokenizers.dll" >/dev/null
[ -d "$work/seeds" ] || python3 fuzz/make_seeds.py "$work/seeds" dotnet src/Nanoscale.Cli/bin/Release/net10.0/nanoscale.dll
for t in index config; do
  [ -d "$work/seeds/$t" ] || { mkdir -p "$work/seeds/$t" && dotnet "$work/plain/Nanoscale.Fuzz.dll" "$t" seed "$work/seeds/$t/input.json"; }
done
# dotnet itself is not instrumented (SharpFuzz instruments the library and reports coverage through the runtime).
export AFL_SKIP_BIN_CHECK=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
echo "| target | seconds | execs | paths | crashes | hangs |"
echo "|---|---:|---:|---:|---:|---:|"
for t in $targets; do
  out="$work/out/$t"; rm -rf "$out"; mkdir -p "$work/out"
  timeout $((seconds + 60)) afl-fuzz -V "$seconds" ${execs:+-E "$execs"} -i "$work/seeds/$t" -o "$out" -t 10000 -m none -- dotnet "$work/bin/Nanoscale.Fuzz.dll" "$t" >"$work/$t.log" 2>&1 || true
  stats="$out/default/fuzzer_stats"
  get() { grep -E "^$1 " "$stats" | awk '{print $3}'; }
  crashes=$(find "$out/default/crashes" -type f -name 'id*' 2>/dev/null | wc -l)
  hangs=$(find "$out/default/hangs" -type f -name 'id*' 2>/dev/null | wc -l)
  echo "| $t | $(get run_time) | $(get execs_done) | $(get corpus_count) | $crashes | $hangs |"
  if [ "$crashes" -gt 0 ]; then
    dotnet "$work/plain/Nanoscale.Fuzz.dll" "$t" replay "$out/default/crashes" >&2 || true
  fi
done
