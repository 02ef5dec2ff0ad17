"""The run's state, one object in ``config.stash[RUN]``: what the plugin resolved at configure, the plan it made
at collection and the runtimes its fixtures started. It lives here so that the report depends on neither the
plugin nor the runtimes (the plugin imports the report, never the other way)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_lfm.matrix import Matrix, ModelSpec
    from pytest_lfm.messages import Messages
    from pytest_lfm.runtime import ExternalServer, RuntimePool
    from pytest_lfm.runtime.plan import PlannedLaunch
    from pytest_lfm.settings import Settings


@dataclass
class Run:
    """One pytest run (or xdist worker) of the plugin."""

    settings: Settings
    matrix: Matrix
    selected: list[ModelSpec]  # the models the run qualifies
    messages: Messages  # what the pool says, on the terminal
    plan: Sequence[PlannedLaunch] = ()  # the launches planned at collection
    pool: RuntimePool | None = None  # set once a test needs a runtime launched here
    external: ExternalServer | None = None  # the --lfm-base-url server, once verified
    current_model: str | None = None  # the model of the test being set up (xdist: which models a worker runs)
    signal_handlers: dict[int, Any] = field(default_factory=dict)  # the handlers the run replaced


RUN = pytest.StashKey[Run]()
