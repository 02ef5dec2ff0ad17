"""The ``turn`` fixture: a scripted request, parametrized indirectly by turn id (``checks.scripted(kind, ...)``)."""

from __future__ import annotations

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
