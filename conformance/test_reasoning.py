"""Reasoning models (capability "reasoning": LFM2.5-1.2B-Thinking, micro-thinking): the think block the model writes
first, ``<think>...</think>``, comes back apart from the answer.

sglang picks no reasoning parser by itself (0.5.17: ``--reasoning-parser`` defaults to none; only ``auto`` detects
one, and its ``<think>`` rule leaves LFM2 templates out, parser/template_detection.py:423-424), so a reasoning model's
launch names one: ``qwen3-thinking`` for LFM2.5-1.2B-Thinking (sglang's cookbook). Its Qwen3Detector, with reasoning
forced, strips a leading ``<think>`` and hands everything before ``</think>`` to ``reasoning_content`` and the rest to
``content`` (parser/reasoning_parser.py:114-158), streamed as it arrives (:178-239); the tool-call parser then reads
only the text after the think block (entrypoints/openai/serving_chat.py:1779-1815, 691-740). A block that max_tokens
cuts is all reasoning and ``content`` is "" (reasoning_parser.py:126-145, serving_chat.py:1841).
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from pytest_lfm import checks, prompts
from pytest_lfm.matrix import ModelSpec, flag_value
from pytest_lfm.micro.render import completion_text
from pytest_lfm.micro.script import THINK_END, THINK_START, Turn

pytestmark = pytest.mark.lfm_requires("reasoning")

ANSWERS = checks.scripted("reasoning")
CALLS = checks.scripted("reasoning_call")
CUT = 12  # max_tokens that ends inside the think block: micro-thinking's first one is 27 tokens long
TOGGLES = ("enable_thinking", "thinking")  # the chat-template switches sglang's reasoning parsers know


def _answer(client: openai.OpenAI, request: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]], str | None, Any]:
    """(reasoning_content, content, tool calls, finish_reason, what to show) of the answer, streamed or not."""
    if request.get("stream"):
        choice = checks.assemble_stream(client.chat.completions.create(**request)).only_choice()
        return choice.reasoning, choice.content, choice.call_dicts(), choice.finish_reason, choice
    whole = checks.only_choice(client.chat.completions.create(**request), request=request)
    message = whole.message
    return (checks.reasoning_of(message) or "", message.content or "", checks.tool_call_dicts(message.tool_calls),
            whole.finish_reason, whole)


def _request(turn: Turn, model_name: str, stream: bool, **overrides: Any) -> dict[str, Any]:
    request = turn.request(model_name, **overrides)
    return {**request, "stream": True} if stream else request


def _check_reasoning(reasoning: str, turn: Turn, model: ModelSpec, *, request: Any, got: Any) -> None:
    """The think block's text: the scripted one for a micro checkpoint, some text without think markup otherwise."""
    __tracebackhide__ = True
    if checks.exact(model):
        checks.check(reasoning == turn.reasoning, "reasoning_content", request=request, expected=turn.reasoning,
                     got=got)
    checks.check(bool(reasoning.strip()) and THINK_START not in reasoning and THINK_END not in reasoning,
                 "reasoning_content holds the think block's text", request=request,
                 expected="non-empty text without <think> or </think>", got=got)


def _check_no_think_markup(content: str, *, request: Any, got: Any) -> None:
    __tracebackhide__ = True
    checks.check(THINK_START not in content and THINK_END not in content, "think markup left in content",
                 request=request, expected="content without <think> or </think>", got=got)


def test_reasoning_model_launches_with_a_reasoning_parser(lfm_model: ModelSpec) -> None:
    """sglang 0.5.17 parser/template_detection.py:423-424: no parser is detected for an LFM2 template."""
    if flag_value(lfm_model.launch_args, "--reasoning-parser") in (None, "auto"):
        pytest.fail(f"{lfm_model.id} has capability reasoning but its launch_args ({' '.join(lfm_model.launch_args)}) "
                    "name no --reasoning-parser: sglang would return the think block inside content. Add "
                    "'--reasoning-parser', 'qwen3-thinking' (LFM2.5-1.2B-Thinking) to its launch_args in "
                    f"{lfm_model.source}.", pytrace=False)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("turn", ANSWERS, indirect=True)
def test_reasoning_content_carries_the_think_block(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn, stream: bool,
) -> None:
    """sglang 0.5.17 parser/reasoning_parser.py:114-158 (whole), 178-239 (streamed): the text before </think>."""
    request = _request(turn, lfm_model_name, stream)
    reasoning, _, _, _, got = _answer(lfm_client, request)
    _check_reasoning(reasoning, turn, lfm_model, request=request, got=got)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("turn", ANSWERS, indirect=True)
