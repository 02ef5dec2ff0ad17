"""At most one sglang runtime (server or engine) per GPU set at a time, reused while its configuration is asked for."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_lfm.engine import SglangEngine
from pytest_lfm.matrix import LaunchConfig
from pytest_lfm.server import SglangServer

Runtime = SglangServer | SglangEngine


@dataclass
class Launch:
    """What the report needs to know about one runtime start."""

    kind: str
    config: str
    model: str
    args: list[str]
    gpus: list[int]
    startup_seconds: float | None = None
    error: str | None = None
    stopped_at: float | None = None


@dataclass
class RuntimePool:
    """Owns this worker's GPUs: starting a configuration stops whatever else runs on them first."""

    gpus: Sequence[int]
    log_dir: Path
    launch_timeout: float
    launches: list[Launch] = field(default_factory=list)
    _current: tuple[str, str] | None = None
    _runtime: Runtime | None = None
    _failed: dict[tuple[str, str], BaseException] = field(default_factory=dict)

    def gpus_for(self, config: LaunchConfig) -> list[int]:
        need = config.tp_size
        if need > len(self.gpus):
            raise RuntimeError(f"{config.id} needs {need} GPUs (tensor parallel) but this worker has "
                               f"{list(self.gpus)}")
        return list(self.gpus[:need])

    def server(self, config: LaunchConfig) -> SglangServer:
        runtime = self._acquire("server", config)
        assert isinstance(runtime, SglangServer)
        return runtime

    def engine(self, config: LaunchConfig) -> SglangEngine:
        runtime = self._acquire("engine", config)
        assert isinstance(runtime, SglangEngine)
        return runtime

    def is_current(self, runtime: Runtime) -> bool:
        return self._runtime is runtime

    def _acquire(self, kind: str, config: LaunchConfig) -> Runtime:
        key = (kind, config.id)
        if key in self._failed:
            raise self._failed[key]
        if self._current == key and self._runtime is not None:
            return self._runtime
        self.stop()
        gpus = self.gpus_for(config)
        record = Launch(kind, config.id, config.model.id, config.server_args(), gpus)
        self.launches.append(record)
        started = time.monotonic()
        try:
            runtime = self._start(kind, config, gpus)
        except BaseException as exc:
            record.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._failed[key] = exc
            raise
        record.startup_seconds = round(time.monotonic() - started, 2)
        self._current, self._runtime = key, runtime
        return runtime

    def _start(self, kind: str, config: LaunchConfig, gpus: list[int]) -> Runtime:
        env = config.environment()
        if kind == "server":
            server = SglangServer(
                config.model.model_path(), config.server_args(), env=env, gpus=gpus,
                launch_timeout=self.launch_timeout, log_dir=self.log_dir,
                name=config.id.replace("/", "_").replace(" ", "_"),
            )
            return server.start()
        kwargs: dict[str, Any] = config.engine_kwargs()
        kwargs.pop("dtype", None)
        return SglangEngine(config.model.model_path(), dtype=config.dtype, gpus=gpus, env=env, **kwargs)

    def release(self, runtime: Runtime) -> None:
        """Stop ``runtime`` if it is the one running."""
        if self._runtime is runtime:
            self.stop()

    def stop(self) -> None:
        runtime, self._runtime, self._current = self._runtime, None, None
        if runtime is not None:
            runtime.stop()
            for launch in reversed(self.launches):
                if launch.stopped_at is None:
                    launch.stopped_at = time.time()
                    break
