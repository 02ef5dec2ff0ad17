"""The training set of a micro checkpoint: every scripted turn rendered as each supported sglang renders it, with the
exact completion, plus invented-value variants of the tool turns (they teach copying arguments)."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_lfm.micro import render
from pytest_lfm.micro.configs import TEMPLATE, TRAINING
from pytest_lfm.micro.script import ImageSpec, Script, Turn

_SYLLABLES = "ba be bo da de di do fa fe ga go ka ke ki ko la le li lo lu ma me mi mo na ne no pa pe po ra re ri ro ru "
_SYLLABLES += "sa se si so ta te ti to va ve vi vo za ze zo bar ben dor fin gal ken lor mar nor pin ras sel tam ver zan"
_CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "snowy", "foggy", "stormy", "clear"]
_CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "NOK", "INR", "BRL", "MXN", "CNY", "ZAR"]


@dataclass(frozen=True)
class Example:
    """One training sequence: a rendered prompt and the completion the model must produce."""

    turn_id: str
    kind: str
    prompt: str
    completion: str
    scripted: bool  # False for invented-value variants (trained, but not required to reach the margin)
    images: tuple[ImageSpec, ...] = field(default=())


def _invented_name(rng: random.Random, used: set[str]) -> str:
    syllables = _SYLLABLES.split()
    while True:
        name = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))).capitalize()
        if name not in used:
            used.add(name)
            return name


def _values(turn: Turn) -> list[Any]:
    """Argument and tool-result values of ``turn``: the slots a variant fills with invented values."""
    values: list[Any] = [v for call in turn.tool_calls for v in call["arguments"].values()]
    for message in turn.messages:
        for call in message.get("tool_calls") or []:
            values += json.loads(call["function"]["arguments"]).values()
        if message["role"] == "tool":
            values += json.loads(message["content"]).values()
    return list(dict.fromkeys(values))


def _replacement(value: Any, rng: random.Random, used: set[str]) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return rng.randint(2, 99) if value < 100 else rng.randint(100, 999)
    if value in _CONDITIONS:
        return rng.choice(_CONDITIONS)
    if value in _CURRENCIES:
        return rng.choice(_CURRENCIES)
    if re.fullmatch(r"\d\d:\d\d", value):
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    return _invented_name(rng, used)


def _substitute(obj: Any, pattern: re.Pattern[str], mapping: dict[str, str]) -> Any:
    if isinstance(obj, str):
        return pattern.sub(lambda m: mapping[m.group(0)], obj)
    if isinstance(obj, list | tuple):
        return type(obj)(_substitute(x, pattern, mapping) for x in obj)
    if isinstance(obj, dict):
        return {k: _substitute(v, pattern, mapping) for k, v in obj.items()}
    return obj


def variant(turn: Turn, rng: random.Random, used: set[str]) -> Turn | None:
    """``turn`` with every argument/result value replaced by an invented one, or None when it has none."""
    values = [v for v in _values(turn) if not isinstance(v, bool)]
    if not values:
        return None
    mapping: dict[str, str] = {}
    typed: dict[str, Any] = {}
    for value in values:
        new = _replacement(value, rng, used)
        mapping[str(value)] = str(new)
        typed[str(value)] = new
    alternatives = "|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True))
    pattern = re.compile(r"(?<![\w])(" + alternatives + r")(?![\w])")
    def retyped(calls: Sequence[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
        return tuple({"name": c["name"], "arguments": {k: typed.get(str(v), v) for k, v in c["arguments"].items()}}
                     for c in calls)

    parts = tuple({"calls": list(retyped(p["calls"]))} if "calls" in p else _substitute(p, pattern, mapping)
                  for p in turn.parts)
    return Turn(
        id=turn.id + "~",
        kind=turn.kind,
        checkpoints=turn.checkpoints,
        messages=_substitute(turn.messages, pattern, mapping),
        tools=turn.tools,
        tool_choice=turn.tool_choice,
        content=_substitute(turn.content, pattern, mapping),
        tool_calls=retyped(turn.tool_calls),
        images=turn.images,
        max_tokens=turn.max_tokens,
        parts=parts,
        reasoning=_substitute(turn.reasoning, pattern, mapping),
    )


def examples(script: Script, name: str, training: dict[str, Any] = TRAINING) -> list[Example]:
    """The training set of checkpoint ``name``: every scripted turn in every supported sglang rendering, plus
    invented-value variants of the tool turns (each in one rendering, chosen at random)."""
    rng = random.Random(training["seed"])
    template = TEMPLATE[name]
    used: set[str] = set()
    out: list[Example] = []
    for turn in script.for_checkpoint(name):
        prompts = dict.fromkeys(render.render_prompt(turn, None, template, v) for v in render.SUPPORTED_SGLANG)
        out += [Example(turn.id, turn.kind, p, render.completion_text(turn), True, turn.images) for p in prompts]
        if turn.kind == "image":
            continue
        for _ in range(training["copy_variants"]):
            var = variant(turn, rng, used)
            if var is None:
                break
            version = rng.choice(render.SUPPORTED_SGLANG)
            out.append(
                Example(var.id, var.kind, render.render_prompt(var, None, template, version),
                        render.completion_text(var), False)
            )
    return out


def tokenizer_corpus(examples_: Sequence[Example]) -> list[str]:
    """The texts the tokenizer is trained on: every prompt, then every completion."""
    return [ex.prompt for ex in examples_] + [ex.completion for ex in examples_]
