"""Prompts as sglang renders them, and the exact completions the micro checkpoints are trained to produce.

sglang re-serializes the request's tools (pydantic ``Tool.model_dump()``) before the chat template sees them, and the
serialized form changed between versions (docs/facts.md). :data:`TOOL_FORMS` maps the first sglang version of each form
to the function producing it; add a row when a new sglang version renders tools differently.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from pytest_lfm.micro.script import THINK_END, THINK_START, Turn

TEMPLATES = ("lfm2", "lfm2.5")
SUPPORTED_SGLANG = ("0.5.17", "0.5.23")  # the renderings the micro checkpoints are trained on


def _tool_form_pydantic_v1(tool: Mapping[str, Any]) -> dict[str, Any]:
    """sglang <= 0.5.17: fields in model order (description first), ``strict: false`` and ``defer_loading: null``."""
    fn = tool["function"]
    return {
        "type": tool.get("type", "function"),
        "function": {
            "description": fn.get("description"),
            "name": fn["name"],
            "parameters": fn.get("parameters"),
            "strict": fn.get("strict", False),
        },
        "defer_loading": tool.get("defer_loading"),
    }


def _tool_form_client_order(tool: Mapping[str, Any]) -> dict[str, Any]:
    """sglang >= 0.5.23: the client's key order, no injected ``strict``; missing fields appended as null."""
    fn = dict(tool["function"])
    for key in ("description", "parameters"):
        fn.setdefault(key, None)
    if fn.get("strict") is None:
        fn.pop("strict", None)
    if fn.get("defer_loading") is None:
        fn.pop("defer_loading", None)
    return {"type": tool.get("type", "function"), "function": fn, "defer_loading": tool.get("defer_loading")}


TOOL_FORMS: tuple[tuple[str, Callable[[Mapping[str, Any]], dict[str, Any]]], ...] = (
    ("0", _tool_form_pydantic_v1),
    ("0.5.23", _tool_form_client_order),
)


def _version_key(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def render_tools(tools: Sequence[Mapping[str, Any]], sglang_version: str) -> list[dict[str, Any]]:
    """The tool dicts that ``sglang_version`` passes to the chat template for ``tools`` (OpenAI tool dicts)."""
    key = _version_key(sglang_version)
    form = [fn for first, fn in TOOL_FORMS if _version_key(first) <= key][-1]
    return [form(copy.deepcopy(dict(tool))) for tool in tools]


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as sglang hands them to the template: None fields dropped, image parts reduced to
    ``{"type": "image"}``, assistant tool-call arguments parsed from JSON text into dicts."""
    out: list[dict[str, Any]] = []
    for raw in messages:
        message = {k: copy.deepcopy(v) for k, v in raw.items() if v is not None}
        if isinstance(message.get("content"), list):
            message["content"] = [
                {"type": "image"} if part.get("type") in ("image", "image_url") else part for part in message["content"]
            ]
        for call in message.get("tool_calls") or []:
            fn = call.get("function", {})
            if isinstance(fn.get("arguments"), str):
                fn["arguments"] = json.loads(fn["arguments"])
        out.append(message)
    return out


def chat_template(template: str) -> str:
    """The packaged Jinja source of ``template`` ("lfm2" | "lfm2.5")."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown chat template {template!r}; expected one of {TEMPLATES}")
    return (resources.files("pytest_lfm.micro") / f"{template}.jinja").read_text()


@cache
def _compiled(template: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, sort_keys: bool = False) -> str:
        # transformers' chat-template tojson
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)

    env.filters["tojson"] = tojson
    return env.from_string(chat_template(template))


def render_prompt(
    turn_or_messages: Turn | Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    template: str = "lfm2",
    sglang_version: str = SUPPORTED_SGLANG[-1],
    *,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text ``sglang_version`` builds with ``template``; for a Turn, ``tools`` defaults to the tools
    its tool_choice leaves in the prompt."""
    if isinstance(turn_or_messages, Turn):
        messages: Sequence[Mapping[str, Any]] = turn_or_messages.messages
        if tools is None:
            tools = turn_or_messages.rendered_tools
    else:
        messages = turn_or_messages
    rendered_tools = render_tools(tools, sglang_version) if tools else None
    text: str = _compiled(template).render(
        messages=template_messages(messages),
        tools=rendered_tools,
        bos_token="<|startoftext|>",
        eos_token="<|im_end|>",
        add_generation_prompt=add_generation_prompt,
    )
    return text


def _py_value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _pythonic_block(calls: Sequence[Mapping[str, Any]]) -> str:
    body = ", ".join(
        f"{c['name']}(" + ", ".join(f"{k}={_py_value(v)}" for k, v in c["arguments"].items()) + ")" for c in calls
    )
    return f"<|tool_call_start|>[{body}]<|tool_call_end|>"


def completion_text(turn: Turn) -> str:
    """The exact text a micro checkpoint generates for ``turn`` (before ``<|im_end|>``); a reasoning turn's begins
    with its think block, ``<think>reasoning</think>``, as LFM2.5-1.2B-Thinking's answers do."""
    if turn.reasoning is not None:
        return THINK_START + turn.reasoning + THINK_END + _after_reasoning(turn)
    return _after_reasoning(turn)


def _after_reasoning(turn: Turn) -> str:
    calls = turn.tool_calls
    if turn.kind in ("call", "parallel", "reasoning_call"):
        return _pythonic_block(calls)
    if turn.kind == "call_text":
        return "".join(p["text"] if "text" in p else _pythonic_block(p["calls"]) for p in turn.parts)
    if turn.kind == "json_call":
        payload = [{"name": c["name"], "arguments": c["arguments"]} for c in calls]
        return "<|tool_call_start|>" + json.dumps(payload, ensure_ascii=False) + "<|tool_call_end|>"
    if turn.kind == "forced":
        # sglang constrains tool_choice=required/named to a JSON array of {"name", "parameters"}
        return json.dumps([{"name": c["name"], "parameters": c["arguments"]} for c in calls], ensure_ascii=False)
    if turn.content is None:
        raise ValueError(f"turn {turn.id!r} has neither calls nor content")
    return turn.content


def prompt_token_count(
    model_path: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    sglang_version: str,
) -> int:
    """Prompt tokens ``sglang_version`` counts for this request on ``model_path`` (its tokenizer and chat template).

    Images count as one ``<image>`` token each (the server expands them further).
    """
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(model_path)
    text = tokenizer.apply_chat_template(
        template_messages(messages),
        tools=render_tools(tools, sglang_version) if tools else None,
        add_generation_prompt=True,
        tokenize=False,
    )
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
