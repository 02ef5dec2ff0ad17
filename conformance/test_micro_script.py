"""Every scripted turn of a micro checkpoint comes back exactly through the running sglang (temperature 0).

This is how a micro checkpoint proves it behaves like LFM2 on the suites' prompts: the other suites read their
expected answers from the same script, so a turn that does not reproduce here explains a failure there.
Real models have no scripted answers; their behaviour is checked on structure by the chat and tool suites.
A ``call_text`` turn (text around call blocks) is checked on the raw completion of ``/generate``: the lfm2 parser
of sglang 0.5.17 drops text after a call (sglang #40295, conformance/test_tool_text.py), which is the parser's
failure, not the checkpoint's.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro import render
from pytest_lfm.micro.script import Script, Turn, load_script
from pytest_lfm.report.notes import SCRIPTED_TURN, note


def _answer(response: Any) -> dict[str, Any]:
    choice = response.choices[0]
    calls = [
        {"name": c.function.name, "arguments": json.loads(c.function.arguments)}
        for c in choice.message.tool_calls or []
    ]
    return {"reasoning_content": checks.reasoning_of(choice.message) or None, "content": choice.message.content or None,
            "tool_calls": calls, "finish_reason": choice.finish_reason}


def _raw_completion(http: httpx.Client, client: openai.OpenAI, model_name: str, model: ModelSpec, turn: Turn,
                    tokenizer_path: str, sglang_version: str) -> dict[str, Any]:
    """The turn's completion as generated (special tokens kept, no parser), from the prompt sglang renders for the
    chat request: the rendering is checked against the chat request's prompt_tokens first."""
    from transformers import AutoTokenizer

    sent = turn.request(model_name)
    prompt = render.render_prompt(turn, template=model.chat_template, sglang_version=sglang_version)
    ids = AutoTokenizer.from_pretrained(tokenizer_path)(prompt, add_special_tokens=False)["input_ids"]
    usage = client.chat.completions.create(**sent).usage
    assert usage is not None and usage.prompt_tokens == len(ids), (
        f"the prompt rendered for sglang {sglang_version} has {len(ids)} tokens, the chat request's "
        f"{usage.prompt_tokens if usage else None}: the raw completion would not answer the same prompt")
    body = {"input_ids": ids, "sampling_params": {"temperature": 0, "max_new_tokens": turn.max_tokens,
                                                  "skip_special_tokens": False}}
    out = http.post("/generate", json=body, timeout=120).json()
    text = out["text"].removesuffix("<|im_end|>")
    return {"completion": text, "finish_reason": (out.get("meta_info") or {}).get("finish_reason")}


@pytest.mark.parametrize("turn_id", [t.id for t in load_script().turns])
def test_scripted_turn_reproduces_exactly(
    request: pytest.FixtureRequest, turn_id: str, lfm_model: ModelSpec, lfm_script: Script,
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_http: httpx.Client, lfm_tokenizer_path: str,
    lfm_sglang_version: str,
) -> None:
    """Source: the micro checkpoints' script (pytest_lfm/micro/script.json); format per Liquid's LFM2 docs."""
    turn = lfm_script.get(turn_id)
    if lfm_model.micro is None:
        pytest.skip("scripted answers exist for micro checkpoints only")
    if lfm_model.micro not in turn.checkpoints:
        pytest.skip(f"{lfm_model.id} is not trained on {turn_id}")
    note(request, SCRIPTED_TURN, {"checkpoint": lfm_model.id, "turn": turn_id})  # the report's per-checkpoint table
    sent = turn.request(lfm_model_name)
    if turn.kind == "call_text":
        raw = _raw_completion(lfm_http, lfm_client, lfm_model_name, lfm_model, turn, lfm_tokenizer_path,
                              lfm_sglang_version)
        completion = render.completion_text(turn)
        assert raw["completion"] == completion, (
            f"scripted turn {turn_id} did not reproduce (raw /generate completion)\nexpected: {completion!r}\n"
            f"got:      {raw!r}")
        return
    got = _answer(lfm_client.chat.completions.create(**sent))
    expected = {
        "reasoning_content": turn.reasoning,  # a reasoning turn's think block, which --reasoning-parser separates
        "content": turn.content or None,
        "tool_calls": [dict(c) for c in turn.tool_calls],
        "finish_reason": "tool_calls" if turn.tool_calls else "stop",
    }
    shown = {k: v for k, v in sent.items() if k != "messages"} | {"last message": sent["messages"][-1]}
    assert got == expected, (
        f"scripted turn {turn_id} did not reproduce\nrequest: {json.dumps(shown, default=str)[:1500]}\n"
        f"expected: {json.dumps(expected)}\ngot:      {json.dumps(got)}"
    )
