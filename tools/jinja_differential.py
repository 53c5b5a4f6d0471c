#!/usr/bin/env python3
"""Differential cases for Nanoscale's Jinja subset: random small templates built from the constructs chat templates
use (expressions over strings, numbers, lists, dicts and the conversation; filters, tests, methods, slices; if/for/set/
macro/namespace), rendered by Python's Jinja2 configured as transformers configures it (chat_template_reference.py's
environment). Each case records the output, or that Jinja2 refused the template; the C# test requires the same output,
or a JinjaException where Jinja2 raised.

    python3 tools/jinja_differential.py [COUNT] [SEED] > tests/Nanoscale.Tests/Serve/ChatTemplates/differential.json
"""
import copy
import json
import random
import sys

import jinja2

from chat_template_reference import environment

ATOMS = ["x", "y", "n", "f", "s", "lst", "d", "messages", "messages[0]", "messages[-1].content", "none", "true", "false",
         "0", "1", "-3", "7", "2.5", "0.1", "'ab,c'", "'Hello World'", "''", "' pad '", "[1, 2, 3]", "['b', 'a']", "{'k': 1, 'j': 'v'}",
         "range(4)", "'\\n'", "'é'"]
BINARY = ["+", "-", "*", "/", "//", "%", "~", "==", "!=", "<", ">=", "in", "not in", "and", "or"]
POSTFIX = ["|trim", "|tojson", "|tojson(indent=2)", "|length", "|join(',')", "|default('d')", "|default('e', true)", "|first",
           "|last", "|list", "|reverse", "|int", "|float", "|string", "|upper", "|lower", "|title", "|capitalize", "|sort",
           "|unique", "|abs", "|round", "|round(1)", "|round(1, 'floor')", "|min", "|max", "|sum",
           "|replace('a', 'b')", "|select('odd')", "|reject('none')", "|map('upper')", "|selectattr('role', 'equalto', 'user')",
           "|map(attribute='role')", "|dictsort", "|items", "|wordcount", "|count",
           ".split(',')", ".split()", ".strip()", ".lstrip('a')", ".rstrip()", ".startswith('a')", ".endswith(('c', 'd'))",
           ".upper()", ".lower()", ".title()", ".capitalize()", ".replace('l', 'L')", ".find('l')", ".count('l')",
           ".items()", ".keys()", ".values()", ".get('k')", ".get('zz', 0)", ".role", ".content",
           "[0]", "[-1]", "[1:]", "[:2]", "[::-1]", "[::2]", "['k']", "[5]",
           " is string", " is number", " is none", " is defined", " is not defined", " is mapping", " is iterable", " is sequence",
           " is odd", " is even", " is divisibleby(3)", " is eq(1)", " is lower", " is upper", " is true", " is false", " is integer",
           " is float", " is boolean", " is in([1, 2])"]

UNSTABLE = ["<generator object", "iterator object", "dict_items(", "dict_keys(", "dict_values(", " object at 0x"]

VARIABLES = {
    "x": "v", "y": None, "n": 5, "f": 1.5, "s": "Hello, World", "lst": [3, 1, 2], "d": {"k": 1, "j": "v"},
    "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
                 {"role": "assistant", "content": "Hello there."}, {"role": "user", "content": "Bye"}],
}


def expression(rng, depth):
    if depth == 0 or rng.random() < 0.35:
        return rng.choice(ATOMS)
    kind = rng.random()
    if kind < 0.35:
        return f"{expression(rng, depth - 1)} {rng.choice(BINARY)} {expression(rng, depth - 1)}"
    if kind < 0.75:
        return f"({expression(rng, depth - 1)}){rng.choice(POSTFIX)}"
    if kind < 0.85:
        return f"(not {expression(rng, depth - 1)})"
    return f"({expression(rng, depth - 1)} if {expression(rng, depth - 1)} else {expression(rng, depth - 1)})"


def statement(rng, depth):
    kind = rng.random()
    e = expression(rng, rng.randint(1, 2))
    if depth == 0 or kind < 0.45:
        return rng.choice([f"{{{{ {e} }}}}", f"[{{{{ {e} }}}}]", f"{{% set t = {e} %}}{{{{ t }}}}", f"{{% set ns.v = {e} %}}{{{{ ns.v }}}}"])
    body = "".join(statement(rng, depth - 1) for _ in range(rng.randint(1, 3)))
    if kind < 0.65:
        return f"{{% if {e} %}}{body}{{% elif {expression(rng, 1)} %}}E{{% else %}}{statement(rng, depth - 1)}{{% endif %}}"
    if kind < 0.85:
        target = rng.choice(["m in messages", "i in lst", "c in s[:3]", "k, v in d.items()", "m in messages if m.role != 'system'"])
        return f"{{%- for {target} %}}{body}{{{{ loop.index0 }}}}{{% if loop.last %}}.{{% endif %}}{{% endfor %}}\n"
    return f"{{% macro mac(p, q='q') %}}{body}{{{{ p }}}}{{{{ q }}}}{{% endmacro %}}{{{{ mac({e}) }}}}"


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 20261205)
    # Jinja2's optimizer folds constant expressions at compile time, where a few operations (slicing a literal number)
    # fail that fail nowhere else; templates run on variables, so the cases are rendered as they would run.
    env = environment()
    env.optimized = False
    cases = []
    while len(cases) < count:
        text = "{% set ns = namespace(v=0) %}" + "".join(statement(rng, 2) for _ in range(rng.randint(1, 3)))
        case = {"template": text}
        try:
            case["expected"] = env.from_string(text).render(**copy.deepcopy(VARIABLES))
        except Exception as e:  # any refusal: a template error, a TypeError of an operator, a sandbox refusal
            case["error"] = type(e).__name__
        # Python's own reprs of lazy objects and views (addresses, dict_items(...)) are not part of the contract.
        if any(marker in case.get("expected", "") for marker in UNSTABLE):
            continue
        cases.append(case)
    json.dump({"variables": VARIABLES, "cases": cases}, sys.stdout, ensure_ascii=False, indent=0)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
