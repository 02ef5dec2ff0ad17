"""Run an sglang HTTP server as a subprocess (usable without pytest).

    with SglangServer("LiquidAI/LFM2-350M", ["--tool-call-parser", "lfm2"], gpus=[0]) as server:
        openai.OpenAI(base_url=server.base_url + "/v1", api_key="EMPTY").models.list()
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from pytest_lfm.errors import ServerCrashedError, ServerStartError
from pytest_lfm.runtime import compat, hosts
from pytest_lfm.runtime.processes import RUNTIME_TAG, child_setup, runtime_members, sweep, warn_leftovers

HEALTH_PATH = "/health_generate"
LOG_TAIL_LINES = 50
STOP_TIMEOUT = 30.0
STOP_NOTICE_AFTER = 10.0


def build_launch_command(
    model_path: str, args: Sequence[str] = (), host: str = "127.0.0.1", port: int = 30000,
    sglang_version: str | None = None,
) -> list[str]:
    """The command that serves ``model_path`` with this interpreter's sglang (``sglang_version``: pick its launcher)."""
    return [sys.executable, *compat.launcher_args(sglang_version), "--model-path", model_path, "--host", host,
            "--port", str(port), *args]


def _get_json(url: str, timeout: float = 10.0) -> Any:
    response = httpx.get(url, timeout=timeout)
    response.raise_for_status()
    return response.json()


class HttpRuntime:
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
            self._sglang_version = str(version or compat.installed_sglang_version() or "unknown")
        return self._sglang_version


