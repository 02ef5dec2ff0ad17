"""Comparing answers (pytest_lfm.answers) and building prompts to a size or as token ids (pytest_lfm.prompts)."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from pytest_lfm import answers, checks, micro, prompts
from pytest_lfm.micro.render import prompt_token_count
from pytest_lfm.micro.script import load_script


def _response(content: str | None, calls: tuple[tuple[str, str, str], ...] = (), finish: str = "stop",
              logprobs: list[tuple[str, dict[str, float]]] | None = None) -> ChatCompletion:
    tool_calls = [{"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
                  for call_id, name, args in calls] or None
    entries = None if logprobs is None else {"content": [
        {"token": token, "logprob": alts[token], "bytes": None,
         "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in alts.items()]}
        for token, alts in logprobs]}
    return ChatCompletion.model_validate({
        "id": "r", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": finish, "logprobs": entries,
                     "message": {"role": "assistant", "content": content, "tool_calls": tool_calls}}]})


def _chunk(delta: dict[str, Any], finish: str | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def test_an_answer_is_its_text_calls_and_finish_not_its_call_ids_or_key_order() -> None:
    one = answers.answer_of(_response(None, (("id1", "get_weather", '{"a": 1, "b": 2}'),), "tool_calls"))
    other = answers.answer_of(_response("", (("id2", "get_weather", '{"b": 2, "a": 1}'),), "tool_calls"))
    assert one == other == answers.Answer("", (("get_weather", '{"a": 1, "b": 2}'),), "tool_calls")
    streamed = answers.streamed_answer(checks.assemble_stream([
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"tool_calls": [{"index": 0, "id": "x", "function": {"name": "get_weather", "arguments": '{"b": 2,'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "a": 1}'}}]}),
        _chunk({}, "tool_calls")]))
    assert streamed == one
    assert answers.answer_of(_response("Hi.")) != answers.answer_of(_response("Hi.", finish="length"))


def test_differing_answers_are_grouped_per_request_whatever_the_order_they_came_in() -> None:
    a, b = {"messages": "a"}, {"messages": "b"}
    requests = [a, b, a, a]
    good, bad = answers.Answer("A", (), "stop"), answers.Answer("A!", (), "stop")
    solo = {answers.key(a): good, answers.key(b): answers.Answer("B", (), "stop")}
    reports = []
    for got in set(itertools.permutations([good, good, bad])):  # the three answers of request a, in any order
        replies = [got[0], solo[answers.key(b)], got[1], got[2]]
        reports.append(answers.differing(requests, replies, solo, label=lambda r: r["messages"]))
    assert all(report == reports[0] for report in reports)
    (entry,) = reports[0]
    assert entry["request"] == "a" and entry["differ"] == "1 of 3" and entry["together"] == [bad.as_dict()]
    assert answers.differing(requests, [good, solo[answers.key(b)], good, good], solo) == []


def test_greedy_answers_part_only_where_rounding_could_decide() -> None:
    def greedy(*steps: tuple[str, dict[str, float]], finish: str = "length") -> answers.Greedy:
        return answers.greedy_of(_response("".join(t for t, _ in steps), finish=finish, logprobs=list(steps)))

    first = ("A", {"A": -0.1, "B": -2.0})
    assert answers.parting(greedy(first, ("x", {"x": -0.5, "y": -0.6})),
                           greedy(first, ("x", {"x": -0.5, "y": -0.6})), 0.25) is None
    near = answers.parting(greedy(first, ("x", {"x": -0.50, "y": -0.55})),
                           greedy(first, ("y", {"y": -0.50, "x": -0.56})), 0.25)
    assert near is None
    far = answers.parting(greedy(first, ("x", {"x": -0.1, "y": -3.0})), greedy(first, ("y", {"y": -0.1, "x": -3.0})),
                          0.25)
    assert far is not None and "token 1" in far
    assert answers.parting(greedy(first, finish="stop"), greedy(first, finish="length"), 0.25) is not None
    assert answers.parting(greedy(first), greedy(first, ("x", {"x": -0.1})), 0.25) is not None


def test_flush_cache_passes_on_sglangs_reply_and_fails_on_a_refusal() -> None:
    def server(status: int, text: str) -> httpx.Client:
        def handler(request: httpx.Request) -> httpx.Response:
            assert request.url.path == "/flush_cache" and request.url.params["timeout"] == str(answers.FLUSH_WAIT_S)
            return httpx.Response(status, text=text)
        return httpx.Client(base_url="http://s", transport=httpx.MockTransport(handler))

    answers.flush_cache(server(200, "Cache flushed.\nPlease check backend logs for more details.\n"))
    with pytest.raises(pytest.fail.Exception, match="Timed out waiting for idle state"):
        answers.flush_cache(server(400, "Timed out waiting for idle state."))


def test_prompt_ids_count_as_the_prompt_token_count_and_fill_to_a_length() -> None:
    path = str(micro.tokenizer_dir("dense"))
    turn = next(t for t in load_script().turns if t.kind == "call")
    ids = prompts.prompt_ids(path, turn.messages, turn.tools, "0.5.17")
    assert len(ids) == prompt_token_count(path, turn.messages, turn.tools, "0.5.17")
    assert ids[:1] == prompts.text_ids(path, "<|startoftext|>")
    messages, length = prompts.filled_messages(path, 1000, "0.5.17")
    assert length == len(prompts.prompt_ids(path, messages, None, "0.5.17"))
    sentence = len(prompts.text_ids(path, prompts.FILLER))
    assert 1000 - 2 * sentence < length <= 1000 and messages[0]["content"].endswith(prompts.QUESTION)
    with pytest.raises(ValueError, match="cannot fill"):
        prompts.filled_messages(path, 5, "0.5.17")
