"""Processes of a runtime: started so they cannot outlive pytest, swept after a stop (group, session and every
process seen), and checked for what still holds GPU memory afterwards."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterable, Sequence

import psutil

from pytest_lfm.errors import RuntimeLeftoverWarning
from pytest_lfm.runtime import hosts

GPU_RELEASE_TIMEOUT = 60.0
PR_SET_PDEATHSIG = 1


def is_alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def sweep(processes: Iterable[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL, every process still alive; returns those that would not die."""
    alive = [p for p in processes if is_alive(p)]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [p for p in alive if is_alive(p)]
        if not alive:
            break
    return alive


RUNTIME_TAG = "PYTEST_LFM_RUNTIME"
"""An environment variable set in each launched server's environment: every descendant inherits it, so the
runtime's processes are found after a crash too, also one that left its session and lost its parent."""


def runtime_members(session_id: int, tag: str) -> list[psutil.Process]:
    """The live processes of a server started with start_new_session: the members of session ``session_id`` and
    those whose environment holds RUNTIME_TAG=``tag`` (also after its leader has exited and they were re-parented,
    and one that left the session). One pass over the process table."""
    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if proc.pid != os.getpid() and (os.getsid(proc.pid) == session_id
                                            or proc.environ().get(RUNTIME_TAG) == tag):
                members.append(proc)
    return members


def warn_leftovers(runtime: object, stubborn: Sequence[psutil.Process], pids: Iterable[int],
                   gpus: Sequence[int] | None) -> None:
    """After a runtime's stop: warn (RuntimeLeftoverWarning) about processes that would not die, and about any of
    ``pids`` that nvidia-smi still lists on ``gpus`` after GPU_RELEASE_TIMEOUT. Counting the runtime's own
    processes, not the GPU's total, keeps the check right while other runtimes start and stop on the same GPU."""
    if stubborn:
        warnings.warn(RuntimeLeftoverWarning(f"{runtime!r}: processes would not die: {[p.pid for p in stubborn]}"),
                      stacklevel=3)
    if not gpus:
        return
    held = hosts.wait_pids_off_gpus(set(pids), gpus, GPU_RELEASE_TIMEOUT)
    if held:
        warnings.warn(RuntimeLeftoverWarning(
            f"{runtime!r}: its processes still hold GPU memory after stop (waited up to {GPU_RELEASE_TIMEOUT:g} s): "
            + "; ".join(f"GPU {p.gpu}: pid {p.pid} {p.name} {p.used_mib} MiB" for p in held)), stacklevel=3)


def child_setup(niceness: int) -> Callable[[], None]:
    """In the child before exec: SIGTERM this process when the thread that started it exits (Linux), so a server
    cannot outlive a pytest that was killed outright (SIGKILL runs no handler); then lower its CPU priority by
    ``niceness`` (a start nobody waits for yet leaves the CPU to those the tests wait for)."""

    def setup() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if niceness:
            with contextlib.suppress(OSError):
                os.nice(niceness)

    return setup
