"""Shared assertions of the conformance suites.

Every failure says what was checked, which request produced the response, what was expected and what came back.
Helpers hide themselves from tracebacks (``__tracebackhide__``) so a failure points at the test's line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jsonschema
import openai
import pytest
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion

from pytest_lfm.errors import KnownFailure
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.report.notes import PROMPT_FINGERPRINT, PROMPT_TOKENS, note
from pytest_lfm.runtime import compat
from pytest_lfm.streams import Stream as Stream
from pytest_lfm.streams import StreamedCall as StreamedCall
from pytest_lfm.streams import StreamedChoice as StreamedChoice
from pytest_lfm.streams import assemble_stream as assemble_stream
from pytest_lfm.streams import reasoning_of as reasoning_of

if TYPE_CHECKING:
    from pytest_lfm.micro.script import Script, Turn

#: LFM2 / LFM2-VL control tokens (docs/facts.md, "The LFM2 format"); none of them belongs in a response's text.
SPECIAL_TOKENS = (
    "<|pad|>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|tool_list_start|>",
    "<|tool_list_end|>", "<|tool_call_start|>", "<|tool_call_end|>", "<|tool_response_start|>",
    "<|tool_response_end|>", "<|image_start|>", "<|image_end|>", "<|img_thumbnail|>", "<image>",
)
_TOKEN_LIKE = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_MAX_SHOWN = 4000


def show(value: Any) -> str:
    """A readable, bounded rendering of a request, a response object or a plain value."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(exclude_none=True)
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, indent=1, ensure_ascii=False, default=_default)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= _MAX_SHOWN else f"{text[:_MAX_SHOWN]} ... ({len(text)} characters)"


def _default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(exclude_none=True)
    if hasattr(value, "size") and hasattr(value, "mode"):  # PIL images in a request
        return f"<image {value.mode} {value.size}>"
    return repr(value)


def fail(what: str, *, request: Any, expected: Any, got: Any) -> None:
    """Fail the test with the standard message: the check, the request, the expectation and the response."""
    __tracebackhide__ = True
    pytest.fail(f"{what}\nrequest: {show(request)}\nexpected: {_as_text(expected)}\ngot: {_as_text(got)}",
                pytrace=False)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) and "\n" not in value and len(value) < 200 else show(value)


def check(condition: bool, what: str, *, request: Any, expected: Any, got: Any) -> None:
    """``fail`` unless ``condition``."""
    __tracebackhide__ = True
    if not condition:
        fail(what, request=request, expected=expected, got=got)


# ---------------------------------------------------------------- text


def normalize_space(text: str | None) -> str:
    """Whitespace runs collapsed to one space, ends stripped (for content whose spacing is not the point)."""
    return " ".join((text or "").split())


def assert_content_equal(got: str | None, expected: str, *, request: Any, what: str = "content") -> None:
    """``got`` equals ``expected`` up to whitespace runs."""
    __tracebackhide__ = True
    check(normalize_space(got) == normalize_space(expected), f"{what} differs (whitespace runs collapsed)",
          request=request, expected=expected, got=got)


def leaked_tokens(text: str | None) -> list[str]:
    """The LFM2 control tokens (or any ``<|...|>`` token) found in ``text``."""
    if not text:
        return []
    found = [token for token in SPECIAL_TOKENS if token in text]
    found += [token for token in _TOKEN_LIKE.findall(text) if token not in found]
    return found


def assert_no_special_tokens(text: str | None, *, request: Any, where: str = "content") -> None:
    """No control token (``<|im_end|>``, ``<|tool_call_start|>``, ...) leaks into the text a client sees."""
    __tracebackhide__ = True
    tokens = leaked_tokens(text)
    check(not tokens, f"special tokens {tokens} leaked into {where}", request=request,
          expected="text without LFM2 control tokens", got=text)


# ---------------------------------------------------------------- responses


def only_choice(response: ChatCompletion, *, request: Any) -> Any:
    """The single choice of a response (n=1), failing with the response when there is not exactly one."""
    __tracebackhide__ = True
    check(len(response.choices) == 1, "number of choices", request=request, expected=1, got=response)
    return response.choices[0]


def assert_finish_reason(choice: Any, expected: str | Sequence[str], *, request: Any) -> None:
    """The choice finished for the expected reason (``stop``, ``length``, ``tool_calls``)."""
    __tracebackhide__ = True
    allowed = (expected,) if isinstance(expected, str) else tuple(expected)
    check(choice.finish_reason in allowed, "finish_reason", request=request, expected=" or ".join(allowed),
          got=choice)


