#!/usr/bin/env python3
"""Renders chat templates with Python's Jinja2 configured as transformers' apply_chat_template configures it
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols, a no-op {% generation %} tag, its tojson,
raise_exception and strftime_now) and writes the golden file the C# tests compare Nanoscale's Jinja subset with:

    python3 tools/chat_template_reference.py [../shared] > tests/Nanoscale.Tests/Serve/ChatTemplates/golden.json

Templates: the real ones of ../shared/data/tokenizers/{llama3,qwen2_5} (referenced, not copied) and the ones written
for the tests in tests/Nanoscale.Tests/Serve/ChatTemplates/*.jinja. strftime_now reads a fixed clock (2026-12-05
09:30:00) so the output does not depend on the day it ran; the tests give the C# renderer the same clock.
"""
import json
import os
import sys
from datetime import datetime

import jinja2
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "shared")
HERE = os.path.join(ROOT, "tests", "Nanoscale.Tests", "Serve", "ChatTemplates")
CLOCK = datetime(2026, 12, 5, 9, 30, 0)


class Generation(Extension):
    """transformers' AssistantTracker without the tracking: {% generation %}...{% endgeneration %} renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def environment():
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: CLOCK.strftime(fmt)
    return env


def m(role, content, **extra):
    return {"role": role, "content": content, **extra}


TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city, \"now\"",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 1}},
                       "required": ["city"]}}}

# A tool with nested parameters: an enum, a type list, an object with its own required keys, arrays with and without
# an item type, an extension key.
BOOKING = {"type": "function", "function": {"name": "book", "description": "Book a trip", "parameters": {
    "type": "object", "required": ["city", "party"], "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome"]}, "when": {"type": ["string", "null"]},
        "party": {"type": "object", "properties": {"adults": {"type": "integer"}, "names": {"type": "array", "items": {"type": "string"}}},
                  "required": ["adults"]},
        "flags": {"type": "array", "items": {}}, "x-extra": {"type": "boolean"}}}}}

CONVERSATIONS = {
    "basic": [m("system", "Be brief."), m("user", " Hi! "), m("assistant", "Hello."), m("user", "Bye")],
    "no-system": [m("user", "What is 2+2?")],
    "unicode": [m("user", "Grüße, 世界 🌍 — \"quoted\" and 'single' \\ back\nslash\ttab")],
    "reasoning": [m("system", "Think first."), m("user", "Q1"), m("assistant", "<think>\nplan A\n</think>\n\nA1"),
                  m("user", "Q2"), m("assistant", "A2", reasoning_content="plan B"), m("tool", "{\"t\": 3}"),
                  m("tool", "<b>done</b>"), m("assistant", "\n\nfinal")],
    "tool-response-user": [m("user", "Q"), m("assistant", "calling"), m("user", "<tool_response>42</tool_response>")],
    "empty-content": [m("user", ""), m("assistant", "x"), m("user", "  spaced  ")],
    "long": [m("user" if i % 2 == 0 else "assistant", f"turn {i}") for i in range(9)],
    "tool-role": [m("user", "Q"), m("tool", "result")],
    # OpenAI-style tool use as Nanoscale hands it to a template: the call's arguments parsed from their JSON text.
    "tool-use": [m("system", "Use tools."), m("user", "Weather in Paris and Rome?"),
                 m("assistant", None, tool_calls=[
                     {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                     {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome", "days": 2}}}]),
                 m("tool", "{\"temp\": 21}", tool_call_id="call_1"), m("tool", "sunny, 25°", tool_call_id="call_2"),
                 m("assistant", "Paris 21, Rome 25."), m("user", "Thanks")],
}

CASES = [
    ("shared:llama3", ["basic", "no-system", "unicode", "long"], [{}]),
    ("shared:qwen2_5", ["basic", "no-system", "unicode", "long", "reasoning", "tool-use"], [{}, {"tools": [TOOL]}]),
    ("reasoning-chatml.jinja", ["basic", "no-system", "reasoning", "tool-response-user", "empty-content", "tool-use"],
     [{}, {"enable_thinking": False}, {"tools": [TOOL]}, {"add_generation_prompt": False}]),
    ("dated-header.jinja", ["basic", "no-system", "unicode", "tool-role"], [{}, {"tools": [TOOL]}, {"date_string": "01 Jan 2025"}]),
    ("features.jinja", ["basic", "empty-content", "long", "unicode"], [{}, {"extra": {"name": "N", "n": 41}}]),
    ("scoping.jinja", ["basic", "long"], [{}]),
    ("real-world.jinja", ["basic", "no-system", "reasoning", "tool-use", "unicode", "empty-content"],
     [{}, {"tools": [TOOL]}, {"quiet": True}, {"identity": "Custom identity."}]),
    ("declarations.jinja", ["basic", "no-system", "reasoning", "tool-use", "unicode", "empty-content"],
     [{}, {"tools": [TOOL, BOOKING]}, {"thinking": True}]),
    ("call-blocks.jinja", ["basic", "tool-use", "empty-content"], [{}, {"tools": [TOOL, BOOKING]}]),
    ("recursive.jinja", ["basic", "no-system"], [{}, {"tools": [TOOL, BOOKING]}]),
]

TOKENS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}


def template_text(name):
    if name.startswith("shared:"):
        path = os.path.join(SHARED, "data", "tokenizers", name.split(":", 1)[1], "tokenizer_config.json")
        with open(path, encoding="utf-8") as f:
            return json.load(f)["chat_template"]
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def main():
    env = environment()
    out = []
    for name, conversations, extras in CASES:
        template = env.from_string(template_text(name))
        for conversation in conversations:
            for extra in extras:
                variables = {"messages": CONVERSATIONS[conversation], "tools": None, "documents": None,
                             "add_generation_prompt": True, **TOKENS, **extra}
                case = {"template": name, "conversation": conversation, "variables": variables}
                try:
                    case["expected"] = template.render(**variables)
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                out.append(case)
    json.dump(out, sys.stdout, ensure_ascii=False, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
