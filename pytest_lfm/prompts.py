"""Prompts as the served model's tokenizer sees them: the token ids of a chat rendered the way the running sglang
renders it (for requests that send ``input_ids``, and for cutting a completion at a token), and a chat filled to a
given prompt length (for prompts near the context limit)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from pytest_lfm.micro.render import render_tools, template_messages

FILLER = "The quick brown fox jumps over the lazy dog. "
QUESTION = "What is the capital of France?"


@cache
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def text_ids(tokenizer_path: str, text: str) -> list[int]:
    """``text`` as token ids, without the tokenizer's BOS (how sglang tokenizes a rendered prompt)."""
    return list(_tokenizer(tokenizer_path)(text, add_special_tokens=False)["input_ids"])


def text_prefix(tokenizer_path: str, text: str, tokens: int) -> str:
    """The first ``tokens`` tokens of ``text``, decoded with special tokens kept: what max_tokens leaves of it."""
    return str(_tokenizer(tokenizer_path).decode(text_ids(tokenizer_path, text)[:tokens], skip_special_tokens=False))


def template_variables(tokenizer_path: str) -> set[str]:
    """The variables the chat template reads from its caller (``messages``, ``tools``, switches such as
    ``enable_thinking``): what ``chat_template_kwargs`` can set."""
    from jinja2 import meta
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = _tokenizer(tokenizer_path).chat_template or ""
    return set(meta.find_undeclared_variables(ImmutableSandboxedEnvironment().parse(template)))


def prompt_text(tokenizer_path: str, messages: Sequence[Mapping[str, Any]],
                tools: Sequence[Mapping[str, Any]] | None, sglang_version: str) -> str:
    """The prompt ``sglang_version`` builds for these messages and tools: the checkpoint's chat template over sglang's
    re-serialized tools (docs/facts.md)."""
    return str(_tokenizer(tokenizer_path).apply_chat_template(
        template_messages(messages), tools=render_tools(tools, sglang_version) if tools else None,
        add_generation_prompt=True, tokenize=False))


def prompt_ids(tokenizer_path: str, messages: Sequence[Mapping[str, Any]],
               tools: Sequence[Mapping[str, Any]] | None, sglang_version: str) -> list[int]:
    """:func:`prompt_text` as token ids, tokenized without an added BOS (as sglang tokenizes a chat prompt)."""
    return text_ids(tokenizer_path, prompt_text(tokenizer_path, messages, tools, sglang_version))


def filled_messages(tokenizer_path: str, tokens: int, sglang_version: str) -> tuple[list[dict[str, Any]], int]:
    """A one-message chat of FILLER sentences ending in QUESTION whose prompt is at most ``tokens`` long and less
    than one sentence shorter, and its prompt length."""

    def chat(count: int) -> list[dict[str, Any]]:
        return [{"role": "user", "content": FILLER * count + QUESTION}]

    def length(count: int) -> int:
        return len(prompt_ids(tokenizer_path, chat(count), None, sglang_version))

    base, step = length(0), length(2) - length(1)
    if step <= 0 or base > tokens:
        raise ValueError(f"cannot fill a prompt to {tokens} tokens: {base} tokens without filler, {step} per sentence")
    count = (tokens - base) // step
    while count > 0 and length(count) > tokens:
        count -= 1
    while length(count + 1) <= tokens:
        count += 1
    return chat(count), length(count)


def raw_prompt(tokenizer_path: str, messages: Sequence[Mapping[str, Any]], sglang_version: str) -> tuple[str, int]:
    """The chat prompt as the text a ``/v1/completions`` request sends for it, and its token count. sglang tokenizes
    that text with the tokenizer's special tokens (managers/tokenizer_manager.py ``_tokenize_texts``): where the
    tokenizer adds its BOS itself, the template's BOS is left out of the text."""
    tokenizer = _tokenizer(tokenizer_path)
    text = prompt_text(tokenizer_path, messages, None, sglang_version)
    ids = text_ids(tokenizer_path, text)
    bos = tokenizer.bos_token or ""
    if bos and text.startswith(bos) and list(tokenizer(text)["input_ids"]) != ids:
        text = text[len(bos):]
    return text, len(ids)