def assert_usage_adds_up(usage: CompletionUsage | None, *, request: Any) -> None:
    """usage is present, its counts are positive integers and total = prompt + completion."""
    __tracebackhide__ = True
    check(usage is not None, "usage missing", request=request, expected="a usage object", got=usage)
    assert usage is not None
    check(usage.prompt_tokens > 0 and usage.completion_tokens >= 0, "usage counts", request=request,
          expected="prompt_tokens > 0, completion_tokens >= 0", got=usage)
    check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
          "usage.total_tokens != prompt_tokens + completion_tokens", request=request,
          expected=usage.prompt_tokens + usage.completion_tokens, got=usage)


def assert_call_not_vanished(finish_reason: str | None, content: str | None, tool_calls: Sequence[Any] | None,
                             *, request: Any, response: Any) -> None:
    """A finished turn carries something: finish "stop" with empty content and no tool_calls means the server
    dropped what the model produced (seen on the GPU host: a call the parser rejected vanished; docs/facts.md)."""
    __tracebackhide__ = True
    vanished = finish_reason == "stop" and not (content or "").strip() and not tool_calls
    check(not vanished, "the response is empty: finish_reason 'stop' with empty content and no tool_calls "
          "(a tool call the parser could not read is dropped silently)", request=request,
          expected="content, or tool_calls with finish_reason 'tool_calls'", got=response)


def expect_http_error(send: Callable[[], Any], status: int, *, request: Any, mentions: str | None = None
                      ) -> openai.APIStatusError:
    """``send()`` fails with HTTP ``status`` (a client error, not a 500) whose message contains ``mentions``."""
    __tracebackhide__ = True
    try:
        response = send()
    except openai.APIStatusError as exc:
        body = exc.response.text
        check(exc.status_code == status, "HTTP status of a request the server must reject", request=request,
              expected=f"{status} {mentions or ''}".strip(), got=f"{exc.status_code}: {body}")
        if mentions is not None:
            check(mentions in body, "error message", request=request, expected=f"a message containing {mentions!r}",
                  got=body)
        return exc
    fail("the server accepted a request it must reject", request=request, expected=f"HTTP {status}", got=response)
    raise AssertionError  # unreachable: fail() raises


# ---------------------------------------------------------------- tool calls


def tool_call_dicts(tool_calls: Iterable[Any] | None) -> list[dict[str, Any]]:
    """OpenAI tool_calls (objects or dicts) as ``[{"name", "arguments"}]`` with arguments as sent (a string)."""
    out = []
    for call in tool_calls or ():
        if isinstance(call, Mapping):
            out.append({"name": call.get("name") or call["function"]["name"],
                        "arguments": call.get("arguments", call.get("function", {}).get("arguments"))})
        else:
            out.append({"name": call.function.name, "arguments": call.function.arguments})
    return out


