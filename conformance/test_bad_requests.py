"""Bad chat requests: each gets a 4xx whose message names what is wrong, never a 5xx, and the server keeps serving.

What sglang 0.5.17 answers, read in its source: a body that is not JSON or does not fit the pydantic models of
entrypoints/openai/protocol.py is a RequestValidationError, answered 400 (http_server.py:581-620); what
serving_chat.py ``_validate_request`` refuses is 400 (798-872); a ValueError while the request is tokenized
(sampling_params.py ``verify``: 151-192) is 400 (serving_chat.py:1713-1714); any other exception is 500
(serving_base.py:127-133). The requests are sent as raw JSON (``lfm_http``), as a client that does not check them
would send them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Script, Turn

CHAT = "/v1/chat/completions"
# each bad request is a scripted chat turn changed, and the answer after it a scripted chat turn: models that claim chat
pytestmark = pytest.mark.lfm_requires("chat")
UNKNOWN_MODEL = "no-such-model"
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}
CALLED = [{"role": "user", "content": "What is the weather in Paris?"},
          {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
              "name": "get_weather", "arguments": json.dumps({"location": "Paris"})}}]}]


@dataclass(frozen=True)
class Bad:
    """One bad request: what it changes in a scripted plain request (or the raw body it sends instead), the word
    its error message must name, and where sglang 0.5.17 is known not to refuse it as it should."""

    id: str
    changes: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None
    names: str = ""  # a regular expression the error message must match (case-insensitive)
    known: str | None = None  # why sglang 0.5.17 fails the check: an xfail reason

    def body(self, model_name: str, turn: Turn) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps({**turn.request(model_name, max_tokens=8), **self.changes}).encode()


CASES = [
    Bad("invalid-json", raw=b'{"model": "m", "messages": [{"role": "user", "content": "Say hello."}', names=r"json"),
    Bad("empty-messages", {"messages": []}, names=r"\bmessages\b"),
    Bad("unknown-role", {"messages": [{"role": "wizard", "content": "Say hello."}]}, names=r"\brole\b"),
    Bad("content-not-text", {"messages": [{"role": "user", "content": 42}]}, names=r"\bcontent\b"),
    Bad("max-tokens-zero", {"max_tokens": 0}, names=r"max_(new_|completion_)?tokens",
        known="sglang 0.5.17 serves max_tokens 0: it passes `max_completion_tokens or max_tokens` on as 0 "
              "(protocol.py:1013) and verify allows it (sampling_params.py:183-187)"),
    Bad("max-tokens-negative", {"max_tokens": -1}, names=r"max_(new_|completion_)?tokens"),
    Bad("n-zero", {"n": 0}, names=r"\bn\b",
        known="sglang 0.5.17 does not check n: n=0 generates, then building the response fails with "
              "'range() arg 3 must not be zero' (serving_chat.py:1861-1864), a 400 that does not name n"),
    Bad("top-logprobs-over-20", {"logprobs": True, "top_logprobs": 21}, names=r"top_logprobs",
        known="sglang 0.5.17 has no bound on top_logprobs (protocol.py:748; OpenAI allows 0 to 20)"),
    Bad("negative-temperature", {"temperature": -1.0}, names=r"temperature"),
    Bad("tool-parameters-not-a-schema", {"tools": [{**TOOL, "function": {**TOOL["function"], "parameters": "city"}}]},
        names=r"parameters"),
    Bad("tool-parameters-not-an-object", {"tools": [{**TOOL, "function": {**TOOL["function"],
                                                                           "parameters": {"type": "string"}}}]},
        names=r"parameters",
        known="sglang 0.5.17 checks that parameters is a valid JSON schema, not that it is an object schema "
              "(serving_chat.py:837-848; OpenAI: 'described as a JSON Schema object')"),
    Bad("tool-result-for-unknown-call", {"tools": [TOOL], "messages": [
        *CALLED, {"role": "tool", "tool_call_id": "call_999", "content": "Sunny, 21 C."}]},
        names=r"tool_call_id|call_999",
        known="sglang 0.5.17 never matches a tool result's tool_call_id to the calls before it "
              "(serving_chat.py renders the messages as sent)"),
]


def _params(cases: list[Bad]) -> list[Any]:
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=False, reason=c.known)] if c.known else [])
            for c in cases]


def _post(http: httpx.Client, body: bytes) -> httpx.Response:
    return http.post(CHAT, content=body, headers={"content-type": "application/json"})


def _message(response: httpx.Response) -> str:
    """The error message of an OpenAI-style error body (sglang's ``{"message"}`` or OpenAI's ``{"error":
    {"message"}}``), "" when there is none."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    nested = body.get("error")
    message = nested.get("message") if isinstance(nested, dict) else body.get("message")
    return message if isinstance(message, str) else ""


@pytest.fixture
def plain(lfm_script: Script) -> Turn:
    """The scripted plain request a bad request is made from."""
    return lfm_script.get(checks.scripted("answer")[0])


@pytest.mark.parametrize("bad", _params(CASES))
def test_bad_request_gets_a_4xx_naming_what_is_wrong(
    bad: Bad, lfm_http: httpx.Client, lfm_model_name: str, plain: Turn,
) -> None:
    """OpenAI API reference (errors: 400 for an invalid request); sglang 0.5.17 http_server.py:581-620 (400)."""
    body = bad.body(lfm_model_name, plain)
    request = f"POST {CHAT} {body.decode()}"
    response = _post(lfm_http, body)
    message = _message(response)
    checks.check(400 <= response.status_code < 500, "HTTP status of a bad request", request=request,
                 expected="a 4xx (the client's error), never a 5xx or 200",
                 got=f"{response.status_code}: {response.text}")
    checks.check(re.search(bad.names, message, re.IGNORECASE) is not None, "the error message", request=request,
                 expected=f"a message naming what is wrong (matching {bad.names!r})", got=response.text)


@pytest.mark.parametrize("bad", [pytest.param(c, id=c.id) for c in CASES])
def test_server_answers_after_a_bad_request(
    bad: Bad, lfm_http: httpx.Client, lfm_model_name: str, plain: Turn, check_still_serving: Callable[[str], None],
) -> None:
    """A bad request is the client's error: the server answers the next request as before (sglang answers it 400)."""
    _post(lfm_http, bad.body(lfm_model_name, plain))
    check_still_serving(f"a bad request ({bad.id})")


def test_unknown_model_name_is_served_under_that_name(
    lfm_client: openai.OpenAI, lfm_model: ModelSpec, plain: Turn,
) -> None:
    """sglang 0.5.17 serves any ``model`` name (only 'base:adapter' picks a LoRA adapter: serving_base.py:40-71)
    and names the response after the request (serving_chat.py:1885): the scripted answer, under that name."""
    request = plain.request(UNKNOWN_MODEL)
    response = lfm_client.chat.completions.create(**request)
    choice = checks.only_choice(response, request=request)
    checks.check(response.model == UNKNOWN_MODEL, "the response's model", request=request, expected=UNKNOWN_MODEL,
                 got=response)
    checks.assert_finish_reason(choice, "stop", request=request)
    if checks.exact(lfm_model):
        checks.check(choice.message.content == plain.content, "answer", request=request, expected=plain.content,
                     got=choice.message.content)
