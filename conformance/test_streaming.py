"""Streamed chat completions: the chunk protocol and equality with the non-streamed answer."""

from __future__ import annotations

import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.micro.script import Turn

ANSWERS = checks.scripted("answer")


def _stream(client: openai.OpenAI, request: dict[str, object]) -> checks.Stream:
    return checks.assemble_stream(client.chat.completions.create(**request, stream=True))  # type: ignore[call-overload]


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_first_delta_carries_the_assistant_role(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """OpenAI streaming reference; FACTS.md (measured): the first chunk has delta.role 'assistant'."""
    request = turn.request(lfm_model_name)
    choice = _stream(lfm_client, request).only_choice()
    checks.check((choice.first_delta or {}).get("role") == "assistant" and choice.roles == ["assistant"],
                 "role of the first delta (and only the first)", request={**request, "stream": True},
                 expected="role 'assistant' in the first delta only", got=choice.first_delta)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_each_choice_gets_exactly_one_finish_chunk(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn, n: int
) -> None:
    """OpenAI streaming reference: every choice ends with one chunk carrying its finish_reason."""
    request = turn.request(lfm_model_name, n=n)
    stream = _stream(lfm_client, request)
    got = {i: c.finish_reasons for i, c in stream.choices.items()}
    checks.check(sorted(got) == list(range(n)) and all(len(r) == 1 for r in got.values()),
                 "finish chunks per choice", request={**request, "stream": True},
                 expected={i: ["stop"] for i in range(n)}, got=got)


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_include_usage_sends_one_final_usage_chunk(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """OpenAI streaming reference (stream_options.include_usage): one last chunk with usage and no choices."""
    request = turn.request(lfm_model_name, stream_options={"include_usage": True})
    stream = _stream(lfm_client, request)
    with_usage = [c for c in stream.chunks if c.get("usage")]
    ok = len(with_usage) == 1 and stream.chunks[-1] is with_usage[0] and not with_usage[0].get("choices")
    checks.check(ok, "usage chunks", request={**request, "stream": True},
                 expected="exactly one usage chunk, the last, with choices []", got=with_usage or stream.chunks[-3:])
    checks.assert_usage_adds_up(stream.usage, request=request)


@pytest.mark.parametrize("turn", ANSWERS, indirect=True)
def test_streamed_text_equals_the_non_streamed_answer(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """OpenAI streaming reference: the concatenated deltas are the answer (greedy, temperature 0)."""
    request = turn.request(lfm_model_name)
    whole = lfm_client.chat.completions.create(**request).choices[0]
    streamed = _stream(lfm_client, request).only_choice()
    checks.check((streamed.content, streamed.finish_reason) == (whole.message.content, whole.finish_reason),
                 "streamed vs non-streamed answer", request={**request, "stream": True},
                 expected=(whole.message.content, whole.finish_reason),
                 got=(streamed.content, streamed.finish_reason))


@pytest.mark.parametrize("turn", ANSWERS, indirect=True)
def test_streamed_text_contains_no_special_tokens(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """LFM2 chat template: control tokens never reach the streamed content (FACTS.md special tokens)."""
    request = turn.request(lfm_model_name)
    checks.assert_no_special_tokens(_stream(lfm_client, request).only_choice().content,
                                    request={**request, "stream": True})
