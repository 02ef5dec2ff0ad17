"""What the dtype suite asks of a served runtime besides logprobs: the dtype it reports, a scripted answer, and
whether a failed start is sglang's known float16 conv-state crash."""

from __future__ import annotations

import httpx
import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.errors import ServerCrashedError, ServerStartError
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.measure.logprobs import answer_turns
from pytest_lfm.micro.script import Script
from pytest_lfm.runtime import ExternalServer, HttpServer

KNOWN_FLOAT16_ISSUES = "sglang #19773, #30178, #31719"
KNOWN_FLOAT16_CRASH = "conv_state.scalar_type() == input_type"


def error_with_server_log(exc: ServerStartError | ServerCrashedError) -> str:
    """The error message and the whole server log it names (the message holds only the last lines)."""
    log = exc.log_path
    return str(exc) + (log.read_text(errors="replace") if log and log.is_file() else "")


def check_served_dtype(server: HttpServer, allowed: tuple[str, ...]) -> None:
    """The server reports one of ``allowed`` as its dtype; a --lfm-base-url server with another dtype skips."""
    __tracebackhide__ = True
    served = str(httpx.get(f"{server.base_url}/get_server_info", timeout=30).json().get("dtype"))
    if isinstance(server, ExternalServer) and served not in allowed:
        pytest.skip(f"the server under test (--lfm-base-url) serves dtype {served}")
    checks.check(served in allowed, "dtype in /get_server_info", request="GET /get_server_info",
                 expected=" or ".join(allowed), got=served)


def check_serves(client: openai.OpenAI, model_name: str, model: ModelSpec, script: Script) -> None:
    """A scripted answer turn is answered: exactly for micro checkpoints, non-empty and finished for real models."""
    __tracebackhide__ = True
    turn = answer_turns(script, model)[0]
    request = turn.request(model_name)
    choice = checks.only_choice(client.chat.completions.create(**request), request=request)
    if model.micro:
        checks.assert_content_equal(choice.message.content, turn.content or "", request=request)
    else:
        checks.check(bool((choice.message.content or "").strip()), "answer is empty", request=request,
                     expected="an answer", got=choice)
    checks.assert_finish_reason(choice, ("stop", "length") if not model.micro else "stop", request=request)
