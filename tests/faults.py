"""Fault catalogue: server bugs written into recordings, to show the conformance suites catch them.

Each :class:`Fault` turns one recorded exchange into the exchange a faulty server would have produced (or says it
does not apply to it) and names the check it should trip. ``mutate_recording`` applies one fault to every exchange
of a recording directory (``--lfm-record DIR``) it applies to and writes the mutant next to it.

    python tests/faults.py list
    python tests/faults.py mutate NAME RECORDING_DIR MUTANT_DIR
    python tests/faults.py catch [RECORDING_DIR ...] [--every-folder] [--json REPORT]   # default: every GPU run

``catch`` replays the conformance suites on each recordings folder (default: every folder named ``recordings`` under
docs/gpu-runs, at any depth; each must pass), then on each fault's mutant of each folder it applies to, in path
order, and counts a fault caught when at least one check fails, with something other than a replay miss, on its
mutant of at least one folder; the folders after the one that caught it are not replayed (``--every-folder``: they
are, to see where each fault is caught). A fault with no exchange to corrupt in any folder is not applicable:
reported, never counted.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_lfm.cli import changed_checks
from pytest_lfm.micro.script import load_script
from pytest_lfm.recording.exchange import Exchange
from pytest_lfm.recording.jsonl import read_exchanges, write_exchanges


@dataclass(frozen=True)
class Fault:
    """A server bug: ``change`` edits an exchange in place and returns whether it applied."""

    name: str
    description: str
    trips: str  # the check that should catch it
    change: Callable[[Exchange], bool]

    def mutate(self, exchange: Exchange) -> Exchange | None:
        """The exchange as the faulty server would answer it, or None where the fault does not apply."""
        mutant = copy.deepcopy(exchange)
        return mutant if self.change(mutant) else None


FAULTS: dict[str, Fault] = {}


def fault(trips: str) -> Callable[[Callable[[Exchange], bool]], Callable[[Exchange], bool]]:
    def register(change: Callable[[Exchange], bool]) -> Callable[[Exchange], bool]:
        FAULTS[change.__name__] = Fault(change.__name__, (change.__doc__ or "").strip(), trips, change)
        return change

    return register


# ---------------------------------------------------------------- what an exchange holds


def _request(ex: Exchange) -> dict[str, Any]:
    return ex.request if isinstance(ex.request, dict) else {}


def _chat(ex: Exchange) -> bool:
    return ex.path.endswith("/chat/completions") and ex.status == 200 and ex.error is None


def _streamed(ex: Exchange) -> bool:
    return _chat(ex) and ex.body_format == "sse"


def _choices(ex: Exchange) -> Iterator[dict[str, Any]]:
    """Every choice: the response's, or every chunk's."""
    if not _chat(ex):
        return
    if ex.body_format == "sse":
        for chunk in ex.chunks():
            yield from chunk.get("choices") or ()
    elif isinstance(ex.body, dict):
        yield from ex.body.get("choices") or ()


def _messages(ex: Exchange) -> Iterator[dict[str, Any]]:
    """Every message (non-streamed) or delta (streamed)."""
    for choice in _choices(ex):
        message = choice.get("delta" if ex.body_format == "sse" else "message")
        if isinstance(message, dict):
            yield message


def _calls(ex: Exchange) -> Iterator[dict[str, Any]]:
    for message in _messages(ex):
        yield from message.get("tool_calls") or ()


def _usages(ex: Exchange) -> Iterator[dict[str, Any]]:
    if not _chat(ex) and not ex.path.endswith("/completions"):
        return
    holders = ex.chunks() if ex.body_format == "sse" else [ex.body] if isinstance(ex.body, dict) else []
    for holder in holders:
        if isinstance(holder.get("usage"), dict) and "prompt_tokens" in holder["usage"]:
            yield holder["usage"]


def _has_image(ex: Exchange) -> bool:
    return any(isinstance(part, dict) and part.get("type") == "image_url"
               for message in _request(ex).get("messages") or () if isinstance(message.get("content"), list)
               for part in message["content"])


def _finish_index(ex: Exchange) -> int | None:
    for i, event in enumerate(ex.events or ()):
        data = event.get("data")
        if isinstance(data, dict) and any(c.get("finish_reason") for c in data.get("choices") or ()):
            return i
    return None


def _pythonic(call: dict[str, Any]) -> str:
    function = call.get("function") or {}
    try:
        args = json.loads(function.get("arguments") or "{}")
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
    except (ValueError, AttributeError):
        shown = str(function.get("arguments"))
    return f"{function.get('name')}({shown})"


# ---------------------------------------------------------------- tool calls


@fault("a tool call comes back in tool_calls (with finish_reason tool_calls)")
def drop_tool_calls(ex: Exchange) -> bool:
    """The parsed calls are lost: tool_calls emptied, content and finish_reason kept."""
    changed = False
    for message in _messages(ex):
        if message.get("tool_calls"):
            message["tool_calls"], changed = None, True
    return changed


@fault("no tool-call markup (<|tool_call_start|>) in content")
def leak_tool_call_markup(ex: Exchange) -> bool:
    """The raw call block is left in content beside the parsed calls."""
    changed = False
    for message in _messages(ex):
        calls = [c for c in message.get("tool_calls") or () if (c.get("function") or {}).get("name")]
        if calls:
            block = f"<|tool_call_start|>[{', '.join(_pythonic(c) for c in calls)}]<|tool_call_end|>"
            message["content"], changed = (message.get("content") or "") + block, True
    return changed


@fault("the content with finish_reason stop where the script expects a call (the vanishing call)")
def vanishing_call(ex: Exchange) -> bool:
    """A call turns into content "" + tool_calls null + finish_reason stop (seen on sglang 0.5.17)."""
    changed = False
    for choice in _choices(ex):
        message = choice.get("delta" if ex.body_format == "sse" else "message") or {}
        if message.get("tool_calls"):
            message["tool_calls"], changed = None, True
            if ex.body_format != "sse":
                message["content"] = ""
        if changed and choice.get("finish_reason") == "tool_calls":
            choice["finish_reason"] = "stop"
    return changed


@fault("tool call arguments are valid JSON")
def invalid_json_arguments(ex: Exchange) -> bool:
    """Arguments lose their closing brace."""
    pieces = [c["function"] for c in _calls(ex) if (c.get("function") or {}).get("arguments")]
    if not pieces:
        return False
    targets = pieces[-1:] if ex.body_format == "sse" else pieces
    for function in targets:
        function["arguments"] = function["arguments"].rstrip()[:-1]
    return True


@fault("tool call arguments validate against the tool's JSON schema")
def arguments_break_schema(ex: Exchange) -> bool:
    """Arguments are valid JSON but miss the required parameters and add an unknown one."""
    changed, seen = False, set()
    for call in _calls(ex):
        function = call.get("function") or {}
        if not function.get("arguments"):
            continue
        slot = call.get("index", 0)
        function["arguments"] = "" if slot in seen else json.dumps({"unexpected_argument": 42})
        seen.add(slot)
        changed = True
    return changed


@fault("the exact call the micro checkpoint was trained on (argument values)")
def wrong_argument_value(ex: Exchange) -> bool:
    """Schema-valid arguments with another value (the wrong-city bug of docs/facts.md)."""
    changed = False
    for call in _calls(ex):
        function = call.get("function") or {}
        try:
            args = json.loads(function.get("arguments") or "")
        except ValueError:
            continue
        if isinstance(args, dict) and any(isinstance(v, str) for v in args.values()):
            args = {k: v + "ville" if isinstance(v, str) else v for k, v in args.items()}
            function["arguments"], changed = json.dumps(args), True
    return changed


@fault("the called tool is one of the request's tools")
def wrong_tool_name(ex: Exchange) -> bool:
    """The call names a tool that was not offered."""
    changed = False
    for call in _calls(ex):
        function = call.get("function") or {}
        if function.get("name"):
            function["name"], changed = function["name"] + "_v2", True
    return changed


@fault("streamed parallel calls have distinct indices (and distinct ids)")
def duplicate_tool_call_index(ex: Exchange) -> bool:
    """Every call of a parallel call gets index 0 (and the first call's id)."""
    calls = list(_calls(ex))
    if sum(1 for c in calls if (c.get("function") or {}).get("name")) < 2:
        return False
    first_id = next((c["id"] for c in calls if c.get("id")), None)
    for call in calls:
        call["index"] = 0
        if call.get("id"):
            call["id"] = first_id
    return True


@fault("every call of a parallel call comes back")
def parallel_call_lost(ex: Exchange) -> bool:
    """Only the first of several calls survives (two call blocks in one chunk, docs/facts.md)."""
    changed = False
    for message in _messages(ex):
        calls = message.get("tool_calls") or []
        named = [c for c in calls if (c.get("function") or {}).get("name")]
        if ex.body_format != "sse" and len(calls) > 1:
            message["tool_calls"], changed = calls[:1], True
        elif ex.body_format == "sse" and named:
            keep = min(c.get("index", 0) for c in _calls(ex))
            kept = [c for c in calls if c.get("index", 0) == keep]
            if len(kept) != len(calls):
                message["tool_calls"], changed = kept or None, True
    return changed


@fault("each tool call has a non-empty id")
def tool_call_id_missing(ex: Exchange) -> bool:
    """Calls come back with an empty id."""
    changed = False
    for call in _calls(ex):
        if call.get("id"):
            call["id"], changed = "", True
    return changed


# ---------------------------------------------------------------- finish, roles, content


@fault("finish_reason matches what happened (tool_calls / stop / length)")
def wrong_finish_reason(ex: Exchange) -> bool:
    """finish_reason swapped: tool_calls->stop, stop->length, length->stop."""
    swap = {"tool_calls": "stop", "stop": "length", "length": "stop"}
    changed = False
    for choice in _choices(ex):
        if choice.get("finish_reason") in swap:
            choice["finish_reason"], changed = swap[choice["finish_reason"]], True
    return changed


@fault("a stream ends with a finish_reason")
def stream_without_finish_reason(ex: Exchange) -> bool:
    """No chunk carries a finish_reason."""
    changed = False
    for choice in _choices(ex) if _streamed(ex) else ():
        if choice.get("finish_reason"):
            choice["finish_reason"], changed = None, True
    return changed


@fault("exactly one chunk per choice carries finish_reason")
def two_finish_chunks(ex: Exchange) -> bool:
    """The finishing chunk is sent twice."""
    index = _finish_index(ex) if _streamed(ex) else None
    if index is None or ex.events is None:
        return False
    ex.events.insert(index + 1, copy.deepcopy(ex.events[index]))
    return True


@fault("a stream runs to its finish chunk and [DONE]")
def stream_cut_short(ex: Exchange) -> bool:
    """The stream stops half way: no finish chunk, no [DONE]."""
    index = _finish_index(ex) if _streamed(ex) else None
    if index is None or ex.events is None:
        return False
    ex.events, ex.complete = ex.events[: max(1, index // 2)], False
    return True


@fault("a stream ends with data: [DONE]")
def done_sentinel_missing(ex: Exchange) -> bool:
    """The [DONE] event is missing."""
    if not _streamed(ex) or not ex.events or ex.events[-1].get("text") != "[DONE]":
        return False
    ex.events.pop()
    return True


@fault("the first delta of a stream has role assistant")
def no_role_in_first_delta(ex: Exchange) -> bool:
    """The first chunk's delta lacks role."""
    for chunk in ex.chunks() if _streamed(ex) else ():
        for choice in chunk.get("choices") or ():
            if "role" in (choice.get("delta") or {}):
                del choice["delta"]["role"]
                return True
        if chunk.get("choices"):
            return False
    return False


@fault("the message role is assistant")
def role_not_assistant(ex: Exchange) -> bool:
    """The answer's role is user."""
    changed = False
    for message in _messages(ex):
        if message.get("role") == "assistant":
            message["role"], changed = "user", True
    return changed


@fault("no special tokens (<|im_end|>, ...) in content")
def special_token_in_content(ex: Exchange) -> bool:
    """An end-of-turn token leaks into the text."""
    for message in _messages(ex):
        if isinstance(message.get("content"), str) and message["content"].strip():
            message["content"] += "<|im_end|>"
            return True
    return False


@fault("streamed content equals the non-streamed content of the same request")
def stream_differs_from_nonstream(ex: Exchange) -> bool:
    """One streamed delta carries different text."""
    for message in _messages(ex) if _streamed(ex) else ():
        if isinstance(message.get("content"), str) and message["content"].strip():
            message["content"] = message["content"].upper() + " again"
            return True
    return False


@fault("the exact answer the micro checkpoint was trained on")
def wrong_answer_text(ex: Exchange) -> bool:
    """A plain answer comes back with other text."""
    changed = False
    for message in _messages(ex) if not _streamed(ex) else ():
        if isinstance(message.get("content"), str) and message["content"].strip():
            message["content"], changed = message["content"][::-1], True
    return changed


@fault("n=2 returns two choices")
def n_returns_one_choice(ex: Exchange) -> bool:
    """A request with n > 1 gets only choice 0."""
    if int(_request(ex).get("n") or 1) < 2 or not _chat(ex):
        return False
    if ex.body_format != "sse":
        ex.body["choices"] = ex.body["choices"][:1]
        return True
    kept = []
    for event in ex.events or ():
        data = event.get("data")
        if isinstance(data, dict) and data.get("choices"):
            data["choices"] = [c for c in data["choices"] if c.get("index", 0) == 0]
            if not data["choices"] and not data.get("usage"):
                continue
        kept.append(event)
    ex.events = kept
    return True


@fault("logprobs=true returns logprobs")
def logprobs_missing(ex: Exchange) -> bool:
    """Requested logprobs are null."""
    if not _request(ex).get("logprobs"):
        return False
    changed = False
    for choice in _choices(ex):
        if choice.get("logprobs") is not None:
            choice["logprobs"], changed = None, True
    return changed


@fault("the response names the requested model")
def response_model_differs(ex: Exchange) -> bool:
    """The response's model field names another model."""
    holders = ex.chunks() if _streamed(ex) else [ex.body] if _chat(ex) and isinstance(ex.body, dict) else []
    for holder in holders:
        holder["model"] = "some-other-model"
    return bool(holders)


@fault("object is chat.completion / chat.completion.chunk")
def object_type_wrong(ex: Exchange) -> bool:
    """Responses and chunks swap their object type."""
    holders = ex.chunks() if _streamed(ex) else [ex.body] if _chat(ex) and isinstance(ex.body, dict) else []
    for holder in holders:
        holder["object"] = "chat.completion" if _streamed(ex) else "chat.completion.chunk"
    return bool(holders)


@fault("all chunks of one stream share one id")
def chunk_ids_change(ex: Exchange) -> bool:
    """Each chunk of a stream has its own id."""
    chunks = ex.chunks() if _streamed(ex) else []
    for i, chunk in enumerate(chunks):
        chunk["id"] = f"{chunk.get('id')}-{i}"
    return len(chunks) > 1


# ---------------------------------------------------------------- usage


@fault("usage: total_tokens == prompt_tokens + completion_tokens")
def usage_does_not_add_up(ex: Exchange) -> bool:
    """total_tokens is off by 7."""
    changed = False
    for usage in _usages(ex):
        usage["total_tokens"] = usage["prompt_tokens"] + (usage.get("completion_tokens") or 0) + 7
        changed = True
    return changed


@fault("prompt_tokens equals the token count of the prompt the server renders")
def prompt_tokens_off(ex: Exchange) -> bool:
    """prompt_tokens (and total) off by 3."""
    changed = False
    for usage in _usages(ex):
        usage["prompt_tokens"] += 3
        usage["total_tokens"] = (usage.get("total_tokens") or 0) + 3
        changed = True
    return changed


@fault("completion_tokens equals the tokens generated (max_tokens, exact answers)")
def completion_tokens_off(ex: Exchange) -> bool:
    """completion_tokens (and total) off by 5."""
    changed = False
    for usage in _usages(ex):
        if usage.get("completion_tokens") is not None:
            usage["completion_tokens"] += 5
            usage["total_tokens"] = (usage.get("total_tokens") or 0) + 5
            changed = True
    return changed


@fault("completion_tokens <= max_tokens")
def max_tokens_exceeded(ex: Exchange) -> bool:
    """More tokens reported than max_tokens allowed."""
    limit = _request(ex).get("max_tokens") or _request(ex).get("max_completion_tokens")
    if not isinstance(limit, int):
        return False
    changed = False
    for usage in _usages(ex):
        extra = limit + 4 - (usage.get("completion_tokens") or 0)
        usage["completion_tokens"] = limit + 4
        usage["total_tokens"] = (usage.get("total_tokens") or 0) + extra
        changed = True
    return changed


@fault("stream_options.include_usage gives a final usage chunk")
def lost_include_usage_chunk(ex: Exchange) -> bool:
    """The usage chunk of a stream that asked for it is missing."""
    if not _streamed(ex) or not (_request(ex).get("stream_options") or {}).get("include_usage"):
        return False
    kept, changed = [], False
    for event in ex.events or ():
        data = event.get("data")
        if isinstance(data, dict) and data.get("usage"):
            changed = True
            if not data.get("choices"):
                continue
            data["usage"] = None
        kept.append(event)
    ex.events = kept
    return changed


@fault("image tokens grow with the image size (LFM2-VL tiling)")
def image_tokens_do_not_grow(ex: Exchange) -> bool:
    """Every image request reports the same prompt_tokens, whatever the image."""
    if not _has_image(ex):
        return False
    changed = False
    for usage in _usages(ex):
        usage["total_tokens"] = 300 + (usage.get("completion_tokens") or 0)
        usage["prompt_tokens"], changed = 300, True
    return changed


# ---------------------------------------------------------------- errors and other endpoints


@fault("a bad request (unknown tool, prompt beyond context) gets HTTP 400")
def status_500_instead_of_400(ex: Exchange) -> bool:
    """A client error is answered as a server error."""
    if ex.status != 400:
        return False
    ex.status, ex.body_format = 500, "json"
    ex.body = {"object": "error", "message": "Internal Server Error", "type": "InternalServerError", "param": None,
               "code": 500}
    return True


@fault("an error response says what was wrong (e.g. Tool 'nope' not found)")
def error_message_vague(ex: Exchange) -> bool:
    """An error response carries no useful message."""
    if ex.status is None or ex.status < 400 or not isinstance(ex.body, dict):
        return False
    ex.body = {"object": "error", "message": "Bad Request", "type": "BadRequestError", "param": None,
               "code": ex.status}
    return True


@fault("GET /v1/models lists the served model")
def models_list_empty(ex: Exchange) -> bool:
    """/v1/models returns an empty list."""
    if not ex.path.endswith("/v1/models") or not isinstance(ex.body, dict) or not ex.body.get("data"):
        return False
    ex.body["data"] = []
    return True


@fault("GET /v1/models gives the launch's context length (--context-length, else the checkpoint's)")
def models_context_length_wrong(ex: Exchange) -> bool:
    """/v1/models lists the served model with twice its context length."""
    if not ex.path.endswith("/v1/models") or not isinstance(ex.body, dict) or not ex.body.get("data"):
        return False
    entry = ex.body["data"][0]
    if not isinstance(entry, dict) or not isinstance(entry.get("max_model_len"), int):
        return False
    entry["max_model_len"] *= 2
    return True


@fault("GET /health_generate answers 200 on a healthy server")
def health_check_fails(ex: Exchange) -> bool:
    """The health endpoints answer 503."""
    if ex.path not in ("/health", "/health_generate") or ex.status != 200:
        return False
    ex.status, ex.body_format, ex.body = 503, "text", ""
    return True


# ---------------------------------------------------------------- bad requests, cancelled requests, bad images
# (conformance/test_bad_requests.py, test_cancellation.py, test_images.py)

_ROLES = ("system", "user", "assistant", "tool", "function", "developer")
_UNKNOWN_MODEL = "no-such-model"  # conformance/test_bad_requests.py UNKNOWN_MODEL


def _test_name(ex: Exchange) -> str:
    return ex.node.rpartition("::")[2].partition("[")[0]


def _error(status: int, message: str) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": "Error", "param": None, "code": status}


def _answered(ex: Exchange, content: str) -> None:
    """The exchange as a 200 chat completion answering ``content``."""
    usage = {"prompt_tokens": 90, "completion_tokens": 4, "total_tokens": 94}
    ex.status, ex.headers, ex.body_format, ex.events = 200, {"content-type": "application/json"}, "json", None
    ex.body = {"id": "fault", "object": "chat.completion", "created": 1, "model": _request(ex).get("model", ""),
               "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                            "finish_reason": "stop"}], "usage": usage}


def _bad_chat_request(ex: Exchange) -> bool:
    """A chat request that is not JSON, has no messages, an unknown role, content of the wrong type, a negative
    max_tokens or temperature, or a tool whose parameters are not a JSON object."""
    if not ex.path.endswith("/chat/completions"):
        return False
    if not isinstance(ex.request, dict):
        return ex.request is not None
    request, messages = ex.request, ex.request.get("messages")
    if messages == [] or any(isinstance(m, dict) and (m.get("role") not in _ROLES or not isinstance(
            m.get("content"), (str, list, type(None)))) for m in messages or ()):
        return True
    if any(isinstance(request.get(k), (int, float)) and request[k] < 0 for k in ("max_tokens", "temperature")):
        return True
    tools = request.get("tools") or ()
    return any(not isinstance((tool.get("function") or {}).get("parameters", {}), dict) for tool in tools)


def _image_urls(ex: Exchange) -> list[str]:
    return [part["image_url"].get("url", "") for message in _request(ex).get("messages") or ()
            if isinstance(message.get("content"), list) for part in message["content"]
            if isinstance(part, dict) and part.get("type") == "image_url" and isinstance(part.get("image_url"), dict)]


def _unloadable(url: str) -> bool:
    """An image_url a server cannot load, as a recording keys it: a data URI of bytes PIL cannot read, a data URI of
    another media type, or an http URL (a request answered 4xx failed to fetch it)."""
    return " bytes sha256:" in url or url.startswith(("data:", "http://", "https://"))


def _unavailable_after(ex: Exchange, test: str) -> bool:
    """The answers of test ``test`` (a check that the server still answers) become HTTP 503."""
    if _test_name(ex) != test or not _chat(ex) or ex.body_format != "json":
        return False
    ex.status, ex.body = 503, _error(503, "Service Unavailable")
    return True


@fault("a bad request (invalid JSON, no messages, an unknown role, ...) gets a 4xx, never a 5xx")
def bad_request_answered_500(ex: Exchange) -> bool:
    """A malformed chat request is answered as a server error."""
    if not _bad_chat_request(ex) or ex.status is None or not 400 <= ex.status < 500:
        return False
    ex.status, ex.body_format, ex.body = 500, "json", _error(500, "Internal Server Error")
    return True


@fault("the server answers the scripted answer after a bad request")
def unavailable_after_bad_request(ex: Exchange) -> bool:
    """The server stops answering after a bad request."""
    return _unavailable_after(ex, "test_server_answers_after_a_bad_request")


@fault("the response to an unknown model name is served under that name (sglang serves any name)")
def unknown_model_refused(ex: Exchange) -> bool:
    """A request naming a model the server does not list is refused with 404."""
    if not _chat(ex) or _request(ex).get("model") != _UNKNOWN_MODEL:
        return False
    ex.status, ex.body_format, ex.body = 404, "json", _error(404, f"The model `{_UNKNOWN_MODEL}` does not exist.")
    return True


@fault("the server answers the scripted answer after a stream closed midway or a client timeout")
def unavailable_after_cancel(ex: Exchange) -> bool:
    """The server stops answering after a cancelled request."""
    return _unavailable_after(ex, "test_server_answers_after_a_cancelled_request")


@fault("no request runs or waits a few seconds after a cancelled request (GET /v1/loads)")
def cancelled_request_keeps_running(ex: Exchange) -> bool:
    """A cancelled request is never aborted: /v1/loads counts it running."""
    loads = ex.body.get("loads") if ex.path == "/v1/loads" and isinstance(ex.body, dict) else None
    if not isinstance(loads, list) or not loads or not all(isinstance(load, dict) for load in loads):
        return False
    for load in loads:
        load["num_running_reqs"] = int(load.get("num_running_reqs", 0)) + 1
    return True


@fault("an image that cannot be loaded (not an image, an SVG, an unreachable URL) gets a 4xx")
def bad_image_answered_200(ex: Exchange) -> bool:
    """A corrupt image is answered 200, as if it were a picture."""
    if ex.status is None or not 400 <= ex.status < 500 or not any(map(_unloadable, _image_urls(ex))):
        return False
    _answered(ex, "A red circle.")
    return True


@fault("the server answers the scripted answer after a bad image")
def unavailable_after_bad_image(ex: Exchange) -> bool:
    """The server stops answering after an image it cannot load."""
    return _unavailable_after(ex, "test_server_answers_after_a_bad_image")


@fault("RGBA and grayscale images are served")
def image_mode_refused(ex: Exchange) -> bool:
    """An image that is not RGB is refused with 400."""
    if not _chat(ex) or not any(url.startswith(("<image RGBA ", "<image L ")) for url in _image_urls(ex)):
        return False
    ex.status, ex.body_format, ex.events = 400, "json", None
    ex.body = _error(400, "An exception occurred while loading IMAGE data at index 0: unsupported image mode")
    return True


@fault("an RGBA image of the script's picture gets the script's answer")
def alpha_image_misread(ex: Exchange) -> bool:
    """An RGBA image is read as another picture (its alpha taken for a colour)."""
    if not _chat(ex) or ex.body_format != "json" or not any(u.startswith("<image RGBA ") for u in _image_urls(ex)):
        return False
    changed = False
    for message in _messages(ex):
        if message.get("content"):
            message["content"], changed = "A black square.", True
    return changed


@fault("a streamed request with an image streams the script's answer")
def streamed_image_answer_wrong(ex: Exchange) -> bool:
    """A streamed image request streams an answer about another image."""
    if _test_name(ex) != "test_image_in_a_streamed_request_gets_the_scripted_answer" or not _streamed(ex):
        return False
    changed = False
    for message in _messages(ex):
        if message.get("content"):
            message["content"], changed = message["content"].swapcase(), True
    return changed


@fault("an image in an earlier turn stays in the prompt and in the answer")
def earlier_image_dropped(ex: Exchange) -> bool:
    """An image in a user turn before the last is dropped: its tokens leave the prompt, the answer knows none."""
    messages = _request(ex).get("messages") or []
    earlier = [m for m in messages[:-1] if isinstance(m.get("content"), list)
               and any(isinstance(p, dict) and p.get("type") == "image_url" for p in m["content"])]
    if not earlier or not _chat(ex) or ex.body_format != "json":
        return False
    for usage in _usages(ex):
        usage["prompt_tokens"] = max(1, usage["prompt_tokens"] - 64)
        usage["total_tokens"] = usage["prompt_tokens"] + usage.get("completion_tokens", 0)
    for message in _messages(ex):
        message["content"] = "I see no image."
    return True


@fault("more images than --limit-mm-data-per-request allows get HTTP 400")
def image_limit_not_enforced(ex: Exchange) -> bool:
    """The per-request image limit is not enforced: a request over it is answered."""
    if ex.status != 400 or not isinstance(ex.body, dict) or "exceeds limit" not in str(ex.body.get("message")):
        return False
    _answered(ex, "Three shapes.")
    return True


# ---------------------------------------------------------------- structured output, sampling, /v1/completions
# (conformance/test_structured_output.py, test_sampling.py, test_completions.py)

_FILTERS = (("top_k", 1), ("top_p", 0.01), ("min_p", 1.0))


def _set_content(ex: Exchange, text: str) -> bool:
    """Every choice's content becomes ``text`` (streamed: in the first content delta, the others emptied)."""
    changed = False
    for message in _messages(ex):
        if isinstance(message.get("content"), str) and (message["content"] or not _streamed(ex)):
            message["content"], changed = ("" if changed and _streamed(ex) else text), True
    return changed


def _edit_content(ex: Exchange, edit: Callable[[str], str]) -> bool:
    """Every non-empty content of a non-streamed answer edited."""
    changed = False
    for message in _messages(ex) if not _streamed(ex) else ():
        if isinstance(message.get("content"), str) and message["content"]:
            message["content"], changed = edit(message["content"]), True
    return changed


def _edit_completion_text(ex: Exchange, edit: Callable[[str], str], body_format: str = "json") -> bool:
    """Every non-empty text of a /v1/completions answer (``body_format`` json) or of its chunks (sse) edited."""
    changed = False
    for choice in _completion_choices(ex) if ex.body_format == body_format else ():
        if isinstance(choice.get("text"), str) and choice["text"]:
            choice["text"], changed = edit(choice["text"]), True
    return changed


def _sampled(ex: Exchange) -> bool:
    """A chat request sampled at temperature 1 or so with no filter that leaves one token."""
    request = _request(ex)
    return (_chat(ex) and float(request.get("temperature") or 0) >= 0.5
            and not any(request.get(k) == v for k, v in _FILTERS))


def _completion_choices(ex: Exchange) -> Iterator[dict[str, Any]]:
    """The choices of a /v1/completions answer, or of each of its chunks."""
    if not ex.path.endswith("/v1/completions") or ex.status != 200 or ex.error is not None:
        return
    holders = ex.chunks() if ex.body_format == "sse" else [ex.body] if isinstance(ex.body, dict) else []
    for holder in holders:
        yield from holder.get("choices") or ()


@fault("a json_object or json_schema response format gives a JSON object (valid against the schema)")
def response_format_ignored(ex: Exchange) -> bool:
    """The response format is ignored: the answer is prose."""
    if not _chat(ex) or not isinstance(_request(ex).get("response_format"), dict):
        return False
    return _set_content(ex, "Yes, the sky is blue.")


@fault("a json_schema answer validates against its schema")
def schema_not_enforced(ex: Exchange) -> bool:
    """A JSON schema is not enforced: the object has a value outside the schema's enum."""
    if not _chat(ex) or (_request(ex).get("response_format") or {}).get("type") != "json_schema":
        return False
    return _set_content(ex, '{"answer": "maybe"}')


@fault("an answer under a regex or an EBNF grammar matches it")
def grammar_constraint_ignored(ex: Exchange) -> bool:
    """A regex or EBNF constraint is ignored: the answer is free text."""
    if not _chat(ex) or not (_request(ex).get("regex") or _request(ex).get("ebnf")):
        return False
    return _set_content(ex, "Yes, it is.")


@fault("two requests with one seed give one text (on a launch that honours seeds)")
def seed_not_reproducible(ex: Exchange) -> bool:
    """The seed does not decide the sampling: a repeated seeded request samples another text."""
    if not _sampled(ex) or _request(ex).get("seed") is None or ex.occurrence < 1:
        return False
    return _edit_content(ex, lambda text: text + " Then it rained.")


@fault("sampling at temperature 1 gives different texts for different seeds and n > 1")
def sampling_collapsed(ex: Exchange) -> bool:
    """Sampling ignores the temperature: every sampled request and choice gives one text."""
    return _sampled(ex) and not _streamed(ex) and _set_content(ex, "Once upon a time.")


@fault("top_k 1, top_p 0.01 or min_p 1 at temperature 1 samples only the most likely tokens")
def sampling_filter_ignored(ex: Exchange) -> bool:
    """top_k / top_p / min_p are accepted and ignored: the filtered request samples as an unfiltered one, so a token
    less likely than its position's most likely one is drawn (its logprob falls below the top's, which is another)."""
    request = _request(ex)
    if not _chat(ex) or _streamed(ex) or float(request.get("temperature") or 0) <= 0 or not any(
            request.get(k) == v for k, v in _FILTERS):
        return False
    changed = False
    for choice in _choices(ex):
        tokens = (choice.get("logprobs") or {}).get("content") or []
        if tokens and tokens[-1].get("top_logprobs"):
            drawn = tokens[-1]
            drawn["top_logprobs"][0] = {"token": " The", "logprob": drawn["logprob"], "bytes": None}
            drawn["logprob"] -= 1.5
            changed = True
    return changed


@fault("a repetition penalty far from 1 changes the greedy answer")
def repetition_penalty_ignored(ex: Exchange) -> bool:
    """repetition_penalty is accepted and ignored: the answer is the script's answer without it."""
    request = _request(ex)
    penalty = request.get("repetition_penalty")
    if not _chat(ex) or not isinstance(penalty, (int, float)) or penalty >= 1:
        return False
    plain = next((t.content for t in load_script().turns if list(t.messages) == request.get("messages")), None)
    return plain is not None and _set_content(ex, plain)


@fault("the recommended sampling keeps a micro checkpoint's scripted answers")
def recommended_sampling_drifts(ex: Exchange) -> bool:
    """At a low temperature with the model card's filters the answers drift from the greedy ones."""
    request = _request(ex)
    if not _chat(ex) or not 0 < float(request.get("temperature") or 0) < 0.5:
        return False
    return _edit_content(ex, str.swapcase)


@fault("/v1/completions answers the raw chat prompt with the chat answer")
def completion_text_wrong(ex: Exchange) -> bool:
    """A completion's text is another text than the model generated."""
    return _edit_completion_text(ex, lambda text: text[::-1])


@fault("/v1/completions counts the prompt's tokens as the checkpoint's tokenizer does")
def completion_prompt_tokens_off(ex: Exchange) -> bool:
    """The raw prompt is tokenized otherwise (a BOS added twice): one prompt token more."""
    if not ex.path.endswith("/v1/completions"):
        return False
    changed = False
    for usage in _usages(ex):
        usage["prompt_tokens"] += 1
        usage["total_tokens"] = usage["prompt_tokens"] + usage.get("completion_tokens", 0)
        changed = True
    return changed


@fault("/v1/completions with a small max_tokens ends with finish_reason 'length'")
def completion_max_tokens_ignored(ex: Exchange) -> bool:
    """max_tokens ends a completion as if it had stopped by itself."""
    changed = False
    for choice in _completion_choices(ex):
        if choice.get("finish_reason") == "length":
            choice["finish_reason"], changed = "stop", True
    return changed


@fault("/v1/completions ends the text before a stop string")
def completion_stop_string_kept(ex: Exchange) -> bool:
    """The stop string is left in the text."""
    stop = _request(ex).get("stop")
    word = stop[0] if isinstance(stop, list) and stop else stop if isinstance(stop, str) else None
    if not word or ex.body_format != "json":
        return False
    changed = False
    for choice in _completion_choices(ex):
        if isinstance(choice.get("text"), str):
            choice["text"], changed = choice["text"] + word, True
    return changed


@fault("/v1/completions with logprobs N gives each token's logprob and its N most likely")
def completion_logprobs_wrong(ex: Exchange) -> bool:
    """The logprobs name a token less likely than the one generated at temperature 0."""
    changed = False
    for choice in _completion_choices(ex):
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict) and logprobs.get("token_logprobs"):
            logprobs["token_logprobs"][0] -= 5.0
            changed = True
    return changed


@fault("a streamed completion is the non-streamed one")
def completion_stream_differs(ex: Exchange) -> bool:
    """A streamed completion streams another text."""
    return _edit_completion_text(ex, lambda text: text.swapcase() + "x", "sse")


# ---------------------------------------------------------------- whole recordings


def mutate_exchanges(name: str, exchanges: list[Exchange]) -> tuple[list[Exchange], set[str]]:
    """The exchanges with fault ``name`` applied wherever it applies, and the tests it touched."""
    fault_ = FAULTS[name]
    out, touched = [], set()
    for ex in exchanges:
        mutant = fault_.mutate(ex)
        if mutant is not None:
            touched.add(ex.node)
        out.append(mutant or ex)
    return out, touched


def stores(recording: Path) -> list[Path]:
    """The store directories (one per recorded runtime configuration) of a recording directory."""
    return sorted(p for p in recording.iterdir() if p.is_dir() and (p / "meta.json").is_file()
                  and any(p.glob("*.jsonl")))


def mutate_recording(name: str, recording: Path, mutant: Path) -> set[str]:
    """Write ``recording`` with fault ``name`` applied to ``mutant``; returns the tests whose exchanges changed."""
    touched: set[str] = set()
    for store in stores(recording):
        target = mutant / store.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(store / "meta.json", target / "meta.json")
        exchanges, changed = mutate_exchanges(name, read_exchanges(store))
        write_exchanges(target, exchanges)
        touched |= changed
    return touched


# ---------------------------------------------------------------- the catch rate

ROOT = Path(__file__).resolve().parents[1]
MISS = "pytest-lfm replay:"  # how UnrecordedRequest messages start: a miss is not a caught fault


def recordings(root: Path = ROOT) -> list[Path]:
    """Every GPU run's recordings: the folders named ``recordings`` at any depth under ``docs/gpu-runs`` that hold a
    store (``<run>/recordings``, ``<run>/<part>/recordings``), sorted by path (runs are named by date)."""
    base = root / "docs" / "gpu-runs"
    found = [p for p in base.rglob("recordings") if p.is_dir() and stores(p)] if base.is_dir() else []
    return sorted(found)


def default_recordings(root: Path = ROOT) -> list[Path]:
    """``$LFM_FAULT_RECORDINGS`` (one folder, or several joined by ``os.pathsep``), else every GPU run's
    recordings (``recordings``; empty where there is none)."""
    if os.environ.get("LFM_FAULT_RECORDINGS"):
        return [Path(p).resolve() for p in os.environ["LFM_FAULT_RECORDINGS"].split(os.pathsep) if p]
    return recordings(root)


def label(recording: Path) -> str:
    """A recordings folder as reports name it: relative to ``docs/gpu-runs`` (or the repository) where it lies
    there."""
    for base in (ROOT / "docs" / "gpu-runs", ROOT):
        if recording.resolve().is_relative_to(base):
            return str(recording.resolve().relative_to(base))
    return str(recording)


@dataclass
class SuiteRun:
    returncode: int
    output: str
    seconds: float = 0.0
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)  # test -> (outcome, message)
    durations: dict[str, float] = field(default_factory=dict)  # test -> seconds (setup and call)

    def failures(self) -> dict[str, str]:
        return {t: m for t, (o, m) in self.outcomes.items() if o in ("failure", "error")}

    def caught(self) -> dict[str, str]:
        return {t: m for t, m in self.failures().items() if MISS not in m}


def selection(recording: Path) -> list[str]:
    """The --lfm-model/--lfm-dtype options that select every configuration the recording holds."""
    metas = [json.loads((s / "meta.json").read_text()) for s in stores(recording)]
    args = [a for m in sorted({str(m.get("model", m["model_id"])) for m in metas}) for a in ("--lfm-model", m)]
    dtypes = {m.get("dtype", "bfloat16") for m in metas}
    return [*args, "--lfm-dtype", "both" if len(dtypes) > 1 else dtypes.pop()]


def run_suites(replay: Path, tests: list[str], work: Path, *, maxfail: int = 0) -> SuiteRun:
    """The conformance suites (or just ``tests``) replayed from ``replay`` in a subprocess."""
    work.mkdir(parents=True, exist_ok=True)
    junit = work / "junit.xml"
    junit.unlink(missing_ok=True)
    targets = tests or ["conformance", "--ignore", "conformance/test_parser_corpus.py"]  # the corpus sends nothing
    # the selection takes every dtype a store holds, so the suites also run on a float16 store that holds only the
    # dtype probe's exchanges: skip the tests a recording lacks (a mutant changes answers, never which tests have any)
    # the checks changed since the GPU run (changed-since-run.txt beside the recording) ask what it does not hold
    changed = replay.parent / "changed-since-run.txt"
    deselect = [a for t in sorted(changed_checks(str(changed))) for a in ("--deselect", t)] if changed.is_file() else []
    command = [sys.executable, "-m", "pytest", *targets, *deselect, "--lfm-replay", str(replay), *selection(replay),
               "--lfm-replay-missing", "skip",
               "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist", "-q", "-o", "junit_family=xunit2",
               f"--junitxml={junit}", *([f"--maxfail={maxfail}"] if maxfail else [])]
    # no inherited --lfm-* settings, addopts or xdist worker identity
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LFM_", "PYTEST_"))}
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    run = SuiteRun(proc.returncode, proc.stdout[-4000:] + proc.stderr[-2000:], time.monotonic() - started)
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            test = f"{case.get('classname')}::{case.get('name')}"
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome, message = child.tag, f"{child.get('message', '')}\n{child.text or ''}"
            run.outcomes[test] = (outcome, message)
            run.durations[test] = float(case.get("time") or 0)
    return run


def junit_name(node: str) -> str:
    """A pytest node id (``conformance/test_x.py::test_y[p]``) as junit names it (``conformance.test_x::test_y[p]``)."""
    path, _, rest = node.partition(".py::")
    *classes, name = rest.split("::")
    return f"{'.'.join([path.replace('/', '.'), *classes])}::{name}"


def quickest_first(tests: set[str], durations: dict[str, float]) -> list[str]:
    """``tests`` ordered by their baseline run time, quickest first, so that ``--maxfail=1`` stops at the first
    failure before the slow tests (the tokenizer-loading ones) run: pytest runs node ids in the order given
    (grouping them by parametrized session fixture)."""
    return sorted(tests, key=lambda t: (durations.get(junit_name(t), 0.0), t))


def present(node: str, root: Path = ROOT) -> bool:
    """Whether recorded test ``node`` is still a test of the suites: its file defines its function. A test moved or
    renamed since the recording leaves exchanges that no test asks for, and pytest refuses a node id it cannot find."""
    path, _, rest = node.partition("::")
    file = root / path
    if not rest or not file.is_file():
        return False
    name = rest.split("::")[-1].split("[")[0]
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name
               for n in ast.walk(ast.parse(file.read_text())))


def catch_one(name: str, recording: Path, work: Path, *, replay: bool = True,
              durations: dict[str, float] | None = None) -> dict[str, Any]:
    """Fault ``name`` written into ``recording`` and the suites replayed on the tests it touched that are still in the
    suites (:func:`present`), quickest first by the baseline's ``durations`` (with ``replay`` false, only whether it
    applies: ``tried`` false)."""
    started = time.monotonic()
    touched = {test for test in mutate_recording(name, recording, work / "recording") if present(test)}
    result: dict[str, Any] = {"tests_changed": len(touched), "applicable": bool(touched), "tried": replay,
                              "caught": False, "caught_by": [], "misses": [], "seconds": 0.0}
    if touched and replay:
        tests = quickest_first(touched, durations or {})
        run = run_suites(work / "recording", tests, work, maxfail=1)
        if run.failures() and not run.caught():  # stopped on a replay miss: look further
            run = run_suites(work / "recording", tests, work)
        result["caught_by"] = sorted(run.caught())[:5]
        result["caught"] = bool(run.caught())
        result["misses"] = sorted(set(run.failures()) - set(run.caught()))[:5]
        if not run.outcomes:
            result["output"] = run.output
        elif not result["caught"]:
            result["outcomes"] = {o: sum(1 for v, _ in run.outcomes.values() if v == o)
                                  for o in ("passed", "skipped", "failure", "error")}
    shutil.rmtree(work / "recording", ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def catch_fault(name: str, folders: list[Path], work: Path, *, every: bool = False,
                durations: list[dict[str, float]] | None = None) -> dict[str, Any]:
    """Fault ``name`` on the recordings folders, in order: caught where the suites fail on its mutant of at least one
    folder it applies to. The folders after the first that catches it are only checked for applying (``tried``
    false), unless ``every``: then each is replayed, and the report says where it slips through."""
    fault_ = FAULTS[name]
    per: dict[str, dict[str, Any]] = {}
    for i, folder in enumerate(folders):
        done = not every and any(r["caught"] for r in per.values())
        per[label(folder)] = catch_one(name, folder, work / str(i), replay=not done,
                                       durations=durations[i] if durations else None)
    applicable = [f for f, r in per.items() if r["applicable"]]
    caught_in = [f for f in applicable if per[f]["caught"]]
    return {"description": fault_.description, "trips": fault_.trips, "applicable": bool(applicable),
            "caught": bool(caught_in), "applicable_in": applicable, "caught_in": caught_in,
            "missed_in": [f for f in applicable if per[f]["tried"] and f not in caught_in],
            "not_tried_in": [f for f in applicable if not per[f]["tried"]],
            "tests_changed": sum(r["tests_changed"] for r in per.values()),
            "caught_by": [t for f in caught_in for t in per[f]["caught_by"]][:5],
            "misses": [t for r in per.values() for t in r["misses"]][:5],
            "seconds": round(sum(r["seconds"] for r in per.values()), 1), "folders": per}


def baseline_ok(report: dict[str, Any]) -> bool:
    """Every unmutated recordings folder passes the suites (with at least one test run)."""
    return bool(report["baseline"]) and all(not b["failures"] and b["passed"] for b in report["baseline"].values())


def catch(recording: Path | list[Path], names: list[str] | None = None, *, jobs: int = 2,
          work: Path | None = None, every: bool = False) -> dict[str, Any]:
    """The catch rate of the catalogue (or ``names``) on the union of the recordings folders: a JSON-ready
    report (``recording``: one folder or several). Each unmutated folder must pass; then each fault is written into
    each folder it applies to and replayed there until one catches it (into every one with ``every``)."""
    folders = [recording] if isinstance(recording, Path) else list(recording)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lfm-faults-") as scratch, \
            ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        base = work or Path(scratch)
        baselines = list(pool.map(lambda i: run_suites(folders[i], [], base / "baseline" / str(i)),
                                  range(len(folders))))
        report: dict[str, Any] = {"recordings": [label(f) for f in folders], "every_folder": every, "baseline": {},
                                  "faults": {}}
        for folder, run in zip(folders, baselines, strict=True):
            entry = report["baseline"][label(folder)] = {
                "returncode": run.returncode, "seconds": round(run.seconds, 1),
                "passed": sum(1 for o, _ in run.outcomes.values() if o == "passed"),
                "failures": {t: m[:500] for t, m in run.failures().items()}}
            if entry["failures"] or not entry["passed"]:
                entry["output"] = run.output
        if baseline_ok(report):
            chosen = sorted(names or FAULTS)
            durations = [run.durations for run in baselines]
            results = pool.map(lambda n: catch_fault(n, folders, base / n, every=every, durations=durations), chosen)
            report["faults"] = dict(zip(chosen, results, strict=True))
    faults = report["faults"]
    applicable = sorted(n for n, r in faults.items() if r["applicable"])
    report["caught"] = sorted(n for n in applicable if faults[n]["caught"])
    report["missed"] = sorted(n for n in applicable if not faults[n]["caught"])
    report["not_applicable"] = sorted(n for n, r in faults.items() if not r["applicable"])
    report["seconds"] = round(time.monotonic() - started, 1)
    report["summary"] = catch_line(report)
    return report


def catch_line(report: dict[str, Any]) -> str:
    caught, missed, na = report["caught"], report["missed"], report["not_applicable"]
    applicable = len(caught) + len(missed)
    line = (f"catch_rate: {len(caught)}/{applicable} applicable mutants caught"
            f" ({100 * len(caught) / applicable:.0f}%)" if applicable else "catch_rate: no applicable mutant")
    line += f" of {len(report['faults'])} faults on {len(report['recordings'])} recordings folder(s)"
    if missed:
        line += f"; missed: {', '.join(missed)}"
    if na:
        line += f"; not applicable to any folder: {', '.join(na)}"
    return line + f" [{report['seconds']:.0f}s]"


def main(argv: list[str]) -> int:
    if argv[:1] == ["list"]:
        for f in FAULTS.values():
            print(f"{f.name}: {f.description} [trips: {f.trips}]")
        return 0
    if len(argv) == 4 and argv[0] == "mutate" and argv[1] in FAULTS:
        touched = mutate_recording(argv[1], Path(argv[2]), Path(argv[3]))
        print(f"{argv[1]}: {len(touched)} tests' exchanges changed")
        print("\n".join(sorted(touched)))
        return 0
    if argv[:1] == ["catch"]:
        rest = argv[1:]
        out, every = None, "--every-folder" in rest
        rest = [a for a in rest if a != "--every-folder"]
        if "--json" in rest:
            at = rest.index("--json")
            out, rest = Path(rest[at + 1]), rest[:at] + rest[at + 2:]
        folders = [Path(r).resolve() for r in rest] or default_recordings()
        if not folders:
            print("no recordings folder under docs/gpu-runs and no $LFM_FAULT_RECORDINGS", file=sys.stderr)
            return 2
        report = catch(folders, every=every)
        if out is not None:
            out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        if not baseline_ok(report):
            print(f"an unmutated recording does not pass the suites:\n{json.dumps(report['baseline'], indent=1)}")
            return 1
        for name, r in report["faults"].items():
            state = "caught" if r["caught"] else "MISSED" if r["applicable"] else "n/a"
            where = (f"caught in {r['caught_in']}" + (f", missed in {r['missed_in']}" if r["missed_in"] else "")
                     + (f", also applies to {r['not_tried_in']}" if r["not_tried_in"] else "")
                     if r["applicable"] else "applies to no folder")
            print(f"{state:7} {name} ({r['tests_changed']} tests changed, {r['seconds']}s) {where} "
                  f"{r['caught_by'][:1]}")
        print(f"{', '.join(report['recordings'])}: {report['summary']}")
        return 0 if not report["missed"] else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
