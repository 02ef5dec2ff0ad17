"""Fixtures the suites share: ``turn`` (a scripted request, parametrized indirectly by turn id:
``checks.scripted(kind, ...)``), ``lfm_tokenizer_path`` and ``served_launch``."""

from __future__ import annotations

import os

import httpx
import pytest

from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Script, Turn
from pytest_lfm.runtime import HttpServer, served


@pytest.fixture
def turn(request: pytest.FixtureRequest, lfm_script: Script, lfm_model: ModelSpec) -> Turn:
    """The scripted turn named by the parameter; skipped for a model the script does not give it to."""
    scripted = lfm_script.get(request.param)
    if scripted not in lfm_script.for_model(lfm_model):
        pytest.skip(f"turn {scripted.id} is not scripted for {lfm_model.id}")
    return scripted


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