RUNNING: weakref.WeakSet[SglangServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(RUNNING):
        server.stop()


def kill_all() -> None:
    """SIGKILL every server this process launched and has not stopped yet, now (safe in a signal handler)."""
    for server in list(RUNNING):
        server.kill()


class SglangServer(HttpRuntime):
    """An sglang server subprocess in its own session: start() (or launch() then wait_ready()) waits for
    GET /health_generate == 200 from this very server, stop() leaves no process of it and (with ``gpus``) waits
    until none of its processes holds GPU memory."""

    def __init__(
        self, model_path: str, args: Sequence[str] = (), *, env: dict[str, str] | None = None,
        gpus: Sequence[int] | None = None, host: str = "127.0.0.1", port: int | None = None,
        launch_timeout: float = 600.0, log_dir: Path | None = None, command: Sequence[str] | None = None,
        name: str = "sglang", log: Callable[[str], None] | None = None, niceness: int = 0,
    ) -> None:
        self.model_path = model_path
        self.args = list(args)
        self.env = dict(env or {})
        self.gpus = list(gpus) if gpus is not None else None
        self.host = host
        self.port = port if port is not None else hosts.free_port(host)
        self.launch_timeout = launch_timeout
        self.name = name
        self.log = log or (lambda message: None)
        self.niceness = niceness
        self.base_url = f"http://{host}:{self.port}"
        if command is None:
            self.command = build_launch_command(model_path, self.args, host, self.port)
        else:
            self.command = [*command, "--model-path", model_path, "--host", host, "--port", str(self.port), *args]
        self._log_dir = log_dir
        self.log_path: Path | None = log_dir / f"{name}-{self.port}.log" if log_dir is not None else None
        self.startup_seconds: float | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._family: dict[int, psutil.Process] = {}
        self.tag = uuid.uuid4().hex  # in the environment of every process of this server (processes.RUNTIME_TAG)
        self._started_at = 0.0

    def __repr__(self) -> str:
        return f"SglangServer({self.model_path!r}, {self.base_url}, pid={self.pid})"

    def child_env(self) -> dict[str, str]:
        """The server's environment: ours, plus ``env``, plus CUDA_VISIBLE_DEVICES for ``gpus``. Each server keeps
        its metrics apart: a PROMETHEUS_MULTIPROC_DIR inherited from an in-process sgl.Engine would mix them."""
        env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
        env.update(self.env)
        env[RUNTIME_TAG] = self.tag
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
            env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # nvidia-smi's numbering
        return env

    def start(self) -> SglangServer:
        """Launch and wait until healthy; ServerStartError (after cleaning up) if it exits or times out."""
        if self.is_running():
            return self
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Start the process and return at once (wait_ready() waits for it). The server gets SIGTERM when the thread
        that calls this exits: call it from a thread that lives as long as the server should."""
        if self._proc is not None:
            return
        if self.log_path is None:
            self.log_path = Path(tempfile.mkdtemp(prefix="pytest-lfm-")) / f"{self.name}-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = self.child_env()
        # one try from Popen on: an interrupt that lands right after it must not leave the server running
        try:
            with self.log_path.open("wb") as log:
                log.write(f"# pytest-lfm: {' '.join(self.command)}\n".encode())
                if self.gpus is not None:
                    log.write(f"# CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}\n".encode())
                log.flush()
                self._started_at = time.monotonic()
                self._proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                              preexec_fn=child_setup(self.niceness) if sys.platform == "linux"
                                              else None)
            self.pid = self._proc.pid
            RUNNING.add(self)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self) -> None:
        """Wait until this server answers GET /health_generate with 200; ServerStartError (server stopped) if not."""
        try:
            self._wait_healthy()
            self._check_identity()
        except BaseException:
            self.stop()
            raise
        self._remember_family()
        self.startup_seconds = round(time.monotonic() - self._started_at, 2)

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        url = f"{self.base_url}{HEALTH_PATH}"
        deadline = self._started_at + self.launch_timeout
        last = "no answer yet"
        while True:
            self._remember_family()  # a start that dies leaves children only these records can find
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

    def _check_identity(self) -> None:
        """The 200 came from this server, not from another process on the same port: ours is still running and
        GET /get_server_info names our model path and port."""
        assert self._proc is not None
        url = f"{self.base_url}/get_server_info"
        try:
            info = _get_json(url)
        except (httpx.HTTPError, ValueError) as exc:
            info = {"error": f"{type(exc).__name__}: {exc}"}
        time.sleep(0.2)  # a launch that lost the port to another server exits right after binding fails
        if self._proc.poll() is not None:
            raise self._start_error(f"the process exited with code {self._proc.returncode} right after its health "
                                    f"check passed (if its log says the address is in use, another process answered "
                                    f"on port {self.port})", url)
        if not isinstance(info, dict):
            info = {}
        theirs = (info.get("model_path"), info.get("port"))
        if theirs[0] is not None and (theirs[0] != self.model_path or (theirs[1] is not None and
                                                                      int(theirs[1]) != self.port)):
            raise self._start_error(f"port {self.port} is answered by another server (its GET /get_server_info "
                                    f"says model_path={theirs[0]!r}, port={theirs[1]!r})", url)

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
            f"  checked: GET {url} == 200 every 0.5 s while the process ran, then that the answer is this server's\n"
            f"  log: {self.log_path}\n"
            f"  last {LOG_TAIL_LINES} log lines:\n{_indent(self.log_tail(LOG_TAIL_LINES))}\n"
            "To fix this, either:\n"
            "  - read the log above for the first error (unknown argument, model not found, out of GPU memory, "
            "address already in use) and fix the model or the launch arguments (--lfm-server-arg / the matrix "
            "launch_args);\n"
            f"  - raise the launch timeout (--lfm-launch-timeout, now {self.launch_timeout:g} s) if the server was "
            "still compiling or capturing CUDA graphs;\n"
            "  - run the command above by hand to reproduce it, or test a server you started yourself with "
            "--lfm-base-url URL.",
            command=self.command, exit_code=code, log_path=self.log_path,
        )

    def _remember_family(self) -> None:
        """Note the server's descendants while it runs: after a crash its children are re-parented and a detached
        one (its own session) could not be found from the dead leader."""
        if self._proc is None:
            return
        with contextlib.suppress(psutil.Error):
            leader = psutil.Process(self._proc.pid)
            for proc in [leader, *leader.children(recursive=True)]:
                self._family.setdefault(proc.pid, proc)

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
            f"  last {LOG_TAIL_LINES} log lines:\n{_indent(self.log_tail(LOG_TAIL_LINES))}",
            exit_code=self._proc.returncode, log_path=self.log_path)

    def log_tail(self, n: int = LOG_TAIL_LINES) -> str:
        """The last ``n`` lines of the server log."""
        try:
            lines = self.log_path.read_bytes().decode(errors="replace").splitlines() if self.log_path else []
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def processes(self) -> list[psutil.Process]:
        """The server's processes known now: its leader, its descendants, the members of its session and every
        process that inherited its environment tag."""
        self._remember_family()
        if self.pid is not None:
            for proc in runtime_members(self.pid, self.tag):
                self._family.setdefault(proc.pid, proc)
        return list(self._family.values())

    def prioritize(self) -> None:
        """Back to normal CPU priority (the tests wait for this server now); a no-op where that is not allowed."""
        if self.niceness:
            self.niceness = 0
            for proc in self.processes():
                with contextlib.suppress(psutil.Error):
                    proc.nice(0)

    def pause(self) -> None:
        """SIGSTOP every process of the server: an idle sglang server still polls for work, and a few of them slow a
        timing measurement on another server by a quarter or more."""
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                proc.suspend()

    def resume(self) -> None:
        """SIGCONT what pause() stopped (a stopped process spawns nothing: no new look at the process table)."""
        for proc in list(self._family.values()):
            with contextlib.suppress(psutil.Error):
                proc.resume()

    def kill(self) -> None:
        """SIGKILL the process group and every process it was seen to have, now (safe in a signal handler)."""
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for member in list(self._family.values()):
            with contextlib.suppress(psutil.Error):
                member.kill()  # psutil checks it is still the process seen (not a reused pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``, kill stragglers (its session and every process it
        was seen to have), then wait until none of them holds GPU memory. An interrupt while waiting (a second
        Ctrl-C) SIGKILLs the group before it propagates: the server is never forgotten while alive."""
        proc = self._proc
        if proc is None:
            return
        family = self.processes()
        self.resume()  # a paused process would not act on SIGTERM
        try:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)  # start_new_session: the group id is the pid
            self._wait_exit(proc, timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            sweep(family, timeout=0.5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            raise
        finally:
            if proc.poll() is not None:
                self._proc = None
                RUNNING.discard(self)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # group members that outlived the leader
        family += [p for p in runtime_members(proc.pid, self.tag) if p.pid not in {f.pid for f in family}]
        warn_leftovers(self, sweep(family), [p.pid for p in family], self.gpus)

    def _wait_exit(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        noticed = False
        while proc.poll() is None:
            now = time.monotonic()
            if now >= deadline:
                self.log(f"{self.name}: no exit {timeout:g} s after SIGTERM: SIGKILL")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return
            if not noticed and now - deadline + timeout >= STOP_NOTICE_AFTER:
                self.log(f"{self.name}: still stopping {STOP_NOTICE_AFTER:g} s after SIGTERM (pid {proc.pid}); "
                         f"SIGKILL at {timeout:g} s")
                noticed = True
            time.sleep(0.05)

    def __enter__(self) -> SglangServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _indent(text: str) -> str:
    return "\n".join(f"    | {line}" for line in text.splitlines()) or "    | (empty)"
