"""Every scripted turn of a micro checkpoint comes back exactly through the running sglang (temperature 0).

This is how a micro checkpoint proves it behaves like LFM2 on the suites' prompts: the other suites read their
expected answers from the same script, so a turn that does not reproduce here explains a failure there.
Real models have no scripted answers; their behaviour is checked on structure by the chat and tool suites.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Script, load_script
from pytest_lfm.report.notes import SCRIPTED_TURN, note


def _answer(response: Any) -> dict[str, Any]:
    choice = response.choices[0]
    calls = [
        {"name": c.function.name, "arguments": json.loads(c.function.arguments)}
        for c in choice.message.tool_calls or []
    ]
    return {"content": choice.message.content or None, "tool_calls": calls, "finish_reason": choice.finish_reason}


@pytest.mark.parametrize("turn_id", [t.id for t in load_script().turns])
def test_scripted_turn_reproduces_exactly(
    request: pytest.FixtureRequest, turn_id: str, lfm_model: ModelSpec, lfm_script: Script,
    lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """Source: the micro checkpoints' script (pytest_lfm/micro/script.json); format per Liquid's LFM2 docs."""
    turn = lfm_script.get(turn_id)
    if lfm_model.micro is None:
        pytest.skip("scripted answers exist for micro checkpoints only")
    if lfm_model.micro not in turn.checkpoints:
        pytest.skip(f"{lfm_model.id} is not trained on {turn_id}")
    note(request, SCRIPTED_TURN, {"checkpoint": lfm_model.id, "turn": turn_id})  # the report's per-checkpoint table
    sent = turn.request(lfm_model_name)
    got = _answer(lfm_client.chat.completions.create(**sent))
    expected = {
        "content": turn.content or None,
        "tool_calls": [dict(c) for c in turn.tool_calls],
        "finish_reason": "tool_calls" if turn.tool_calls else "stop",
    }
    shown = {k: v for k, v in sent.items() if k != "messages"} | {"last message": sent["messages"][-1]}
    assert got == expected, (
        f"scripted turn {turn_id} did not reproduce\nrequest: {json.dumps(shown, default=str)[:1500]}\n"
        f"expected: {json.dumps(expected)}\ngot:      {json.dumps(got)}"
    )
