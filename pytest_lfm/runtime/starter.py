"""How the pool starts one runtime, once it has decided to: a server's micro checkpoint built on a thread of its own,
its process launched on the launcher thread, its readiness awaited on a thread of its own; an engine made on the
caller's thread. Each start takes its Entry from idle through starting to ready or failed, and writes its times
(seconds since the pool was made) and its GPU memory in the entry's Launch record."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pytest_lfm.runtime import hosts
from pytest_lfm.runtime.builds import MicroBuilds
from pytest_lfm.runtime.engine import SglangEngine
from pytest_lfm.runtime.schedule import BACKGROUND_NICENESS, PROGRESS_EVERY, Entry
from pytest_lfm.runtime.server import SglangServer


class Starter:
    """Starts the pool's runtimes. It takes the pool's ``lock`` for every change of an entry's state, so a stop (which
    takes it too) finds a server either launched or not yet launched, never half-way."""

    def __init__(
        self, lock: threading.RLock, t0: float, log: Callable[[str], None], log_dir: Path, launch_timeout: float,
        server_command: Sequence[str] | None,
    ) -> None:
        self.lock = lock
        self.t0 = t0
        self.log = log
        self.log_dir = log_dir
        self.launch_timeout = launch_timeout
        self.server_command = list(server_command) if server_command else None
        self.builds = MicroBuilds(log)
        self.started: list[Entry] = []  # in start order, for the report
        self.closing = False
        # one thread for every launch: it lives as long as the pool, so the servers it launches live as long too
        self._launcher = ThreadPoolExecutor(1, thread_name_prefix="lfm-launch")
        self._threads: list[threading.Thread] = []

    def server(self, entry: Entry, *, background: bool) -> None:
        """Start ``entry``'s server and return: its build (for a micro checkpoint) and its launch go on other threads;
        ``wait`` waits until it is ready or failed."""
        with self.lock:
            self._begin(entry, background)
        if entry.config.model.micro is None:
            self._launcher.submit(self._launch_server, entry)
        else:  # builds run side by side, each on a thread of its own
            self._thread(self._build_then_launch, entry, name=f"lfm-build-{entry.config.id}")

    def engine(self, entry: Entry) -> None:
        """Make ``entry``'s engine here (an sgl.Engine runs its tokenizer manager in this process); a failure is the
        entry's error, an interrupt goes on up."""
        with self.lock:
            self._begin(entry, False)
        config = entry.config
        kwargs: dict[str, Any] = config.engine_kwargs()
        kwargs.pop("dtype", None)
        try:
            entry.runtime = SglangEngine(self._model_path(entry), dtype=config.dtype, gpus=entry.record.gpus,
                                         env=config.environment(), **kwargs)
        except BaseException as exc:
            self._finish(entry, exc)
            if not isinstance(exc, Exception):
                raise
            return
        pids = [os.getpid(), *entry.runtime.spawned_pids]
        entry.record.memory_mib = hosts.memory_of(pids, entry.record.gpus) or None
        self._finish(entry, None)

    def hurry(self, entry: Entry) -> None:
        """A test waits for ``entry``: its start runs at full CPU priority from now on."""
        entry.urgent = True
        if isinstance(entry.runtime, SglangServer):
            entry.runtime.prioritize()

    def wait(self, entry: Entry) -> None:
        """Wait until ``entry``'s start is over (ready, failed or stopped), saying now and then that it still runs."""
        while not entry.done.wait(PROGRESS_EVERY):
            since = time.monotonic() - self.t0 - (entry.record.started_s or 0.0)
            self.log(f"waiting for {entry.kind} {entry.config.id} (starting for {since:.0f} s)")

    def close(self) -> None:
        """Start nothing more: the builds under way stop, what is queued for the launcher is dropped, and the launch in
        progress (if any) is waited for; call ``join`` once the runtimes are stopped."""
        self.closing = True
        self.builds.stop()
        self._launcher.shutdown(wait=True, cancel_futures=True)

    def join(self) -> None:
        """Wait for the build threads (after ``close`` they end with the builds)."""
        for thread in list(self._threads):
            if thread.name.startswith("lfm-build-"):
                thread.join()

    def kill(self) -> None:
        """Start nothing more and SIGKILL the builds under way, now (safe in a signal handler)."""
        self.closing = True
        self.builds.kill()

    def _thread(self, target: Callable[..., None], *args: object, name: str) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=name)
        self._threads.append(thread)
        thread.start()

    def _begin(self, entry: Entry, background: bool) -> None:
        entry.state = "starting"
        entry.record.background = background
        entry.record.started_s = round(time.monotonic() - self.t0, 2)
        self.started.append(entry)
        self.log(f"starting {entry.kind} {entry.config.id}{' in the background' if background else ''}")

    def _model_path(self, entry: Entry) -> str:
        """The model path of ``entry``'s launch; a micro checkpoint is built first (the time goes in its record)."""
        waited, micro = time.monotonic(), entry.config.model.micro
        path = entry.config.model.model_path() if micro is None else str(self.builds.build(micro))
        if micro is not None and entry.record.build_seconds is None:
            entry.record.build_seconds = round(time.monotonic() - waited, 1)
        return path

    def _build_then_launch(self, entry: Entry) -> None:
        try:
            self._launcher.submit(self._launch_server, entry, self._model_path(entry))
        except BaseException as exc:  # a failed build, or the pool stopping (the launcher refuses new work)
            self._finish(entry, exc)

    def _launch_server(self, entry: Entry, model_path: str | None = None) -> None:
        """On the launcher thread: start the process (on ``model_path``, built before, else the model's own), then
        wait for it on a thread of its own."""
        try:
            config = entry.config
            model_path = model_path or self._model_path(entry)
            with self.lock:  # a stop cannot slip in between: it finds the process launched, or the entry stopped
                if entry.state != "starting" or self.closing:
                    entry.done.set()
                    return
                server = SglangServer(
                    model_path, config.server_args(), env=config.environment(), gpus=entry.record.gpus,
                    launch_timeout=self.launch_timeout, log_dir=self.log_dir, command=self.server_command,
                    name=config.id.replace("/", "_").replace(" ", "_"), log=self.log,
                    niceness=0 if entry.urgent else BACKGROUND_NICENESS)
                server.launch()
                entry.runtime = server
        except BaseException as exc:
            self._finish(entry, exc)
            return
        self._thread(self._await_server, entry, server, name=f"lfm-wait-{entry.config.id}")

    def _await_server(self, entry: Entry, server: SglangServer) -> None:
        try:
            server.wait_ready()
        except BaseException as exc:
            self._finish(entry, exc)
            return
        entry.record.memory_mib = hosts.memory_of([p.pid for p in server.processes()], entry.record.gpus) or None
        self._finish(entry, None)

    def _finish(self, entry: Entry, error: BaseException | None) -> None:
        with self.lock:
            now = round(time.monotonic() - self.t0, 2)
            if entry.state == "stopped":  # stopped while it started: what the start raised is not news
                pass
            elif error is not None:
                entry.state, entry.error = "failed", error
                entry.record.error = str(error).splitlines()[0] if str(error) else type(error).__name__
                entry.record.stopped_s = now
                self.log(f"{entry.kind} {entry.config.id} did not start: {entry.record.error}")
            elif entry.state == "starting":
                entry.state = "ready"
                entry.record.ready_s = now
                entry.record.startup_seconds = round(now - (entry.record.started_s or 0.0), 2)
                self.log(f"{entry.kind} {entry.config.id} ready in {entry.record.startup_seconds:.0f} s")
            entry.done.set()
