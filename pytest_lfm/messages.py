"""What the plugin says on pytest's terminal: the runtime pool's messages (from any thread), and why the runtime
tests skip where no runtime can run."""

from __future__ import annotations

import contextlib
import threading

import pytest

NO_RUNTIME = ("no CUDA GPU here and no --lfm-base-url: the suites that need an sglang runtime run on a GPU host, "
              "or against a running server with --lfm-base-url URL, or from a recording with --lfm-replay DIR")


class Messages:
    """What the runtime pool says (starts, readiness, waits, builds) on pytest's terminal: written at once from the
    main thread, queued from the pool's threads until the main thread writes next."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.queue: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, message: str) -> None:
        with self.lock:
            self.queue.append(f"pytest-lfm: {message}")
        if threading.current_thread() is threading.main_thread():
            self.flush()

    def write_now(self, line: str) -> None:
        """From a signal handler: no lock (the interrupted code may hold it), straight to the terminal."""
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(line)

    def flush(self) -> None:
        with self.lock:
            lines, self.queue = self.queue, []
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is None or not lines:
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        # during a test's setup or call pytest captures the output: a passing test's would be dropped
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            for line in lines:
                terminal.write_line(line)
