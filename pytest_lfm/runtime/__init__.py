"""The runtimes pytest-lfm tests, usable without pytest: an sglang server it launches (``server``), one someone else
started (``external``), an in-process ``sgl.Engine`` (``engine``), the launch plan of a test selection (``plan``),
the pool that follows it on this worker's GPUs (``pool``: its ``schedule``, the ``starter`` that starts its runtimes,
micro ``builds`` and the ``launches`` it records), the runtimes' ``processes``, the host's GPUs and ports (``hosts``),
what a launch serves (``served``) and what differs between sglang versions (``compat``)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pytest_lfm.runtime.engine import SglangEngine
from pytest_lfm.runtime.external import ExternalServer
from pytest_lfm.runtime.launches import Launch
from pytest_lfm.runtime.pool import RuntimePool
from pytest_lfm.runtime.server import SglangServer


class Runtime(Protocol):
    """What every runtime offers: whether it still runs, and a stop that leaves no process behind."""

    def is_running(self) -> bool: ...

    def stop(self) -> None: ...


class HttpServer(Runtime, Protocol):
    """A server the suites send HTTP requests to: one the plugin launched, one started elsewhere, or a recording
    of one replayed."""

    base_url: str
    command: list[str]  # the command line it was started with; [] where it is not known (started elsewhere)

    @property
    def log_path(self) -> Path | None: ...

    @property
    def startup_seconds(self) -> float | None: ...

    @property
    def pid(self) -> int | None: ...

    def served_model(self) -> str: ...

    def sglang_version(self) -> str: ...

    def check_alive(self) -> None: ...

    def log_tail(self, n: int = ...) -> str: ...


__all__ = ["ExternalServer", "HttpServer", "Launch", "Runtime", "RuntimePool", "SglangEngine", "SglangServer"]
