"""The run's state in ``config.stash`` that the plugin sets and the report reads: the keys live here so that the
report depends on neither the plugin nor the runtimes (the plugin imports the report, never the other way)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_lfm.matrix import ModelSpec
    from pytest_lfm.runtime import RuntimePool
    from pytest_lfm.runtime.plan import PlannedLaunch
    from pytest_lfm.settings import Settings

SETTINGS: pytest.StashKey[Settings] = pytest.StashKey()
SELECTED: pytest.StashKey[list[ModelSpec]] = pytest.StashKey()  # the models the run qualifies
POOL: pytest.StashKey[RuntimePool | None] = pytest.StashKey()  # set once a test needs a runtime launched here
PLAN: pytest.StashKey[Sequence[PlannedLaunch]] = pytest.StashKey()  # the launches planned at collection
