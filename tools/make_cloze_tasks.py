#!/usr/bin/env python3
"""Writes a multiple-choice task file (JSON Lines) from plain text, for `nanoscale eval --tasks`.

Each item is a cloze: the context is a story up to a word, the right choice is the next word, the others are words
drawn from elsewhere in the text. The format is what matters (the same as any zero-shot suite converted to
{"context", "choices", "answer"}); a model that has learned the text's language scores well above chance.

    python3 tools/make_cloze_tasks.py ../shared/data/text/tinystories-sample.txt --items 60 > tasks.jsonl
"""
import argparse
import json
import random
import re
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text")
    p.add_argument("--items", type=int, default=60)
    p.add_argument("--choices", type=int, default=4)
    p.add_argument("--seed", type=int, default=20261203)
    p.add_argument("--separator", default="<|endoftext|>")
    args = p.parse_args()

    with open(args.text, encoding="utf-8-sig") as f:
        text = f.read().replace("\r\n", "\n")
    stories = [s.strip() for s in text.split(args.separator) if s.strip()]
    words = sorted({w for w in re.findall(r"[A-Za-z]{3,}", text)})
    rng = random.Random(args.seed)
    # Positions where the next token is a plain word: after a space, before a space or punctuation.
    positions = []
    for si, story in enumerate(stories):
        for m in re.finditer(r" ([A-Za-z]{3,})(?=[ .,!?])", story):
            if m.start() > 40:
                positions.append((si, m.start(), m.group(1)))
    rng.shuffle(positions)
    written = 0
    for si, at, word in positions:
        if written == args.items:
            break
        others = [w for w in words if w.lower() != word.lower()]
        distractors = rng.sample(others, args.choices - 1)
        choices = [" " + w for w in distractors]
        answer = rng.randrange(args.choices)
        choices.insert(answer, " " + word)
        json.dump({"context": stories[si][:at], "choices": choices, "answer": answer}, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        written += 1
    if written < args.items:
        print(f"only {written} items could be made", file=sys.stderr)


if __name__ == "__main__":
    main()
