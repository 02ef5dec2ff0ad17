"""Run an sglang HTTP server as a subprocess (usable without pytest), or stand in for one started elsewhere.

    with SglangServer("LiquidAI/LFM2-350M", ["--tool-call-parser", "lfm2"], gpus=[0]) as server:
        openai.OpenAI(base_url=server.base_url + "/v1", api_key="EMPTY").models.list()
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import weakref
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil
from packaging.version import InvalidVersion, Version

from pytest_lfm import hosts

SERVE = "from sglang.cli.main import main; main()"
LAUNCHERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # `sglang serve`, the recommended entrypoint since 0.5.5; sglang.cli.main has no __main__ guard, hence -c
    ("0.5.5", ("-c", SERVE, "serve")),
    ("0", ("-m", "sglang.launch_server")),
)
"""(first sglang version, interpreter arguments that launch its server), newest first."""

HEALTH_PATH = "/health_generate"
LOG_TAIL_LINES = 50
STOP_TIMEOUT = 60.0
GPU_RELEASE_TIMEOUT = 120.0


class ServerStartError(RuntimeError):
    """The server did not become healthy: the message has the command, elapsed time, exit code, log tail, fixes."""


class ServerCrashedError(RuntimeError):
    """The server exited after it had started: the message has the exit code and the log tail."""


class RuntimeLeftoverWarning(UserWarning):
    """A runtime's processes or GPU memory outlived its stop()."""


def installed_sglang_version() -> str | None:
    """The installed sglang's version (from its metadata, without importing it), or None."""
    try:
        return metadata.version("sglang")
    except metadata.PackageNotFoundError:
        return None


def _launcher(sglang_version: str | None) -> tuple[str, ...]:
    if sglang_version is None:
        spec = importlib.util.find_spec("sglang")
        if spec is not None and spec.origin is not None:
            has_cli = (Path(spec.origin).parent / "cli" / "main.py").exists()
            return LAUNCHERS[0][1] if has_cli else LAUNCHERS[-1][1]
        sglang_version = "0"
    try:
        version = Version(sglang_version)
    except InvalidVersion:
        return LAUNCHERS[0][1]
    return next(args for first, args in LAUNCHERS if version >= Version(first))


