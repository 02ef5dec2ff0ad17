"""Structured output: ``response_format`` json_object / json_schema and sglang's ``regex`` / ``ebnf`` constraints,
streamed and not; the grammar backend they ran on goes into the report.

What sglang 0.5.17 does, read in its source: a json_schema response format is passed on as the ``json_schema``
constraint and json_object as the schema ``{"type": "object"}`` (entrypoints/openai/protocol.py:1036-1047); ``regex``
and ``ebnf`` go on as sent (protocol.py:1024-1025); the grammar backend is xgrammar unless ``--grammar-backend`` says
otherwise (server_args.py:5948-5949) and GET /get_server_info names it. xgrammar's JSON grammar allows any whitespace
between tokens (constrained/xgrammar_backend.py:207, 336-337), so only a model that knows the answer ends an open
object: the prompt is a scripted turn whose answer is a JSON object, and the schema is closed (an enum, no other
properties). The regex and the grammar are finite, so every model must end them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Script, Turn
from pytest_lfm.report import note
from pytest_lfm.report.notes import GRAMMAR_BACKEND

pytestmark = pytest.mark.lfm_requires("chat")
JSON_TURN = "answer-json"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
          "required": ["answer"], "additionalProperties": False}
FORMATS: dict[str, dict[str, Any]] = {
    "json_schema": {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}},
    "json_object": {"type": "json_object"},
}
CONSTRAINTS: dict[str, tuple[dict[str, Any], str]] = {
    "regex": ({"regex": "(yes|no)"}, r"(yes|no)"),
    "ebnf": ({"ebnf": 'root ::= "yes" | "no"'}, r"(yes|no)"),
}
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])


@pytest.fixture
def json_turn(lfm_script: Script, lfm_model: ModelSpec) -> Turn:
    """The scripted question whose answer is a JSON object."""
    return checks.scripted_turn(lfm_script, lfm_model, JSON_TURN)


@pytest.fixture
def grammar_backend(request: pytest.FixtureRequest, lfm_http: httpx.Client) -> str:
    """The server's grammar backend (GET /get_server_info ``grammar_backend``), noted in the report."""
    backend = str(lfm_http.get("/get_server_info").json().get("grammar_backend") or "not reported")
    note(request, GRAMMAR_BACKEND, backend)
    return backend


def _ask(client: openai.OpenAI, request: dict[str, Any], *, stream: bool) -> tuple[str, str | None]:
    """The content and finish reason of a request, streamed or not."""
    if not stream:
        choice = checks.only_choice(client.chat.completions.create(**request), request=request)
        return choice.message.content or "", choice.finish_reason
    streamed = checks.assemble_stream(client.chat.completions.create(**request, stream=True)).only_choice()
    return streamed.content, streamed.finish_reason


@STREAM
@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_response_format_gives_a_json_object(
    kind: str, stream: bool, json_turn: Turn, grammar_backend: str, lfm_client: openai.OpenAI, lfm_model_name: str,
    lfm_model: ModelSpec,
) -> None:
    """OpenAI API reference (response_format); sglang 0.5.17 protocol.py:1036-1047. The answer ends ("stop"),
    parses as a JSON object and, for json_schema, validates against the schema; a micro checkpoint's is its
    scripted answer (the constraint allows every token of it)."""
    request = json_turn.request(lfm_model_name, max_tokens=128, response_format=FORMATS[kind])
    content, finish = _ask(lfm_client, request, stream=stream)
    what = f"{kind} output on {grammar_backend}"
    checks.check(finish == "stop", f"finish_reason of {what}", request=request, expected="stop", got=finish)
    try:
        value = json.loads(content)
    except ValueError as exc:
        checks.fail(what, request=request, expected="a JSON object", got=f"{content!r}: {exc}")
    checks.check(isinstance(value, dict), what, request=request, expected="a JSON object", got=content)
    if kind == "json_schema":
        try:
            jsonschema.validate(value, SCHEMA)
        except jsonschema.ValidationError as exc:
            checks.fail(what, request=request, expected=f"JSON valid against {SCHEMA}", got=f"{content!r}: {exc}")
    if checks.exact(lfm_model):
        checks.assert_content_equal(content, json_turn.content or "", request=request, what=what)


@STREAM
@pytest.mark.parametrize("kind", sorted(CONSTRAINTS))
def test_grammar_constraint_is_obeyed(
    kind: str, stream: bool, json_turn: Turn, grammar_backend: str, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """sglang 0.5.17 protocol.py:1024-1025 (``regex`` / ``ebnf`` sampling constraints, sent in extra_body): the
    answer is one of the constraint's two words and ends there."""
    extra, full = CONSTRAINTS[kind]
    request = json_turn.request(lfm_model_name, max_tokens=64, extra_body=extra)
    content, finish = _ask(lfm_client, request, stream=stream)
    what = f"output under {kind} on {grammar_backend}"
    checks.check(finish == "stop", f"finish_reason of {what}", request=request, expected="stop", got=finish)
    checks.check(re.fullmatch(full, content) is not None, what, request=request, expected=f"text matching {full}",
                 got=content)
