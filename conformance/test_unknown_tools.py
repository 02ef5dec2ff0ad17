"""A call to a tool the request does not offer. sglang 0.5.17's lfm2 parser drops it unless the server runs with
SGLANG_FORWARD_UNKNOWN_TOOLS set (off by default: srt/environ.py:489; function_call/lfm2_detector.py:153-157, and
base_format_detector.py:85-88 for the JSON form); with it set, the call comes back under the name the model wrote
(sglang #12226 added that; #40817 asks for it by default). Either way the call's markup stays out of content (#40817:
another parser handed it back as content). Both checks run on the model's own launch (the variable unset) and on the
float16 variant, which sets it (``matrix.FLOAT16_VARIANT``).

A micro checkpoint calls the tools of its scripted prompt, and a request without the called tool renders another
prompt. So the request sends the scripted prompt as token ids (``input_ids``, which 0.5.17's chat endpoint takes in
place of rendering the messages: entrypoints/openai/protocol.py:835-838, serving_chat.py:1098-1108) with ``tools``
leaving out the tool the script calls: the model sees its scripted prompt and calls that tool; the parser checks the
call against tools without it. The same ids with the turn's own tools must give the scripted call first, or the check
would test nothing.
"""


from __future__ import annotations

from typing import Any

import openai
import pytest

from pytest_lfm import checks, prompts
from pytest_lfm.matrix import FLOAT16_VARIANT, FORWARD_UNKNOWN_TOOLS_ENV, LaunchConfig, ModelSpec
from pytest_lfm.micro.script import Turn
from pytest_lfm.settings import Settings

pytestmark = pytest.mark.lfm_requires("tools")

CALL = checks.scripted("call")[:1]


def _answer(client: openai.OpenAI, request: dict[str, Any]) -> tuple[str, list[dict[str, Any]], Any]:
    """(content, calls, what to show) of the request's answer, streamed or not."""
    if request.get("stream"):
        choice = checks.assemble_stream(client.chat.completions.create(**request)).only_choice()
        return choice.content, choice.call_dicts(), choice
    whole = checks.only_choice(client.chat.completions.create(**request), request=request)
    return whole.message.content or "", checks.tool_call_dicts(whole.message.tool_calls), whole


def _unknown_tool_answer(
    client: openai.OpenAI, model_name: str, model: ModelSpec, tokenizer_path: str, sglang_version: str,
    settings: Settings, turn: Turn, stream: bool,
) -> tuple[dict[str, Any], str, list[dict[str, Any]], Any]:
    """(request, content, calls, what to show) of the scripted prompt's ids sent with tools that lack the called one,
    after the same ids with the turn's own tools gave the scripted call."""
    __tracebackhide__ = True
    if not checks.exact(model):
        pytest.skip("only a micro checkpoint is known to call its scripted tool from the scripted prompt's tokens")
    if settings.base_url:
        pytest.skip(f"whether a server started elsewhere runs with {FORWARD_UNKNOWN_TOOLS_ENV} is not known here")
    called = {c["name"] for c in turn.tool_calls}
    offered = [t for t in turn.tools if t["function"]["name"] not in called]
    if not offered:
        pytest.skip(f"turn {turn.id} offers no tool besides the one it calls")
    ids = prompts.prompt_ids(tokenizer_path, turn.messages, turn.rendered_tools, sglang_version)
    extra = {"stream": True} if stream else {}
    scripted = turn.request(model_name, extra_body={"input_ids": ids}, **extra)
    _, calls, _ = _answer(client, scripted)
    checks.assert_calls_equal(calls, turn.tool_calls, request=scripted)  # the ids give the scripted call
    request = turn.request(model_name, tools=offered, extra_body={"input_ids": ids}, **extra)
    return (request, *_answer(client, request))


@pytest.mark.lfm_launch()
@pytest.mark.lfm_launch(**FLOAT16_VARIANT)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("turn", CALL, indirect=True)
def test_call_to_a_tool_the_request_lacks_follows_forward_unknown_tools(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, lfm_tokenizer_path: str,
    lfm_sglang_version: str, lfm_launch: LaunchConfig, lfm_settings: Settings, turn: Turn, stream: bool,
) -> None:
    """sglang #40817 / #12226: dropped with SGLANG_FORWARD_UNKNOWN_TOOLS off (the default), forwarded under the name
    the model wrote with it on (FLOAT16_VARIANT)."""
    request, _, calls, got = _unknown_tool_answer(lfm_client, lfm_model_name, lfm_model, lfm_tokenizer_path,
                                                  lfm_sglang_version, lfm_settings, turn, stream)
    if lfm_launch.environment().get(FORWARD_UNKNOWN_TOOLS_ENV, "").lower() in ("1", "true", "yes"):
        checks.check(bool(calls), f"a call to a tool the request lacks, {FORWARD_UNKNOWN_TOOLS_ENV}=1", request=request,
                     expected=f"the call, forwarded: {list(turn.tool_calls)}", got=got)
        checks.assert_calls_equal(calls, turn.tool_calls, request=request)
    else:
        checks.check(not calls, f"a call to a tool the request lacks, {FORWARD_UNKNOWN_TOOLS_ENV} unset",
                     request=request, expected="no call: sglang drops it", got=got)


@pytest.mark.lfm_launch()
@pytest.mark.lfm_launch(**FLOAT16_VARIANT)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("turn", CALL, indirect=True)
def test_call_to_a_tool_the_request_lacks_leaves_no_call_text_in_content(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, lfm_tokenizer_path: str,
    lfm_sglang_version: str, lfm_settings: Settings, turn: Turn, stream: bool,
) -> None:
    """sglang #40817 (a parser that drops an unknown call returned its markup as content): no call text in content."""
    request, content, _, got = _unknown_tool_answer(lfm_client, lfm_model_name, lfm_model, lfm_tokenizer_path,
                                                    lfm_sglang_version, lfm_settings, turn, stream)
    checks.assert_no_special_tokens(content, request=request)
    leftovers = [c["name"] for c in turn.tool_calls if f"{c['name']}(" in content or f'"{c["name"]}"' in content]
    checks.check(not leftovers, "the call's text in content", request=request, expected="content without the call",
                 got=got)