def build_launch_command(
    model_path: str, args: Sequence[str] = (), host: str = "127.0.0.1", port: int = 30000,
    sglang_version: str | None = None,
) -> list[str]:
    """The command that serves ``model_path`` with this interpreter's sglang (``sglang_version``: pick its launcher)."""
    return [sys.executable, *_launcher(sglang_version), "--model-path", model_path, "--host", host,
            "--port", str(port), *args]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def sweep(processes: Iterable[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """SIGTERM, then SIGKILL, every process still alive; returns those that would not die."""
    alive = [p for p in processes if _alive(p)]
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            time.sleep(0.05)
            alive = [p for p in alive if _alive(p)]
        if not alive:
            break
    return alive


def warn_leftovers(runtime: object, stubborn: Sequence[psutil.Process], gpu_baseline: Mapping[int, int]) -> None:
    """After a runtime's stop: warn (RuntimeLeftoverWarning) about processes that would not die, and about GPU
    memory not back to ``gpu_baseline`` (MiB per GPU) within GPU_RELEASE_TIMEOUT."""
    if stubborn:
        warnings.warn(RuntimeLeftoverWarning(f"{runtime!r}: processes would not die: {[p.pid for p in stubborn]}"),
                      stacklevel=3)
    if gpu_baseline and not hosts.wait_gpu_memory_released(gpu_baseline, gpu_baseline, GPU_RELEASE_TIMEOUT,
                                                           own_pid=os.getpid()):
        warnings.warn(RuntimeLeftoverWarning(
            f"{runtime!r}: GPU memory of {sorted(gpu_baseline)} not back to {dict(gpu_baseline)} MiB after stop "
            f"(waited up to {GPU_RELEASE_TIMEOUT:g} s); {hosts.describe_holders(sorted(gpu_baseline))}"), stacklevel=3)


def _get_json(url: str, timeout: float = 10.0) -> Any:
    response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return response.json()


class _HttpRuntime:
    """What a local and an external server share: the URL and the metadata endpoints."""

    base_url: str
    _served_model: str | None = None
    _sglang_version: str | None = None

    def served_model(self) -> str:
        """The model id the server lists first in GET /v1/models (the ``model`` to send in requests)."""
        if self._served_model is None:
            data = _get_json(f"{self.base_url}/v1/models")
            self._served_model = str(data["data"][0]["id"])
        return self._served_model

    def sglang_version(self) -> str:
        """The server's sglang version (GET /get_server_info "version"), else the installed one, else "unknown"."""
        if self._sglang_version is None:
            try:
                version = _get_json(f"{self.base_url}/get_server_info").get("version")
            except (httpx.HTTPError, ValueError, AttributeError):
                version = None
            self._sglang_version = str(version or installed_sglang_version() or "unknown")
        return self._sglang_version


_RUNNING: weakref.WeakSet[SglangServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_RUNNING):
        server.stop()


class SglangServer(_HttpRuntime):
    """An sglang server subprocess in its own session: start() waits for GET /health_generate == 200, stop() leaves
    no process and (with ``gpus``) waits until the GPUs' memory is back to what it was before start()."""

    def __init__(
        self, model_path: str, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None,
        gpus: Sequence[int] | None = None, host: str = "127.0.0.1", port: int | None = None,
        launch_timeout: float = 600.0, log_dir: Path | None = None, command: Sequence[str] | None = None,
        name: str = "sglang",
    ) -> None:
        self.model_path = model_path
        self.args = list(args)
        self.env = dict(env or {})
        self.gpus = list(gpus) if gpus is not None else None
        self.host = host
        self.port = port if port is not None else hosts.free_port(host)
        self.launch_timeout = launch_timeout
        self.name = name
        self.base_url = f"http://{host}:{self.port}"
        if command is None:
            self.command = build_launch_command(model_path, self.args, host, self.port)
        else:
            self.command = [*command, "--model-path", model_path, "--host", host, "--port", str(self.port), *args]
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="pytest-lfm-")) / f"{name}-{self.port}.log"
        self.startup_seconds: float | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._gpu_baseline: dict[int, int] = {}

    def __repr__(self) -> str:
        return f"SglangServer({self.model_path!r}, {self.base_url}, pid={self.pid})"

    def child_env(self) -> dict[str, str]:
        """The server's environment: ours, plus ``env``, plus CUDA_VISIBLE_DEVICES for ``gpus``."""
        env = {**os.environ, **self.env}
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
            env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # nvidia-smi's numbering
        return env

    def start(self) -> SglangServer:
        """Launch and wait until healthy; ServerStartError (after cleaning up) if it exits or times out."""
        if self.is_running():
            return self
        if self.gpus:
            self._gpu_baseline = hosts.gpu_memory_baseline(self.gpus)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.child_env()
        # one try from the launch on: a Ctrl-C (or a time limit's SIGINT) that lands right after Popen must not
        # leave the server running (the H200 in session 5: pytest exited, a micro-moe server kept 33 GiB)
        try:
            with self.log_path.open("wb") as log:
                log.write(f"# pytest-lfm: {' '.join(self.command)}\n".encode())
                if self.gpus is not None:
                    log.write(f"# CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}\n".encode())
                log.flush()
                self._started_at = time.monotonic()
                self._proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.pid = self._proc.pid
            _RUNNING.add(self)
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = round(time.monotonic() - self._started_at, 2)
        return self

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        url = f"{self.base_url}{HEALTH_PATH}"
        deadline = self._started_at + self.launch_timeout
        last = "no answer yet"
        while True:
            if self._proc.poll() is not None:
                raise self._start_error(f"the process exited with code {self._proc.returncode}", url)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._start_error(f"GET {url} gave no 200 within the launch timeout of "
                                        f"{self.launch_timeout:g} s (last: {last})", url)
            try:
                response = httpx.get(url, timeout=max(1.0, min(remaining, 30.0)))
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            time.sleep(min(0.5, max(0.0, remaining)))

    def _start_error(self, reason: str, url: str) -> ServerStartError:
        assert self._proc is not None
        elapsed = time.monotonic() - self._started_at
        code = self._proc.poll()
        gpus = f"CUDA_VISIBLE_DEVICES={','.join(map(str, self.gpus))}" if self.gpus is not None else "GPUs: inherited"
        return ServerStartError(
            f"sglang server {self.name} did not start: {reason}.\n"
            f"  command: {' '.join(self.command)}\n"
            f"  {gpus}; extra env: {self.env or 'none'}\n"
            f"  elapsed: {elapsed:.1f} s; exit code: {code if code is not None else 'still running (now stopped)'}\n"
            f"  checked: GET {url} == 200 every 0.5 s while the process ran\n"
            f"  log: {self.log_path}\n"
            f"  last {LOG_TAIL_LINES} log lines:\n{_indent(self.log_tail(LOG_TAIL_LINES))}\n"
            "To fix this, either:\n"
            "  - read the log above for the first error (unknown argument, model not found, out of GPU memory) "
            "and fix the model or the launch arguments (--lfm-server-arg / the matrix launch_args);\n"
            f"  - raise the launch timeout (--lfm-launch-timeout, now {self.launch_timeout:g} s) if the server was "
            "still compiling or capturing CUDA graphs;\n"
            "  - run the command above by hand to reproduce it, or test a server you started yourself with "
            "--lfm-base-url URL."
        )

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def check_alive(self) -> None:
        """Raise ServerCrashedError (with the log tail) if the server process is not running."""
        if self.is_running():
            return
        if self._proc is None:
            raise ServerCrashedError(f"sglang server {self.name} ({self.base_url}) is not running: it was never "
                                     "started or has been stopped")
        ran = time.monotonic() - self._started_at
        raise ServerCrashedError(
            f"sglang server {self.name} (pid {self.pid}, {self.base_url}) exited with code {self._proc.returncode} "
            f"{ran:.0f} s after launch.\n  log: {self.log_path}\n"
            f"  last {LOG_TAIL_LINES} log lines:\n{_indent(self.log_tail(LOG_TAIL_LINES))}"
        )

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        """The last ``n`` lines of the server log."""
        try:
            lines = self.log_path.read_bytes().decode(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``, kill stragglers, wait for the GPU memory."""
        proc, self._proc = self._proc, None
        _RUNNING.discard(self)
        if proc is None:
            return
        try:
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.Error:
            family = []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)  # start_new_session: the group id is the pid
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # group members that outlived the leader
        warn_leftovers(self, sweep(family), self._gpu_baseline)

    def __enter__(self) -> SglangServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class ExternalServer(_HttpRuntime):
    """A server started elsewhere (``--lfm-base-url``): the same surface as SglangServer; start/stop do nothing."""

    log_path: Path | None = None
    startup_seconds: float | None = None
    pid: int | None = None

    def __init__(self, base_url: str) -> None:
        url = base_url.rstrip("/")
        self.base_url = url[: -len("/v1")] if url.endswith("/v1") else url
        self.command: list[str] = []

    def __repr__(self) -> str:
        return f"ExternalServer({self.base_url})"

    def _health(self) -> str | None:
        """None when GET /health or /health_generate answers 200, else what went wrong."""
        problems = []
        for path in ("/health", HEALTH_PATH):
            try:
                status = httpx.get(f"{self.base_url}{path}", timeout=30).status_code
            except httpx.HTTPError as exc:
                problems.append(f"GET {path}: {type(exc).__name__}: {exc}")
                continue
            if status == 200:
                return None
            problems.append(f"GET {path}: HTTP {status}")
        return "; ".join(problems)

    def start(self) -> ExternalServer:
        return self

    def stop(self) -> None:
        return None

    def is_running(self) -> bool:
        return self._health() is None

    def check_alive(self) -> None:
        """Raise ServerCrashedError if the server does not answer its health endpoints."""
        problem = self._health()
        if problem is not None:
            raise ServerCrashedError(f"the server at {self.base_url} (--lfm-base-url) is not healthy: {problem}")

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        return f"(no log: {self.base_url} was started outside pytest-lfm)"

    def __enter__(self) -> ExternalServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


def _indent(text: str) -> str:
    return "\n".join(f"    | {line}" for line in text.splitlines()) or "    | (empty)"
