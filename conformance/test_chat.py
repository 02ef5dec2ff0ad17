"""Chat completions: the OpenAI response contract, token accounting and sampling controls (concurrency and the prefix
cache: test_concurrency.py, test_prefix_cache.py)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Turn
from pytest_lfm.runtime import served

pytestmark = pytest.mark.lfm_requires("chat")
ANSWERS = checks.scripted("answer")
LONG_ANSWER = "answer-count"  # the script's longest plain answer: room for max_tokens and stop strings to cut


def _create(client: openai.OpenAI, request: dict[str, Any]) -> Any:
    return client.chat.completions.create(**request)


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_response_has_the_openai_chat_completion_shape(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """OpenAI API reference (chat.completion object), as Liquid's SGLang page serves it."""
    request = turn.request(lfm_model_name)
    response = _create(lfm_client, request)
    message = response.choices[0].message if response.choices else None
    shape = {"object": response.object, "model": response.model, "choice_indexes": [c.index for c in response.choices],
             "role": message and message.role, "content_is_text": isinstance(message and message.content, str)}
    checks.check(bool(response.id) and isinstance(response.created, int) and shape == {
        "object": "chat.completion", "model": lfm_model_name, "choice_indexes": [0], "role": "assistant",
        "content_is_text": True}, "chat.completion shape", request=request,
        expected="id, created, object 'chat.completion', the requested model, one choice 0 with an assistant string",
        got=response)