def _decoded(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def assert_calls_equal(got: Sequence[Mapping[str, Any]], expected: Sequence[Mapping[str, Any]], *,
                       request: Any) -> None:
    """The calls (name, arguments) equal the expected ones, in order; argument JSON is compared as values."""
    __tracebackhide__ = True
    got_values = [{"name": c["name"], "arguments": _decoded(c["arguments"])} for c in got]
    want = [{"name": c["name"], "arguments": _decoded(c["arguments"])} for c in expected]
    check(got_values == want, "tool calls differ", request=request, expected=want, got=got_values)


def tools_by_name(tools: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """OpenAI tool dicts by function name."""
    return {tool["function"]["name"]: tool["function"] for tool in tools}


def assert_call_valid(call: Mapping[str, Any], tools: Iterable[Mapping[str, Any]], *, request: Any) -> dict[str, Any]:
    """The call names a tool of the request and its arguments are a JSON object valid against that tool's
    ``parameters`` schema (jsonschema). Returns the decoded arguments."""
    __tracebackhide__ = True
    known = tools_by_name(tools)
    check(call["name"] in known, "the call names a tool the request does not offer", request=request,
          expected=sorted(known), got=call)
    raw = call["arguments"]
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as exc:
        fail(f"tool call arguments are not JSON ({exc})", request=request, expected="a JSON object", got=raw)
    check(isinstance(arguments, dict), "tool call arguments are not a JSON object", request=request,
          expected="a JSON object", got=raw)
    schema = known[call["name"]].get("parameters") or {"type": "object"}
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(arguments))
    if error is not None:
        fail(f"arguments of {call['name']} do not match its parameters schema: {error.message} "
             f"(at {list(error.absolute_path)})", request=request, expected=schema, got=arguments)
    assert isinstance(arguments, dict)
    return arguments


def assert_calls_valid(tool_calls: Iterable[Any] | None, tools: Iterable[Mapping[str, Any]], *, request: Any
                       ) -> list[dict[str, Any]]:
    """Every call is valid (``assert_call_valid``) and there is at least one. Returns ``[{"name","arguments"}]``
    with decoded arguments."""
    __tracebackhide__ = True
    calls = tool_call_dicts(tool_calls)
    check(bool(calls), "no tool call", request=request, expected="at least one tool call", got=tool_calls)
    tool_list = list(tools)
    return [{"name": c["name"], "arguments": assert_call_valid(c, tool_list, request=request)} for c in calls]


# ---------------------------------------------------------------- the script


def scripted(*kinds: str) -> list[str]:
    """Ids of the script's turns of these kinds, for ``@pytest.mark.parametrize("turn", ..., indirect=True)``."""
    from pytest_lfm.micro.script import load_script

    return [turn.id for turn in load_script().turns if turn.kind in kinds]


def scripted_turn(script: Script, model: ModelSpec, turn_id: str) -> Turn:
    """Turn ``turn_id`` of the script; the test skips for a model the script does not give it to."""
    turn = script.get(turn_id)
    if turn not in script.for_model(model):
        pytest.skip(f"turn {turn.id} is not scripted for {model.id}")
    return turn


def exact(model: ModelSpec) -> bool:
    """Whether the model's answers are known exactly (micro checkpoints) or only their structure (real models)."""
    return model.micro is not None


def check_prompt_tokens(
    node: pytest.FixtureRequest, client: openai.OpenAI, sent: Mapping[str, Any], turn: Any, model: ModelSpec,
    sglang_version: str, what: str,
) -> None:
    """prompt_tokens of ``sent`` equals the token count of ``turn`` rendered as the running sglang renders it (it
    re-serializes tools before the chat template: docs/facts.md); the rendering's fingerprint and count go to the report
    so that an upgrade comparison shows prompt changes. ``what`` names the rendering in the failure message."""
    import hashlib

    from pytest_lfm.micro.render import prompt_token_count, render_prompt

    __tracebackhide__ = True
    prompt = render_prompt(turn, template=model.chat_template, sglang_version=sglang_version)
    expected = prompt_token_count(model.tokenizer_path(), turn.messages, turn.rendered_tools, sglang_version)
    note(node, PROMPT_FINGERPRINT, hashlib.sha256(prompt.encode()).hexdigest()[:12])
    note(node, PROMPT_TOKENS, expected)
    usage = client.chat.completions.create(**sent).usage
    check(usage is not None and usage.prompt_tokens == expected,
          f"prompt_tokens vs {what} rendered as sglang {sglang_version} renders it",
          request=sent, expected=expected, got=usage)


def assert_scripted_calls(choice: Any, turn: Any, model: ModelSpec, *, request: Any) -> None:
    """The choice holds calls valid against the turn's tool schemas, finishes with 'tool_calls', and, for a model
    with a script, the calls are the scripted ones."""
    __tracebackhide__ = True
    calls = assert_calls_valid(choice.message.tool_calls, turn.tools, request=request)
    assert_finish_reason(choice, "tool_calls", request=request)
    if exact(model):
        assert_calls_equal(calls, turn.tool_calls, request=request)


def known_failure_only(reason: str) -> pytest.MarkDecorator:
    """xfail(strict=False) for ``KnownFailure`` only: the known bug xfails, any other failure (the bug grown beyond
    its known size among them) fails, and a fix shows as XPASS."""
    return pytest.mark.xfail(strict=False, raises=KnownFailure, reason=reason)


def known_failure_marks(entry: Mapping[str, Any] | str | None, size: int | None,
                        sglang: str) -> list[pytest.MarkDecorator]:
    """The xfail mark of a known upstream bug (a corpus entry: its reason, issue, ``chunks`` and ``fixed_in``), for
    every chunk size or only the sizes it names, and only while sglang ``sglang`` is older than ``fixed_in``."""
    if entry is None:
        return []
    if isinstance(entry, str):
        entry = {"reason": entry}
    sizes = entry.get("chunks")
    if sizes is not None and size not in sizes:
        return []
    fixed_in = entry.get("fixed_in")
    if fixed_in is not None and compat.at_least(sglang, fixed_in):
        return []
    reason = f"{entry['issue']}: {entry['reason']}" if "issue" in entry else entry["reason"]
    if fixed_in is not None:
        reason += f"; fixed in sglang {fixed_in}"
    return [pytest.mark.xfail(strict=False, reason=f"sglang {sglang}: {reason}")]
