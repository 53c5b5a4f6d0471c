#!/usr/bin/env python3
"""Markdown tables from docs/nxfp-ablation/{gpt2,stories}-w{W}.json (written by tools/nxfp-ablation.sh)."""
import json, os, sys

out = sys.argv[1] if len(sys.argv) > 1 else "docs/nxfp-ablation"
for w in (3, 4, 5, 6):
    g, s = os.path.join(out, f"gpt2-w{w}.json"), os.path.join(out, f"stories-w{w}.json")
    if not (os.path.exists(g) and os.path.exists(s)):
        continue
    grows = {r["format"]: r for r in json.load(open(g))["rows"]}
    srows = {r["format"]: r for r in json.load(open(s))["rows"]}
    base = srows.get("original", {}).get("perplexity")
    print(f"\n### {w}-bit elements\n")
    print("| format | bpw (gpt2) | SQNR gpt2 dB | MSE gpt2 | bpw (stories) | SQNR stories dB | MSE stories | perplexity | Δ ppl |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in grows.items():
        if name == "original":
            continue
        t = srows.get(name, {})
        ge, se = r.get("error") or {}, t.get("error") or {}
        ppl = t.get("perplexity")
        d = f"{ppl - base:+.4f}" if ppl is not None and base is not None else ""
        print(f"| `{name}` | {r['bits_per_weight']:.3f} | {ge.get('sqnr_db', float('nan')):.2f} | {ge.get('mse', float('nan')):.3e} | "
              f"{t.get('bits_per_weight', float('nan')):.3f} | {se.get('sqnr_db', float('nan')):.2f} | {se.get('mse', float('nan')):.3e} | "
              f"{ppl if ppl is None else f'{ppl:.4f}'} | {d} |")
    if base is not None:
        print(f"\n(stories260K original perplexity {base:.4f})")
