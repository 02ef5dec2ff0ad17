"""This worker's sglang runtimes: each planned configuration launched once, the next ones started in the background
while tests run on the current ones, as many alive at once as fit in the GPU's memory, each stopped after its last
test. The pool decides what starts and stops when (``schedule`` holds its policy); the ``starter`` does the starting.
Usable without pytest: ``RuntimePool(gpus, log_dir, timeout, plan=...)``, then ``server(config)``."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pytest_lfm.matrix import LaunchConfig
from pytest_lfm.runtime.engine import SglangEngine
from pytest_lfm.runtime.launches import Launch, time_split
from pytest_lfm.runtime.plan import PlannedLaunch, estimate_mib, launch_key
from pytest_lfm.runtime.schedule import (
    Entry,
    PoolRuntime,
    default_max_starting,
    is_slow,
    start_order,
    usable_capacity_mib,
)
from pytest_lfm.runtime.server import SglangServer
from pytest_lfm.runtime.starter import Starter


class RuntimePool:
    """Owns this worker's GPUs and every runtime on them."""

    def __init__(
        self, gpus: Sequence[int], log_dir: Path, launch_timeout: float, *, plan: Sequence[PlannedLaunch] = (),
        log: Callable[[str], None] | None = None, server_command: Sequence[str] | None = None,
        capacity_mib: int | None = None, max_starting: int | None = None, prefetch: bool = True,
    ) -> None:
        self.gpus = list(gpus)
        self.log = log or (lambda message: None)
        self.max_starting = max_starting or default_max_starting()
        self.prefetching = prefetch
        self.capacity_mib = capacity_mib if capacity_mib is not None else usable_capacity_mib(self.gpus)
        self.t0 = time.monotonic()
        self.waits: list[tuple[float, float]] = []
        self.active_models: set[str] | None = None  # None: every model; under xdist, those this worker was given
        self._lock = threading.RLock()
        self._quiet = 0
        self._entries: dict[str, Entry] = {}
        self._stops: list[threading.Thread] = []  # stops in the background, each named lfm-stop-<config id>
        self.starter = Starter(self._lock, self.t0, self.log, log_dir, launch_timeout, server_command)
        for planned in plan:
            self._entries[planned.key] = self._entry(planned.kind, planned.config, set(planned.tests), True)

    def _entry(self, kind: str, config: LaunchConfig, tests: set[str], planned: bool) -> Entry:
        need = estimate_mib(config)
        record = Launch(kind, config.id, config.model.id, config.server_args(), self.gpus_for(config),
                        planned=planned, tests=len(tests), estimate_mib=need)
        return Entry(kind, config, tests, record, need, planned)

    def gpus_for(self, config: LaunchConfig) -> list[int]:
        need = config.tp_size
        if need > len(self.gpus):
            raise RuntimeError(f"{config.id} needs {need} GPUs (tensor parallel) but this worker has {self.gpus}")
        return list(self.gpus[:need])

    @property
    def launches(self) -> list[Launch]:
        return [entry.record for entry in self.starter.started]

    # ------------------------------------------------------------ asking for runtimes

    def server(self, config: LaunchConfig) -> SglangServer:
        runtime = self._acquire("server", config)
        assert isinstance(runtime, SglangServer)
        return runtime

    def engine(self, config: LaunchConfig) -> SglangEngine:
        runtime = self._acquire("engine", config)
        assert isinstance(runtime, SglangEngine)
        return runtime

    def _acquire(self, kind: str, config: LaunchConfig) -> PoolRuntime:
        key = launch_key(kind, config)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.state == "stopped":  # not planned, or asked for again after its last test
                entry = self._entries[key] = self._entry(kind, config, set(), False)
        if entry.state == "ready" and entry.runtime is not None:
            return entry.runtime
        if entry.state == "failed":
            assert entry.error is not None
            raise entry.error
        self.starter.hurry(entry)
        waited = time.monotonic()
        try:
            if entry.state == "idle" and kind == "engine":
                self.prefetch()  # the servers start while the engine starts here
                self._make_room(entry)
                self.starter.engine(entry)
            elif entry.state == "idle":
                self._make_room(entry)
                self.starter.server(entry, background=False)
                self.prefetch()
            else:
                self.prefetch()
            self.starter.wait(entry)
        finally:
            self.waits.append((waited, time.monotonic()))
        self.prefetch()
        if entry.error is not None:
            raise entry.error
        assert entry.runtime is not None
        return entry.runtime

    def release(self, runtime: PoolRuntime) -> None:
        """The caller is done with ``runtime``: an unplanned one stops now; a planned one stops after its last test."""
        entry = self._entry_of(runtime)
        if entry is not None and not entry.planned:
            self._stop_entry(entry, wait=True)

    def stop_runtime(self, runtime: PoolRuntime) -> None:
        """Stop ``runtime`` now (a test that checks what a stop leaves behind)."""
        entry = self._entry_of(runtime)
        if entry is not None:
            self._stop_entry(entry, wait=True)
        else:
            runtime.stop()

    def _entry_of(self, runtime: PoolRuntime) -> Entry | None:
        return next((e for e in self.starter.started if e.runtime is runtime), None)

    def test_done(self, nodeid: str) -> None:
        """A test finished: stop the runtimes it was the last planned test of, then start what now fits."""
        finished = []
        with self._lock:
            for entry in self._entries.values():
                if nodeid in entry.remaining:
                    entry.remaining.discard(nodeid)
                    if not entry.remaining and entry.state in ("starting", "ready"):
                        finished.append(entry)
        for entry in finished:
            self._stop_entry(entry, wait=entry.kind == "engine")
        self.prefetch()

    def activate(self, model_id: str) -> None:
        """Under xdist: this worker was given tests of ``model_id``; its launches may start ahead."""
        if self.active_models is not None and model_id not in self.active_models:
            self.active_models.add(model_id)
            self.prefetch()

    # ------------------------------------------------------------ what starts when

    def _alive(self) -> list[Entry]:
        return [e for e in self._entries.values() if e.state in ("starting", "ready")]

    def _holding(self) -> list[Entry]:
        """The runtimes that hold or will hold GPU memory: alive, or stopping in the background."""
        # not the current thread: a stop's own prefetch runs once its runtime is gone
        stopping = {t.name for t in self._stops if t.is_alive() and t is not threading.current_thread()}
        return [*self._alive(), *(e for e in self._entries.values()
                                  if e.state == "stopped" and f"lfm-stop-{e.config.id}" in stopping)]

    def _fits(self, entry: Entry) -> bool:
        alive = self._holding()
        if not alive:
            return True
        if entry.need_mib is None or any(e.need_mib is None for e in alive):
            return False  # a runtime sglang sizes from the free memory runs alone
        held = sum(e.record.memory_mib or e.need_mib or 0 for e in alive)
        return held + entry.need_mib <= self.capacity_mib

    def prefetch(self) -> None:
        """Start, in the background, the next planned servers that fit; the slow ones (torch.compile) once the first
        runtime is ready, beside the start slots."""
        if not self.prefetching:
            return
        with self._lock:
            if self._quiet:
                return
            waiting = [e for e in self._entries.values() if e.planned and e.state == "idle" and e.kind == "server"
                       and e.remaining and (self.active_models is None or e.config.model.id in self.active_models)]
            first_ready = any(e.state in ("ready", "stopped") for e in self._entries.values())
            for entry in start_order(waiting):
                starting = sum(1 for e in self._entries.values() if e.state == "starting" and not is_slow(e))
                slot = first_ready if is_slow(entry) else starting < self.max_starting
                if slot and self._fits(entry):
                    self.starter.server(entry, background=True)

    def _make_room(self, entry: Entry) -> None:
        """Before a start the test needs now: wait for starts in flight, then stop runtimes until it fits (a
        stopped one with tests left starts again later, an extra launch the report shows)."""
        if entry.kind == "engine":  # one sgl.Engine per process: it runs its tokenizer manager in this process
            for other in [e for e in self._alive() if e.kind == "engine"]:
                self._stop_entry(other, wait=True)
        for other in [e for e in self._alive() if e.state == "starting"]:
            if not self._fits(entry):
                self.starter.wait(other)
        for thread in [t for t in self._stops if t.is_alive()]:
            if not self._fits(entry):
                thread.join()
        while not self._fits(entry):
            victims = [e for e in self._alive() if e.state == "ready"]
            if not victims:
                return
            victim = max(victims, key=lambda e: (bool(e.remaining), e.need_mib or 0))
            self.log(f"stopping {victim.kind} {victim.config.id} to make room for {entry.config.id}")
            self._stop_entry(victim, wait=True)

    # ------------------------------------------------------------ stopping

    def _stop_entry(self, entry: Entry, *, wait: bool) -> None:
        with self._lock:
            if entry.state not in ("starting", "ready"):
                return
            runtime, entry.state = entry.runtime, "stopped"
        if runtime is None:  # still queued on the launcher: it will find the entry stopped
            entry.done.set()
            return
        entry.record.stopped_s = round(time.monotonic() - self.t0, 2)
        entry.record.stopped_at = time.time()
        if wait or entry.kind == "engine":
            runtime.stop()
            return
        thread = threading.Thread(target=self._stop_then_prefetch, args=(runtime,), name=f"lfm-stop-{entry.config.id}")
        self._stops.append(thread)
        thread.start()

    def _stop_then_prefetch(self, runtime: PoolRuntime) -> None:
        runtime.stop()
        self.prefetch()  # what waited for this one's memory may start now

    @contextlib.contextmanager
    def quiet(self, serving: PoolRuntime | None = None) -> Iterator[dict[str, Any]]:
        """For a test that measures time or memory on ``serving``: wait until no runtime is starting, start none
        meanwhile, and pause (SIGSTOP) the other servers alive: idle, they still poll for work and take the CPU
        the measured server needs. Says what was paused and what could not be (an engine runs in this process)."""
        with self._lock:
            self._quiet += 1
        waited = time.monotonic()
        paused: list[SglangServer] = []
        try:
            for entry in [e for e in self._alive() if e.state == "starting"]:
                self.starter.hurry(entry)
                self.starter.wait(entry)
            self.waits.append((waited, time.monotonic()))
            others = [e for e in self._alive() if e.runtime is not serving]
            for entry in others:
                if isinstance(entry.runtime, SglangServer):
                    entry.runtime.pause()
                    paused.append(entry.runtime)
            yield {"starting": [], "paused": [f"{e.kind} {e.config.id}" for e in others if e.runtime in paused],
                   "alive": [f"{e.kind} {e.config.id}" for e in others if e.runtime not in paused],
                   "workers_share_gpus": int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > len(self.gpus)}
        finally:
            for server in paused:
                server.resume()
            with self._lock:
                self._quiet -= 1
            self.prefetch()

    def kill(self) -> None:
        """SIGKILL every runtime's processes and build now, from a signal handler (no lock taken; the stops under
        way then find them gone)."""
        self.prefetching = False
        self.starter.kill()
        for entry in list(self._entries.values()):
            if entry.runtime is not None:
                entry.runtime.kill()

    def stop(self) -> None:
        """Stop every runtime (those still starting too) and wait for the stops; safe to call more than once."""
        self.prefetching = False
        self.starter.close()
        for entry in list(self._entries.values()):
            self._stop_entry(entry, wait=True)
        for thread in list(self._stops):
            thread.join()
        self.starter.join()

    def time_split(self, testing_s: float, wall_s: float) -> dict[str, float]:
        """Where the run's wall time went (launches.time_split), with the launches this worker planned."""
        planned = sum(1 for e in self._entries.values() if e.planned and (
            self.active_models is None or e.config.model.id in self.active_models))
        return time_split(self.launches, self.waits, self.t0, testing_s, wall_s, planned)
