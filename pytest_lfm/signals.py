"""How a run ends on a signal: SIGTERM and SIGHUP end it as Ctrl-C does, and a second signal kills the runtimes
at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any

import pytest

from pytest_lfm.runtime.server import kill_all
from pytest_lfm.state import RUN


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: pytest ends the run as on Ctrl-C (teardown, report), so no runtime outlives it."""


def end_on_signals(config: pytest.Config) -> None:
    """Turn SIGTERM and SIGHUP (a `timeout`, a CI cancel, a closed terminal) into an interrupt, where nobody else
    handles them: pytest then tears the runtimes down as after a Ctrl-C. The second signal of any of these (a
    second Ctrl-C while pytest tears down and reports) kills the runtimes at once instead of breaking that teardown;
    a third interrupts whatever still waits."""
    if threading.current_thread() is not threading.main_thread():
        return
    received = 0

    def interrupt(signum: int, frame: object) -> None:
        nonlocal received
        received += 1
        name = signal.Signals(signum).name
        if received == 2:
            with contextlib.suppress(Exception):
                config.stash[RUN].messages.write_now(f"pytest-lfm: {name} again: killing the runtimes now (once more "
                                                 "to stop waiting for them)")
            pool = config.stash[RUN].pool
            if pool is not None:
                pool.kill()  # its builds and engines too
            kill_all()  # also those of pools and factories of the user's own
            return
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(f"pytest-lfm: {name}: stopping the runtimes")

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        handler = signal.getsignal(sig)
        if handler in (signal.SIG_DFL, None) or (sig == signal.SIGINT and handler is signal.default_int_handler):
            previous[sig] = signal.signal(sig, interrupt)
    config.stash[RUN].signal_handlers = previous
