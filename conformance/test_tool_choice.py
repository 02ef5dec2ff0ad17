"""Forced calls: tool_choice "required" and a named function, which sglang enforces with a JSON-schema grammar (a JSON
array of ``{"name", "parameters"}``, ``maxItems: 1`` only with parallel_tool_calls false: 0.5.17
function_call/utils.py:413-457), streamed (parsed by function_call/json_array_parser.py, the lfm2 detector having no
structural tag) and on prompts that want several calls. test_tools.py holds the non-streamed required and named
checks.

A named choice leaves only that tool in the prompt (entrypoints/openai/serving_chat.py:1057-1062). The script has a
forced turn (required and named) for each several-call prompt, so the checks of REQUIRED and NAMED judge a micro
checkpoint's calls there; the several-call check judges only that the forced call finishes.
"""


from __future__ import annotations

from typing import Any

import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Turn, load_script

pytestmark = pytest.mark.lfm_requires("tools")

REQUIRED = [t.id for t in load_script().turns if t.kind == "forced" and t.tool_choice == "required"]
NAMED = [t.id for t in load_script().turns if t.kind == "forced" and isinstance(t.tool_choice, dict)]
SEVERAL = checks.scripted("parallel")
CHOICES = ("required", "named")
MAX_TOKENS_SEVERAL = 128  # room for three calls of the scripted tools (a JSON call is 13-17 micro tokens)


def _stream(client: openai.OpenAI, request: dict[str, Any]) -> checks.StreamedChoice:
    return checks.assemble_stream(client.chat.completions.create(**request, stream=True)).only_choice()


def _forced(turn: Turn, model_name: str, choice: str) -> dict[str, Any]:
    """The turn with tool_choice "required", or named after its first scripted call's tool."""
    tool_choice: Any = "required" if choice == "required" else {
        "type": "function", "function": {"name": turn.tool_calls[0]["name"]}}
    return turn.request(model_name, tool_choice=tool_choice, max_tokens=MAX_TOKENS_SEVERAL)


@pytest.mark.parametrize("turn", REQUIRED, indirect=True)
def test_streamed_required_tool_choice_returns_the_scripted_calls(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """sglang #10550 (required tool_choice as a JSON-schema grammar, streamed too): valid calls, finish tool_calls."""
    request = turn.request(lfm_model_name)
    choice = _stream(lfm_client, request)
    sent = {**request, "stream": True}
    calls = checks.assert_calls_valid(choice.call_dicts(), turn.tools, request=sent)
    checks.check(choice.finish_reason == "tool_calls", "finish_reason of streamed forced calls", request=sent,
                 expected="tool_calls", got=choice)
    if checks.exact(lfm_model):
        checks.assert_calls_equal(calls, turn.tool_calls, request=sent)


@pytest.mark.parametrize("turn", NAMED, indirect=True)
def test_streamed_named_tool_choice_calls_only_that_tool(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """sglang #10550 (a named tool_choice as a JSON-schema grammar, streamed too): only the named tool is called."""
    assert isinstance(turn.tool_choice, dict)
    named = turn.tool_choice["function"]["name"]
    request = turn.request(lfm_model_name)
    choice = _stream(lfm_client, request)
    sent = {**request, "stream": True}
    calls = checks.assert_calls_valid(choice.call_dicts(), turn.tools, request=sent)
    checks.check({c["name"] for c in calls} == {named} and choice.finish_reason == "tool_calls",
                 "streamed calls of a named tool_choice", request=sent,
                 expected=f"calls of {named} only, finish 'tool_calls'", got=choice)
    if checks.exact(lfm_model):
        checks.assert_calls_equal(calls, turn.tool_calls, request=sent)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("turn", SEVERAL, indirect=True)
def test_forced_choice_on_a_prompt_wanting_several_calls_finishes(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn, choice: str, stream: bool
) -> None:
    """sglang #17998 (a named tool_choice masked the comma: whitespace until max_tokens on a multi-call prompt)."""
    sent = _forced(turn, lfm_model_name, choice)
    if stream:
        streamed = _stream(lfm_client, sent)
        finish, text, calls, got = streamed.finish_reason, streamed.content, streamed.call_dicts(), streamed
        sent = {**sent, "stream": True}
    else:
        whole = checks.only_choice(lfm_client.chat.completions.create(**sent), request=sent)
        finish, text, calls, got = (whole.finish_reason, whole.message.content,
                                    checks.tool_call_dicts(whole.message.tool_calls), whole)
    checks.check(finish == "tool_calls" and bool(calls), f"a forced ({choice}) call on a prompt wanting "
                 f"{len(turn.tool_calls)} calls did not finish within {MAX_TOKENS_SEVERAL} tokens"
                 + (" (whitespace after the calls: the stall of #17998)" if finish == "length" and text is not None
                    and text != text.rstrip() else ""), request=sent,
                 expected="calls, finish 'tool_calls'", got=got)
