"""Fixtures the suites share: ``turn`` (a scripted request, parametrized indirectly by turn id:
``checks.scripted(kind, ...)``) and ``lfm_tokenizer_path``."""

from __future__ import annotations

import os

import pytest

from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Script, Turn


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
