"""The run's state in ``config.stash``: the keys the plugin, its fixtures and the report share live here, so the
report depends on neither the plugin nor the runtimes (the plugin imports the report, never the other way)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_lfm.matrix import Matrix, ModelSpec
    from pytest_lfm.messages import Messages
    from pytest_lfm.runtime import ExternalServer, RuntimePool
    from pytest_lfm.runtime.plan import PlannedLaunch
    from pytest_lfm.settings import Settings

SETTINGS: pytest.StashKey[Settings] = pytest.StashKey()
SELECTED: pytest.StashKey[list[ModelSpec]] = pytest.StashKey()  # the models the run qualifies
POOL: pytest.StashKey[RuntimePool | None] = pytest.StashKey()  # set once a test needs a runtime launched here
PLAN: pytest.StashKey[Sequence[PlannedLaunch]] = pytest.StashKey()  # the launches planned at collection
MATRIX: pytest.StashKey[Matrix] = pytest.StashKey()
EXTERNAL: pytest.StashKey[ExternalServer] = pytest.StashKey()  # the --lfm-base-url server, once verified
MESSAGES: pytest.StashKey[Messages] = pytest.StashKey()  # what the pool says, on the terminal
SIGNAL_HANDLERS: pytest.StashKey[dict[int, Any]] = pytest.StashKey()  # the handlers the run replaced
CURRENT_MODEL: pytest.StashKey[str] = pytest.StashKey()  # the model of the test being set up (xdist)
