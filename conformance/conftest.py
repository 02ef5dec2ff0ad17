"""Fixtures the suites share: ``turn`` (a scripted request, parametrized indirectly by turn id:
``checks.scripted(kind, ...)``), ``lfm_tokenizer_path``, ``served_launch``, ``check_still_serving`` and the vision
suites' image-token ``budget``."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.images import ImageTokenBudget
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Script, Turn
from pytest_lfm.runtime import HttpServer, served


@pytest.fixture
def turn(request: pytest.FixtureRequest, lfm_script: Script, lfm_model: ModelSpec) -> Turn:
    """The scripted turn named by the parameter; skipped for a model the script does not give it to."""
    return checks.scripted_turn(lfm_script, lfm_model, request.param)


@pytest.fixture(scope="module")
def budget(lfm_model: ModelSpec) -> ImageTokenBudget:
    """The image-token budget of the model's processor config (LFM2-VL defaults when it has none)."""
    return ImageTokenBudget.for_model(lfm_model.tokenizer_path())


@pytest.fixture
def lfm_tokenizer_path(lfm_model_name: str, lfm_model: ModelSpec) -> str:
    """Where the served model's tokenizer is: the served path when it is a local directory, else the model's path."""
    return lfm_model_name if os.path.isdir(lfm_model_name) else lfm_model.tokenizer_path()


@pytest.fixture
def served_launch(lfm_live_server: HttpServer, lfm_http: httpx.Client, lfm_model: ModelSpec) -> served.ServedLaunch:
    """What the launch under test serves, known apart from what the server lists: the served name and context length
    from its command line (a server launched here, or the recorded one in replay), else from the arguments a server
    started elsewhere reports (GET /get_server_info); the context from the checkpoint's config.json where the launch
    gave no --context-length (``runtime.served``). Skipped where no context length can be known here."""
    launch = served.from_args(lfm_live_server.command)
    if launch is None:
        launch = served.from_server_info(lfm_http.get("/get_server_info").json())
    try:
        return served.with_context(launch, lfm_model)
    except served.UnknownContext as exc:
        pytest.skip(f"the served context length cannot be known here: {exc}")


@pytest.fixture
def check_still_serving(lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec,
                        lfm_script: Script) -> Callable[[str], None]:
    """A check that the server still answers after what the caller names (``after``): the script's first plain
    answer, exactly on a micro checkpoint, a finished non-empty answer on a real model."""
    turn = lfm_script.get(checks.scripted("answer")[0])

    def check_still_serving(after: str) -> None:
        __tracebackhide__ = True
        request = turn.request(lfm_model_name)
        try:
            choice = checks.only_choice(lfm_client.chat.completions.create(**request), request=request)
        except openai.APIError as exc:
            checks.fail(f"the server stopped answering after {after}", request=request,
                        expected="HTTP 200 with the scripted answer", got=f"{type(exc).__name__}: {exc}")
        checks.assert_finish_reason(choice, "stop", request=request)
        expected = turn.content if checks.exact(lfm_model) else "a non-empty answer"
        answered = choice.message.content == turn.content if checks.exact(lfm_model) else bool(
            (choice.message.content or "").strip())
        checks.check(answered, f"the answer after {after}", request=request, expected=expected, got=choice.message)

    return check_still_serving