def test_content_is_the_answer_after_the_think_block(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn, stream: bool,
) -> None:
    """sglang 0.5.17 parser/reasoning_parser.py:148-155: content is the text after </think>, without think markup."""
    request = _request(turn, lfm_model_name, stream)
    _, content, _, finish, got = _answer(lfm_client, request)
    if checks.exact(lfm_model):
        checks.check(content == turn.content, "content", request=request, expected=turn.content, got=got)
    checks.check(bool(content.strip()), "content holds the answer", request=request, expected="a non-empty answer",
                 got=got)
    _check_no_think_markup(content, request=request, got=got)
    checks.assert_no_special_tokens(content, request=request)
    checks.check(finish == "stop", "finish_reason", request=request, expected="stop", got=got)


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_streamed_reasoning_deltas_come_before_content_deltas(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn,
) -> None:
    """OpenAI-style reasoning streams (sglang 0.5.17 serving_chat.py:691-760): the thinking first, then the answer."""
    request = _request(turn, lfm_model_name, True)
    choice = checks.assemble_stream(lfm_client.chat.completions.create(**request)).only_choice()
    kinds = [part for i, part in enumerate(choice.parts) if i == 0 or choice.parts[i - 1] != part]
    checks.check(kinds == ["reasoning", "content"], "order of the streamed deltas", request=request,
                 expected="reasoning_content deltas, then content deltas", got=choice.parts)


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_streamed_reasoning_and_content_equal_the_whole_answer(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn,
) -> None:
    """OpenAI streaming: the deltas assemble to the non-streamed message (temperature 0), reasoning included."""
    request = turn.request(lfm_model_name)
    whole = _answer(lfm_client, request)[:4]
    streamed = _answer(lfm_client, {**request, "stream": True})
    checks.check(streamed[:4] == whole, "streamed (reasoning, content, calls, finish) vs the non-streamed answer",
                 request={**request, "stream": True}, expected=whole, got=streamed[4])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("turn", CALLS, indirect=True)
def test_call_after_reasoning_is_parsed_and_the_reasoning_kept_apart(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn, stream: bool,
) -> None:
    """sglang 0.5.17 serving_chat.py:1779-1815: the lfm2 parser reads the text after the think block."""
    request = _request(turn, lfm_model_name, stream)
    reasoning, content, calls, finish, got = _answer(lfm_client, request)
    checks.assert_calls_valid(calls, turn.tools, request=request)
    if checks.exact(lfm_model):
        checks.assert_calls_equal(calls, turn.tool_calls, request=request)
    checks.check(finish == "tool_calls", "finish_reason", request=request, expected="tool_calls", got=got)
    _check_reasoning(reasoning, turn, lfm_model, request=request, got=got)
    checks.assert_no_special_tokens(reasoning, request=request, where="reasoning_content")
    _check_no_think_markup(content, request=request, got=got)
    checks.assert_no_special_tokens(content, request=request)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_max_tokens_inside_the_reasoning_finishes_with_length_and_no_content(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, lfm_tokenizer_path: str, turn: Turn,
    stream: bool,
) -> None:
    """sglang 0.5.17 reasoning_parser.py:126-145: a think block max_tokens cuts is reasoning; content stays ""."""
    request = _request(turn, lfm_model_name, stream, max_tokens=CUT)
    reasoning, content, calls, finish, got = _answer(lfm_client, request)
    checks.check(finish == "length", "finish_reason of an answer cut inside its reasoning", request=request,
                 expected="length", got=got)
    checks.check(not content and not calls, "content of an answer cut inside its reasoning", request=request,
                 expected="no content and no calls: the answer was not begun", got=got)
    if checks.exact(lfm_model):
        cut = prompts.text_prefix(lfm_tokenizer_path, completion_text(turn), CUT).removeprefix(THINK_START)
        checks.check(reasoning == cut, "reasoning_content of an answer cut inside its reasoning", request=request,
                     expected=cut, got=got)
    checks.check(bool(reasoning.strip()) and THINK_START not in reasoning, "the cut reasoning is returned",
                 request=request, expected="the reasoning written before the cut, without <think>", got=got)


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_chat_template_kwargs_turn_thinking_off(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_tokenizer_path: str, turn: Turn,
) -> None:
    """sglang 0.5.17 serving_chat.py:2259-2336 (the chat_template_kwargs switch); the model's chat template."""
    toggles = [name for name in TOGGLES if name in prompts.template_variables(lfm_tokenizer_path)]
    if not toggles:
        pytest.skip(f"the chat template of {lfm_model_name} reads none of {', '.join(TOGGLES)}: chat_template_kwargs "
                    "cannot turn its thinking off (LFM2.5's templates have only keep_past_thinking, which drops "
                    "earlier turns' reasoning from the prompt)")
    request = turn.request(lfm_model_name, extra_body={"chat_template_kwargs": {toggles[0]: False}})
    reasoning, content, _, _, got = _answer(lfm_client, request)
    checks.check(not reasoning and bool(content.strip()), f"answer with {toggles[0]}=false", request=request,
                 expected="no reasoning_content, the answer in content", got=got)
    _check_no_think_markup(content, request=request, got=got)