@pytest.mark.parametrize("turn", ANSWERS, indirect=True)
def test_usage_total_is_prompt_plus_completion(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """OpenAI API reference (usage object)."""
    request = turn.request(lfm_model_name)
    checks.assert_usage_adds_up(_create(lfm_client, request).usage, request=request)


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_prompt_tokens_equal_the_prompt_as_the_running_sglang_renders_it(
    request: pytest.FixtureRequest, lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec,
    lfm_sglang_version: str, turn: Turn,
) -> None:
    """docs/facts.md: sglang renders the chat template itself; prompt_tokens is that rendering's length."""
    checks.check_prompt_tokens(request, lfm_client, turn.request(lfm_model_name), turn, lfm_model,
                               lfm_sglang_version, "the chat template")


@pytest.mark.parametrize("turn", ANSWERS, indirect=True)
def test_answer_is_the_scripted_one(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """The script (pytest_lfm/micro/script.json): exact for micro checkpoints, a non-empty answer for real models."""
    request = turn.request(lfm_model_name)
    choice = checks.only_choice(_create(lfm_client, request), request=request)
    checks.assert_finish_reason(choice, "stop", request=request)
    if checks.exact(lfm_model):
        checks.check(choice.message.content == turn.content, "answer", request=request, expected=turn.content,
                     got=choice.message.content)
    else:
        checks.check(bool((choice.message.content or "").strip()), "answer", request=request,
                     expected="a non-empty answer", got=choice.message)


@pytest.mark.parametrize("turn", ANSWERS, indirect=True)
def test_answer_contains_no_special_tokens(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """LFM2 chat template: <|im_end|> ends the turn and is never part of the content (docs/facts.md special tokens)."""
    request = turn.request(lfm_model_name)
    choice = checks.only_choice(_create(lfm_client, request), request=request)
    checks.assert_no_special_tokens(choice.message.content, request=request)


@pytest.mark.parametrize("turn", [LONG_ANSWER], indirect=True)
def test_max_tokens_cuts_the_answer_with_finish_length(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """OpenAI API reference: finish_reason 'length' when max_tokens ends generation."""
    request = turn.request(lfm_model_name, max_tokens=4)
    response = _create(lfm_client, request)
    choice = checks.only_choice(response, request=request)
    checks.assert_finish_reason(choice, "length", request=request)
    checks.check(response.usage is not None and response.usage.completion_tokens == 4, "completion_tokens",
                 request=request, expected=4, got=response.usage)
    checks.assert_no_special_tokens(choice.message.content, request=request)


@pytest.mark.parametrize("turn", [LONG_ANSWER], indirect=True)
def test_stop_string_ends_the_answer_before_it_with_finish_stop(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """OpenAI API reference (stop): the text ends before the stop string, finish_reason 'stop'."""
    plain = turn.request(lfm_model_name)
    full = checks.only_choice(_create(lfm_client, plain), request=plain).message.content or ""
    words = full.split()
    if len(words) < 4:
        pytest.skip(f"the answer is too short to cut with a stop string: {full!r}")
    stop = words[len(words) // 2]
    request = turn.request(lfm_model_name, stop=[stop])
    choice = checks.only_choice(_create(lfm_client, request), request=request)
    checks.assert_finish_reason(choice, "stop", request=request)
    checks.check(choice.message.content == full[:full.index(stop)], "content with a stop string", request=request,
                 expected=full[:full.index(stop)], got=choice.message.content)
    checks.assert_no_special_tokens(choice.message.content, request=request)


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_n_returns_n_indexed_choices(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """OpenAI API reference (n): n choices with indexes 0..n-1, each a finished answer."""
    request = turn.request(lfm_model_name, n=2)
    response = _create(lfm_client, request)
    got = [(c.index, c.finish_reason, bool((c.message.content or "").strip())) for c in response.choices]
    checks.check(sorted(got) == [(0, "stop", True), (1, "stop", True)], "choices for n=2", request=request,
                 expected="choices 0 and 1, each finish 'stop' with content", got=response)
    if checks.exact(lfm_model):
        checks.check(all(c.message.content == turn.content for c in response.choices), "greedy choices",
                     request=request, expected=turn.content, got=response)


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_logprobs_cover_every_generated_token(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """OpenAI API reference (logprobs): one entry per output token (an EOS token may be left out)."""
    request = turn.request(lfm_model_name, logprobs=True)
    response = _create(lfm_client, request)
    choice = checks.only_choice(response, request=request)
    entries = choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
    completion = response.usage.completion_tokens if response.usage else -1
    checks.check(len(entries) in (completion, completion - 1) and all(e.logprob <= 0 for e in entries),
                 "logprobs entries", request=request,
                 expected=f"{completion} (or {completion - 1}) entries with logprob <= 0", got=choice.logprobs)


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_top_logprobs_lists_the_requested_number_of_alternatives(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """OpenAI API reference (top_logprobs)."""
    request = turn.request(lfm_model_name, logprobs=True, top_logprobs=3)
    choice = checks.only_choice(_create(lfm_client, request), request=request)
    entries = choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
    counts = [len(e.top_logprobs) for e in entries]
    checks.check(bool(entries) and set(counts) == {3}, "top_logprobs per token", request=request,
                 expected="3 alternatives for every token", got=counts)


@pytest.mark.parametrize("turn", ANSWERS[:1], indirect=True)
def test_greedy_token_is_the_most_likely_alternative(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """Greedy decoding (temperature 0) picks the argmax: its logprob is the highest of top_logprobs."""
    request = turn.request(lfm_model_name, logprobs=True, top_logprobs=3)
    choice = checks.only_choice(_create(lfm_client, request), request=request)
    entries = choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
    worse = [(e.token, e.logprob, [(t.token, t.logprob) for t in e.top_logprobs]) for e in entries
             if e.top_logprobs and e.logprob < max(t.logprob for t in e.top_logprobs) - 1e-3]
    checks.check(bool(entries) and not worse, "sampled token vs top_logprobs at temperature 0", request=request,
                 expected="every sampled token is the most likely one", got=worse or choice.logprobs)


@pytest.mark.parametrize("turn", ANSWERS, indirect=True)
def test_temperature_zero_is_deterministic(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """Greedy decoding: the same request gives the same answer (sglang deterministic sampling at temperature 0)."""
    request = turn.request(lfm_model_name)
    answers = [_create(lfm_client, request).choices[0].message.content for _ in range(3)]
    checks.check(len(set(answers)) == 1, "three identical requests at temperature 0", request=request,
                 expected="three equal answers", got=answers)


def test_prompt_longer_than_the_context_is_rejected_with_400(
    lfm_client: openai.OpenAI, lfm_model_name: str, served_launch: served.ServedLaunch
) -> None:
    """docs/facts.md: HTTP 400 "The input (N tokens) is longer than the model's context length", not a 500, for a
    prompt longer than the launch's context (its --context-length, else the checkpoint's configured one)."""
    context = served_launch.context_length
    assert context is not None  # served_launch fills it in or skips
    request = {"model": lfm_model_name, "max_tokens": 4,
               "messages": [{"role": "user", "content": "hello " * (context + 64)}]}
    checks.expect_http_error(lambda: _create(lfm_client, request), 400, request=request,
                             mentions="longer than the model's context length")


def test_models_endpoint_lists_the_served_model(lfm_http: httpx.Client, served_launch: served.ServedLaunch) -> None:
    """docs/facts.md: GET /v1/models -> data[0] is what the launch serves: id its --served-model-name (else its
    --model-path), max_model_len its --context-length (else the checkpoint's configured context)."""
    body = lfm_http.get("/v1/models").json()
    entry = body["data"][0] if isinstance(body, dict) and body.get("data") else {}
    got = {"id": entry.get("id"), "max_model_len": entry.get("max_model_len")}
    expected = {"id": served_launch.name, "max_model_len": served_launch.context_length}
    checks.check(got == expected and type(got["max_model_len"]) is int, "/v1/models vs the launch",
                 request="GET /v1/models",
                 expected=f"{expected} (name from {served_launch.source}; context from "
                          f"{served_launch.context_source})", got=body)
