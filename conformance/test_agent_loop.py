"""A multi-hop agent loop through ``--tool-call-parser lfm2``: call -> result -> a second call -> result -> answer.

Each hop sends back what the server answered (the parsed call, with the client's own call id) and the tool's
result, as an agent framework does; the next hop must read both results from the context. The loop's prompts and
results are pytest_lfm/micro/script.json's ``hop`` turns, which the micro checkpoints are trained on.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Script

pytestmark = pytest.mark.lfm_requires("tools")

LOOP = ("hop1-time-oslo", "hop2-weather-oslo", "hop3-answer-oslo")
"""The script's turns of one loop: the first call, the second call after its result, the answer after both."""


def _tool_results(script: Script) -> list[dict[str, Any]]:
    """The tool messages of the loop's last turn: the result of each hop's call, in order."""
    return [m for m in script.get(LOOP[-1]).messages if m["role"] == "tool"]


def test_two_hop_tool_loop_answers_from_both_results(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, lfm_script: Script
) -> None:
    """OpenAI function calling, multi-turn: each hop's call is parsed, and the answer uses both tool results."""
    if not checks.exact(lfm_model):
        pytest.skip("the loop's calls and answer are known for micro checkpoints only")
    if lfm_model.micro not in lfm_script.get(LOOP[0]).checkpoints:
        pytest.skip(f"{lfm_model.id} is not trained on the agent loop")
    first = lfm_script.get(LOOP[0])
    messages: list[dict[str, Any]] = [dict(m) for m in first.messages]
    results = _tool_results(lfm_script)
    for hop, result in zip(LOOP[:-1], results, strict=True):
        scripted = lfm_script.get(hop)
        request = first.request(lfm_model_name, messages=messages)
        choice = checks.only_choice(lfm_client.chat.completions.create(**request), request=request)
        calls = checks.tool_call_dicts(choice.message.tool_calls)
        checks.assert_calls_equal(calls, scripted.tool_calls, request=request)
        checks.assert_finish_reason(choice, "tool_calls", request=request)
        call_id = result["tool_call_id"]  # the client's own id: the server's ids differ on every run
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function",
                 "function": {"name": calls[0]["name"], "arguments": json.dumps(json.loads(calls[0]["arguments"]))}}]},
            {"role": "tool", "tool_call_id": call_id, "content": result["content"]},
        ]
    answer_turn = lfm_script.get(LOOP[-1])
    request = first.request(lfm_model_name, messages=messages)
    choice = checks.only_choice(lfm_client.chat.completions.create(**request), request=request)
    checks.check(messages == list(answer_turn.messages), "the loop's context", request=request,
                 expected=list(answer_turn.messages), got=messages)
    checks.check(not choice.message.tool_calls and choice.message.content == answer_turn.content,
                 "the answer after both results", request=request, expected=answer_turn.content, got=choice.message)
    results_seen = [v for r in results for v in json.loads(r["content"]).values()]
    checks.check(all(str(v) in (choice.message.content or "") for v in results_seen),
                 "the answer names a value of each tool result", request=request, expected=results_seen,
                 got=choice.message.content)
