"""``/v1/completions`` with a raw prompt: the chat prompt written out as text gets the chat answer; ``max_tokens``,
``stop``, logprobs and streaming do what the OpenAI completions reference says.

What sglang 0.5.17 does, read in its source: the prompt text is tokenized with the tokenizer's special tokens
(managers/tokenizer_manager.py ``_tokenize_texts``), so the text is the checkpoint's chat template output less the BOS
the tokenizer adds itself (``prompts.raw_prompt``); ``logprobs: N`` returns each generated token's text and logprob
and the N most likely (entrypoints/openai/serving_completions.py:114-117, utils.py ``to_openai_style_logprobs``,
keyed by token text); a stop string ends the text before it.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Script, Turn
from pytest_lfm.prompts import raw_prompt

pytestmark = pytest.mark.lfm_requires("chat")
LONG_TURN = "answer-count"  # an answer longer than the cut-off requests below
CUT = 6


def _complete(client: openai.OpenAI, request: dict[str, Any]) -> Any:
    """The only choice of a completion, and its usage."""
    response = client.completions.create(**request)
    checks.check(len(response.choices) == 1, "number of choices", request=request, expected=1,
                 got=len(response.choices))
    return response.choices[0], response.usage


@pytest.fixture
def long_turn(lfm_script: Script, lfm_model: ModelSpec) -> Turn:
    return checks.scripted_turn(lfm_script, lfm_model, LONG_TURN)


def _request(turn: Turn, model_name: str, tokenizer_path: str, sglang_version: str, **overrides: Any
             ) -> tuple[dict[str, Any], int]:
    prompt, tokens = raw_prompt(tokenizer_path, turn.messages, sglang_version)
    return {"model": model_name, "prompt": prompt, "temperature": 0.0, "max_tokens": turn.max_tokens,
            **overrides}, tokens


def _chat_answer(client: openai.OpenAI, turn: Turn, model_name: str) -> str:
    """The chat answer to the turn at temperature 0: what the same prompt as raw text must get."""
    request = turn.request(model_name)
    return checks.only_choice(client.chat.completions.create(**request), request=request).message.content or ""


@pytest.mark.parametrize("turn", checks.scripted("answer"), indirect=True)
def test_raw_chat_prompt_gets_the_chat_answer(
    turn: Turn, lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, lfm_tokenizer_path: str,
    lfm_sglang_version: str,
) -> None:
    """OpenAI completions reference; the chat template's text as the prompt: the same prompt tokens as the chat
    request, so the same answer at temperature 0 (a micro checkpoint's: the script's), ending with "stop"."""
    request, tokens = _request(turn, lfm_model_name, lfm_tokenizer_path, lfm_sglang_version)
    choice, usage = _complete(lfm_client, request)
    checks.check(usage is not None and usage.prompt_tokens == tokens, "prompt_tokens of the raw chat prompt",
                 request=request, expected=tokens, got=usage)
    checks.check(choice.finish_reason == "stop", "finish_reason", request=request, expected="stop",
                 got=choice.finish_reason)
    expected = turn.content or "" if checks.exact(lfm_model) else _chat_answer(lfm_client, turn, lfm_model_name)
    checks.assert_content_equal(choice.text, expected, request=request, what="completion text")
    checks.assert_no_special_tokens(choice.text, request=request, where="completion text")


def test_max_tokens_cuts_the_text(
    long_turn: Turn, lfm_client: openai.OpenAI, lfm_model_name: str, lfm_tokenizer_path: str,
    lfm_sglang_version: str,
) -> None:
    """OpenAI completions reference (max_tokens): CUT tokens, finish_reason "length", the start of the full text."""
    full_request, _ = _request(long_turn, lfm_model_name, lfm_tokenizer_path, lfm_sglang_version)
    full, _ = _complete(lfm_client, full_request)
    request, _ = _request(long_turn, lfm_model_name, lfm_tokenizer_path, lfm_sglang_version, max_tokens=CUT)
    choice, usage = _complete(lfm_client, request)
    checks.check(choice.finish_reason == "length", "finish_reason", request=request, expected="length",
                 got=choice.finish_reason)
    checks.check(usage is not None and usage.completion_tokens == CUT, "completion_tokens", request=request,
                 expected=CUT, got=usage)
    checks.check(bool(choice.text) and full.text.startswith(choice.text), "the cut text", request=request,
                 expected=f"a start of {full.text!r}", got=choice.text)


def test_stop_string_ends_the_text_before_it(
    long_turn: Turn, lfm_client: openai.OpenAI, lfm_model_name: str, lfm_tokenizer_path: str,
    lfm_sglang_version: str,
) -> None:
    """OpenAI completions reference (stop): the text ends before the first stop string, finish_reason "stop". The stop
    string is a word from the middle of the full answer."""
    full_request, _ = _request(long_turn, lfm_model_name, lfm_tokenizer_path, lfm_sglang_version)
    full = _complete(lfm_client, full_request)[0].text
    words = full.split()
    if len(words) < 3:
        pytest.skip(f"the full answer has fewer than three words to stop at: {full!r}")
    stop = words[len(words) // 2]
    request, _ = _request(long_turn, lfm_model_name, lfm_tokenizer_path, lfm_sglang_version, stop=[stop])
    choice, _ = _complete(lfm_client, request)
    checks.check(choice.finish_reason == "stop", "finish_reason", request=request, expected="stop",
                 got=choice.finish_reason)
    checks.assert_content_equal(choice.text, full[:full.index(stop)], request=request, what="text before the stop")


def test_logprobs_describe_the_greedy_tokens(
    long_turn: Turn, lfm_client: openai.OpenAI, lfm_model_name: str, lfm_tokenizer_path: str,
    lfm_sglang_version: str,
) -> None:
    """OpenAI completions reference (logprobs: N): one token, logprob and top-N map per generated token; the tokens
    spell the text; at temperature 0 each token is the most likely of its top-N."""
    top = 3
    request, _ = _request(long_turn, lfm_model_name, lfm_tokenizer_path, lfm_sglang_version, max_tokens=CUT,
                          logprobs=top)
    choice, usage = _complete(lfm_client, request)
    lp = choice.logprobs
    checks.check(lp is not None and len(lp.tokens or []) == CUT == len(lp.token_logprobs or [])
                 == len(lp.top_logprobs or []), "logprobs per generated token", request=request,
                 expected=f"{CUT} tokens, logprobs and top_logprobs", got=lp)
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    checks.check("".join(lp.tokens) == choice.text, "logprobs tokens spell the text", request=request,
                 expected=choice.text, got=lp.tokens)
    for i, (token, logprob, tops) in enumerate(zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True)):
        checks.check(logprob <= 1e-6, f"token {i} logprob", request=request, expected="<= 0", got=logprob)
        checks.check(isinstance(tops, dict) and 1 <= len(tops) <= top, f"token {i} top_logprobs", request=request,
                     expected=f"1 to {top} tokens", got=tops)
        checks.check(logprob >= max(tops.values()) - 1e-3, f"token {i} is the most likely (temperature 0)",
                     request=request, expected=f"logprob {max(tops.values())} of {tops}", got=f"{token!r}: {logprob}")
    checks.check(usage is not None and usage.completion_tokens == CUT, "completion_tokens", request=request,
                 expected=CUT, got=usage)


def test_streamed_completion_is_the_completion(
    long_turn: Turn, lfm_client: openai.OpenAI, lfm_model_name: str, lfm_tokenizer_path: str,
    lfm_sglang_version: str,
) -> None:
    """OpenAI completions reference (stream): the chunks' texts join to the non-streamed text; the last chunk with a
    choice carries the finish reason."""
    request, _ = _request(long_turn, lfm_model_name, lfm_tokenizer_path, lfm_sglang_version)
    whole = _complete(lfm_client, request)[0]
    text, finish, chunks = "", None, 0
    for chunk in lfm_client.completions.create(**request, stream=True):
        for choice in chunk.choices:
            chunks += 1
            text += choice.text or ""
            finish = choice.finish_reason or finish
    checks.check(chunks > 1, "streamed chunks", request=request, expected="more than one", got=chunks)
    checks.assert_content_equal(text, whole.text, request=request, what="streamed text")
    checks.check(finish == whole.finish_reason, "streamed finish_reason", request=request,
                 expected=whole.finish_reason, got=finish)
