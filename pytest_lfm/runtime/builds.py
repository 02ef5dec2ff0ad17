"""Micro checkpoints built for a run: each in a process of its own (``pytest-lfm micro build``), so builds run side
by side on the GPU and none of their memory lands in the pytest process, where an engine's is counted."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from pytest_lfm.errors import MicroBuildError
from pytest_lfm.runtime.processes import child_setup

BUILD_COMMAND = (sys.executable, "-m", "pytest_lfm.cli", "micro", "build", "--verbose")


class MicroBuilds:
    """Builds micro checkpoints on demand, one process per name at a time, their output logged line by line."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.command = list(BUILD_COMMAND)
        self.closing = False
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._running: set[subprocess.Popen[str]] = set()

    def build(self, name: str) -> Path:
        """Micro checkpoint ``name``, built now if it is not cached."""
        from pytest_lfm import micro

        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            path = micro.checkpoint_dir(name)
            if micro.is_built(path):
                return path
            if self.closing:
                raise MicroBuildError(f"micro checkpoint {name} not built: the run is stopping", name=name)
            self.log(f"building micro checkpoint {name} (once; cached in {path.parent})")
            proc = subprocess.Popen([*self.command, name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, errors="replace", preexec_fn=child_setup(0))
            self._running.add(proc)
            tail: list[str] = []
            try:
                assert proc.stdout is not None
                for line in proc.stdout:
                    line = line.rstrip()
                    tail = [*tail[-19:], line]
                    self.log(f"micro {name}: {line}")
                code = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                self._running.discard(proc)
            if code != 0 or not micro.is_built(path):
                last, command = "\n".join(tail[-10:]), " ".join([*self.command, name])
                raise MicroBuildError(f"micro checkpoint {name} did not build (`{command}` exited with code {code}); "
                                      f"its last output:\n{last}\nRun "
                                      f"`pytest-lfm micro build {name} --verbose` to see the whole build.", name=name,
                                      exit_code=code)
            return path

    def stop(self) -> None:
        """SIGTERM the builds under way; none starts after this."""
        self.closing = True
        for proc in list(self._running):
            with contextlib.suppress(OSError):
                proc.terminate()

    def kill(self) -> None:
        """SIGKILL the builds under way, now (safe in a signal handler)."""
        self.closing = True
        for proc in list(self._running):
            with contextlib.suppress(OSError):
                proc.kill()
