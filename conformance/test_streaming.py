"""Streamed chat completions: the chunk protocol and equality with the non-streamed answer."""

from __future__ import annotations

import json
import math

import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from pytest_lfm import checks
from pytest_lfm.matrix import FLOAT16_VARIANT, STREAM_INTERVAL
from pytest_lfm.micro.script import Turn, load_script
from pytest_lfm.settings import Settings

pytestmark = pytest.mark.lfm_requires("chat")
ANSWERS = checks.scripted("answer")
LONGEST_ANSWER = max((t for t in load_script().turns if t.kind == "answer"), key=lambda t: len(t.content or "")).id


def _stream(client: openai.OpenAI, request: dict[str, object]) -> checks.Stream:
    return checks.assemble_stream(client.chat.completions.create(**request, stream=True))  # type: ignore[call-overload]


def _stream_with_events(client: openai.OpenAI, request: dict[str, object]) -> tuple[checks.Stream, list[str]]:
    """The stream read through the openai client's streaming-response API, which shows the server-sent events the
    chunk iterator hides (it stops at ``data: [DONE]`` without yielding it, and ends as quietly without it): the
    chunks assembled as ``_stream`` does, and the data of every event, in order."""
    events: list[str] = []
    data: list[str] = []
    create = client.chat.completions.with_streaming_response.create
    with create(**request, stream=True) as response:  # type: ignore[call-overload]
        for line in response.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif not line and data:
                events.append("\n".join(data))
                data = []
    if data:
        events.append("\n".join(data))
    chunks = [ChatCompletionChunk.construct(**json.loads(e)) for e in events if e != "[DONE]"]
    return checks.assemble_stream(chunks), events


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_first_delta_carries_the_assistant_role(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """OpenAI streaming reference; docs/facts.md: the first chunk has delta.role 'assistant'.

    And the stream's framing, read as server-sent events: it ends with ``data: [DONE]`` (OpenAI streaming
    reference: "the stream is terminated by a data: [DONE] message"; sglang 0.5.17 sends it, H100 recordings in
    docs/gpu-runs), nothing after it, and every chunk carries the completion's id (OpenAI chat completion chunk
    object: "Each chunk has the same ID"; sglang sends one id per n=1 stream)."""
    request = turn.request(lfm_model_name)
    stream, events = _stream_with_events(lfm_client, request)
    choice = stream.only_choice()
    checks.check((choice.first_delta or {}).get("role") == "assistant" and choice.roles == ["assistant"],
                 "role of the first delta (and only the first)", request={**request, "stream": True},
                 expected="role 'assistant' in the first delta only", got=choice.first_delta)
    checks.check(events[-1:] == ["[DONE]"] and events.count("[DONE]") == 1, "end of the stream",
                 request={**request, "stream": True}, expected="data: [DONE] as the last event, once",
                 got=events[-3:])
    ids = list(dict.fromkeys(c.get("id") for c in stream.chunks))
    checks.check(len(ids) == 1 and bool(ids[0]), "ids of the stream's chunks", request={**request, "stream": True},
                 expected="one non-empty id shared by every chunk", got=ids)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_each_choice_gets_exactly_one_finish_chunk(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn, n: int
) -> None:
    """OpenAI streaming reference: every choice ends with one chunk carrying its finish_reason, "stop" for a scripted
    answer that ends within max_tokens."""
    request = turn.request(lfm_model_name, n=n)
    stream = _stream(lfm_client, request)
    got = {i: c.finish_reasons for i, c in stream.choices.items()}
    checks.check(got == {i: ["stop"] for i in range(n)}, "finish chunks per choice",
                 request={**request, "stream": True}, expected={i: ["stop"] for i in range(n)}, got=got)


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_include_usage_sends_one_final_usage_chunk(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """OpenAI streaming reference (stream_options.include_usage): one last chunk with usage and no choices; it
    carries the completion's id like every other chunk (OpenAI chat completion chunk object: "Each chunk has the
    same ID"; sglang 0.5.17 sends one id per n=1 stream, the usage chunk's included).

    Not checked for n=2: sglang 0.5.17 gives each choice of an n=2 stream its own id (``<request>_<choice>``,
    the last finish chunk of choice 1 with choice 0's), H100 recordings in docs/gpu-runs."""
    request = turn.request(lfm_model_name, stream_options={"include_usage": True})
    stream = _stream(lfm_client, request)
    ids = list(dict.fromkeys(c.get("id") for c in stream.chunks))
    checks.check(len(ids) == 1 and bool(ids[0]), "ids of the stream's chunks", request={**request, "stream": True},
                 expected="one non-empty id shared by every chunk, the usage chunk's included", got=ids)
    with_usage = [c for c in stream.chunks if c.get("usage")]
    ok = len(with_usage) == 1 and stream.chunks[-1] is with_usage[0] and not with_usage[0].get("choices")
    checks.check(ok, "usage chunks", request={**request, "stream": True},
                 expected="exactly one usage chunk, the last, with choices []", got=with_usage or stream.chunks[-3:])
    checks.assert_usage_adds_up(stream.usage, request=request)


@pytest.mark.parametrize("turn", ANSWERS, indirect=True)
def test_streamed_usage_equals_the_non_streamed_usage(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """OpenAI streaming reference (include_usage: "the token usage statistics for the entire request") for a greedy
    request: prompt_tokens, completion_tokens and total_tokens equal those of the same request not streamed."""
    request = turn.request(lfm_model_name)
    whole = lfm_client.chat.completions.create(**request).usage
    stream = _stream(lfm_client, {**request, "stream_options": {"include_usage": True}})
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    want = {k: getattr(whole, k) for k in keys} if whole is not None else None
    got = {k: getattr(stream.usage, k) for k in keys} if stream.usage is not None else None
    checks.check(want is not None and got == want, "streamed usage vs the non-streamed usage of the same request",
                 request={**request, "stream": True, "stream_options": {"include_usage": True}},
                 expected=f"{want} (non-streamed usage: {checks.show(whole)})",
                 got=f"{got} (usage chunks: {checks.show(stream.usage_chunks)})")


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
    """LFM2 chat template: control tokens never reach the streamed content (docs/facts.md special tokens)."""
    request = turn.request(lfm_model_name)
    checks.assert_no_special_tokens(_stream(lfm_client, request).only_choice().content,
                                    request={**request, "stream": True})


@pytest.mark.lfm_launch(**FLOAT16_VARIANT)
@pytest.mark.parametrize("turn", [LONGEST_ANSWER], indirect=True)
def test_stream_interval_sends_several_tokens_per_chunk(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_settings: Settings, turn: Turn
) -> None:
    """sglang --stream-interval N (scheduler_components/output_streamer.py): the output goes out after the first token
    and then every N tokens, so T tokens come in at most 1 + ceil((T - 1) / N) chunks with content, fewer than T."""
    if lfm_settings.base_url:
        pytest.skip("the --stream-interval of a server started elsewhere is not known here")
    request = {**turn.request(lfm_model_name), "stream_options": {"include_usage": True}}
    stream = _stream(lfm_client, request)
    tokens = stream.usage.completion_tokens if stream.usage is not None else 0
    if tokens < 3:
        pytest.skip(f"{tokens} completion tokens cannot show chunks of several tokens")
    with_content = [c for c in stream.chunks if any(p.get("delta", {}).get("content") for p in c.get("choices", ()))]
    most = 1 + math.ceil((tokens - 1) / STREAM_INTERVAL)
    checks.check(len(with_content) <= most and len(with_content) < tokens, "chunks with content",
                 request={**request, "stream": True},
                 expected=f"at most {most} for {tokens} tokens at --stream-interval {STREAM_INTERVAL}",
                 got=f"{len(with_content)}: {checks.show(with_content)}")
