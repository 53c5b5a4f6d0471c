#!/usr/bin/env python3
"""Prints the markdown tables of docs/caldera.md from docs/data/caldera-*.json (written by tools/caldera_measure.sh)."""
import json, os, statistics
root = os.path.join(os.path.dirname(__file__), "..", "docs", "data")
def load(name):
    with open(os.path.join(root, name)) as f:
        return json.load(f)

def kind(fmt):
    if not fmt.startswith("caldera"): return "round to nearest" if fmt != "original" else "original"
    return "LDLQ only" if "rank=0" in fmt else "CALDERA"

def sweep_table(name, text):
    rows = load(name)["rows"]
    head = "| method | format | bpw | SQNR dB |" + (" perplexity | Δ vs fp32 |" if text else "") + " time s |"
    print(head); print("|" + "---|" * head.count("|")[:-1] if False else "|---|---|---:|---:|" + ("---:|---:|" if text else "") + "---:|")
    base = next((r["perplexity"] for r in rows if r["format"] == "original"), None)
    for r in rows:
        sq = "—" if r["error"] is None else f'{r["error"]["sqnr_db"]:.2f}'
        line = f'| {kind(r["format"])} | `{r["format"]}` | {r["bits_per_weight"]:.3f} | {sq} |'
        if text:
            d = r["perplexity"] - base
            line += f' {r["perplexity"]:.4f} | {d:+.4f} |'
        line += f' {r["seconds"]:.1f} |'
        print(line)
    print()

def timing(name):
    d = load(name)
    ts = [t for t in d["tensors"] if t.get("params")]
    by_shape = {}
    for t in ts:
        by_shape.setdefault("×".join(map(str, t["shape"])), []).append(t)
    print(f'`{d["format"]}`: {len(ts)} weights, {d["seconds"]:.1f} s in total (compress, incl. calibration and writing), '
          f'{d["encoded_bits_per_weight"]:.3f} bpw, SQNR {d["error"]["sqnr_db"]:.2f} dB')
    print()
    print("| shape | weights | s per weight (mean) | max | mean activation-aware error | mean kept iteration |")
    print("|---|---:|---:|---:|---:|---:|")
    for shape, group in by_shape.items():
        secs = [float(t.get("seconds", t["params"].get("seconds", 0))) for t in group]
        errs = [float(t["params"]["activation_error"]) for t in group]
        best = [int(t["params"]["best_iteration"]) for t in group]
        print(f"| {shape} | {len(group)} | {statistics.mean(secs):.3f} | {max(secs):.3f} | {statistics.mean(errs):.4f} | {statistics.mean(best):.1f} |")
    print()

print("### stories260K (calibrated on WikiText-2, perplexity on TinyStories)\n")
sweep_table("caldera-stories260K.json", True)
print("### stories260K without calibration (H = I)\n")
sweep_table("caldera-stories260K-identity.json", True)
print("### stories260K with the incoherence transform (had=1)\n")
sweep_table("caldera-stories260K-had.json", True)
print("### gpt2-attn (H = I, weight error)\n")
sweep_table("caldera-gpt2-attn.json", False)
print("### gpt2-attn with the incoherence transform (had=1)\n")
sweep_table("caldera-gpt2-attn-had.json", False)
print("### Time per layer\n")
timing("caldera-stories260K-compress.json")
timing("caldera-gpt2-attn-compress.json")
