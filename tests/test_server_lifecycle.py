"""SglangServer / ExternalServer against a real subprocess (tests/standin_server.py), the launch command per sglang
version, Engine argument names per version, and the plugin's server fixture with --lfm-base-url / without a runtime."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from pytest_lfm.errors import ServerCrashedError, ServerStartError
from pytest_lfm.messages import NO_RUNTIME
from pytest_lfm.runtime import ExternalServer, SglangServer
from pytest_lfm.runtime import server as server_module
from pytest_lfm.runtime.compat import SERVE, installed_sglang_version, normalize_engine_kwargs
from pytest_lfm.runtime.server import build_launch_command

STANDIN = (sys.executable, str(Path(__file__).with_name("standin_server.py")))
MODEL = "standin/model"


def standin(tmp_path: Path, *args: str, launch_timeout: float = 20.0, **kwargs: object) -> SglangServer:
    return SglangServer(MODEL, args, command=STANDIN, log_dir=tmp_path, launch_timeout=launch_timeout,
                        name="standin", **kwargs)  # type: ignore[arg-type]


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_exit(server: SglangServer, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while server.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SglangServer]:
    with standin(tmp_path_factory.mktemp("running")) as server:
        yield server


# ---------------------------------------------------------------- launch command


@pytest.mark.parametrize(("version", "launcher"), [
    ("0.5.17", ["-c", SERVE, "serve"]),
    ("0.5.5", ["-c", SERVE, "serve"]),
    ("0.5.4", ["-m", "sglang.launch_server"]),
    ("0.4.10.post2", ["-m", "sglang.launch_server"]),
])
def test_launch_command_follows_the_sglang_version(version: str, launcher: list[str]) -> None:
    command = build_launch_command("LiquidAI/LFM2-350M", ["--tool-call-parser", "lfm2"], "127.0.0.1", 31000,
                                   sglang_version=version)
    assert command == [sys.executable, *launcher, "--model-path", "LiquidAI/LFM2-350M", "--host", "127.0.0.1",
                       "--port", "31000", "--tool-call-parser", "lfm2"]


def test_launch_command_of_the_installed_sglang_matches_its_version() -> None:
    """Without a version, the launcher is found by looking at the installed files (sglang/cli/main.py)."""
    version = installed_sglang_version()
    if version is None:
        pytest.skip("sglang is not installed")
    assert build_launch_command("m") == build_launch_command("m", sglang_version=version)


def test_server_takes_a_free_port_and_builds_its_command(tmp_path: Path) -> None:
    server = SglangServer(MODEL, ["--dtype", "float16"], log_dir=tmp_path)
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    assert server.command[0] == sys.executable
    assert server.command[-6:] == ["--host", "127.0.0.1", "--port", str(server.port), "--dtype", "float16"]
    assert server.log_path.parent == tmp_path
    assert not server.is_running()


# ---------------------------------------------------------------- lifecycle


def test_context_manager_serves_then_stops(tmp_path: Path) -> None:
    with standin(tmp_path, "--spawn-child") as server:
        assert server.is_running()
        server.check_alive()
        assert server.startup_seconds is not None and server.startup_seconds < 20
        assert server.served_model() == MODEL
        assert server.sglang_version() == "0.0.0-standin"
        pid = server.pid
        assert pid is not None
        children = [int(p) for p in re.findall(r"child pids (\d+) (\d+)", server.log_tail())[0]]
        assert all(not dead(c) for c in children)
    assert not server.is_running()
    assert dead(pid)
    assert all(dead(c) for c in children), "a child (one in a new session) outlived stop()"
    with pytest.raises(ServerCrashedError, match="never started or has been stopped"):
        server.check_alive()


def test_gpus_become_cuda_visible_devices_and_env_is_passed(tmp_path: Path) -> None:
    with standin(tmp_path, gpus=[2, 3], env={"STANDIN_ARGS": "--spawn-child"}) as server:
        log = server.log_tail()
    assert "CUDA_VISIBLE_DEVICES=2,3" in log
    assert "child pids" in log


def test_startup_failure_says_what_happened_and_what_to_do(tmp_path: Path) -> None:
    server = standin(tmp_path, "--fail-at-start")
    with pytest.raises(ServerStartError) as info:
        server.start()
    message = str(info.value)
    assert "the process exited with code 3" in message
    assert f"command: {' '.join(server.command)}" in message
    assert re.search(r"elapsed: \d+\.\d s; exit code: 3", message)
    assert f"log: {server.log_path}" in message
    assert "ValueError: standin was told to fail at start" in message
    assert "To fix this, either:" in message and "--lfm-launch-timeout" in message
    assert not server.is_running()


def test_start_timeout_stops_the_server(tmp_path: Path) -> None:
    server = standin(tmp_path, launch_timeout=1.5, env={"STANDIN_ARGS": "--never-healthy"})
    with pytest.raises(ServerStartError, match=r"no 200 within the launch timeout of 1.5 s \(last: HTTP 503\)") as info:
        server.start()
    assert "exit code: still running (now stopped)" in str(info.value)
    assert server.pid is not None and dead(server.pid)


def test_crash_mid_session_raises_with_the_log_tail(tmp_path: Path) -> None:
    # 2 s after its first 200: well after the start, which checks the answer is its own (GET /get_server_info, then
    # 0.2 s to see the process stays up); with 0.5 s a loaded CI host saw the crash land inside that check
    server = standin(tmp_path, "--crash-after", "2").start()
    try:
        wait_exit(server)
        with pytest.raises(ServerCrashedError) as info:
            server.check_alive()
    finally:
        server.stop()
    assert f"(pid {server.pid}, {server.base_url}) exited with code 7" in str(info.value)
    assert "RuntimeError: standin crashed (after 2.0 s)" in str(info.value)
    assert f"log: {server.log_path}" in str(info.value)


def test_crash_on_a_request(tmp_path: Path) -> None:
    with standin(tmp_path, "--crash-after-requests", "2") as server:
        with pytest.raises(httpx.HTTPError):  # the server dies mid-request
            server.served_model()
        wait_exit(server)
        # the start asked twice (GET /health_generate, then GET /get_server_info: is it ours?); the third crashed it
        with pytest.raises(ServerCrashedError, match="standin crashed \\(after 2 requests\\)"):
            server.check_alive()


def test_interrupt_right_after_the_launch_stops_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGINT between Popen and the bookkeeping must not leave sglang running after pytest exits (it did on the
    H200: docs/gpu-runs/2026-12-01-h200-c, b-moe-latency)."""
    class Interrupting(set[SglangServer]):
        def add(self, server: SglangServer) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(server_module, "RUNNING", Interrupting())
    server = standin(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert server.pid is not None and dead(server.pid)


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    server = standin(tmp_path, "--ignore-sigterm").start()
    pid = server.pid
    assert pid is not None
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert dead(pid)
    assert time.monotonic() - started < 10


# ---------------------------------------------------------------- external server


def test_external_server_has_the_same_surface(running: SglangServer) -> None:
    external = ExternalServer(running.base_url + "/v1/")
    assert external.base_url == running.base_url
    assert external.start() is external
    external.check_alive()
    assert external.is_running()
    assert external.served_model() == MODEL
    assert external.sglang_version() == "0.0.0-standin"
    external.stop()
    assert running.is_running()


def test_external_server_that_is_down_fails_check_alive() -> None:
    external = ExternalServer("http://127.0.0.1:9")
    with pytest.raises(ServerCrashedError, match=r"http://127.0.0.1:9 \(--lfm-base-url\) is not usable: GET /health: "
                                                 r"ConnectError.*Pass the URL of a running sglang server"):
        external.check_alive()


# ---------------------------------------------------------------- engine arguments per sglang version

FIELDS_0_5_17 = {"model_path", "dtype", "tp_size", "cuda_graph_max_bs_decode", "tool_call_parser"}
FLAGS_0_5_17 = {"--tp-size": "tp_size", "--cuda-graph-max-bs": "cuda_graph_max_bs_decode"}


def test_engine_kwargs_are_renamed_to_the_installed_fields() -> None:
    kwargs = {"model_path": "m", "tp": 2, "cuda_graph_max_bs": 4, "tool_call_parser": "lfm2"}
    assert normalize_engine_kwargs(kwargs, FIELDS_0_5_17, FLAGS_0_5_17) == {
        "model_path": "m", "tp_size": 2, "cuda_graph_max_bs_decode": 4, "tool_call_parser": "lfm2"}
    assert normalize_engine_kwargs(kwargs, FIELDS_0_5_17, {})["cuda_graph_max_bs_decode"] == 4
    older = {"model_path", "cuda_graph_max_bs"}
    assert normalize_engine_kwargs({"cuda_graph_max_bs_decode": 8}, older, {}) == {"cuda_graph_max_bs": 8}


def test_unknown_engine_kwarg_is_named() -> None:
    with pytest.raises(TypeError, match=r"sglang 0.5.17's Engine has no argument tool_call_parsr='lfm2'.*"
                                        r"did you mean tool_call_parser"):
        normalize_engine_kwargs({"tool_call_parsr": "lfm2"}, FIELDS_0_5_17, FLAGS_0_5_17, "0.5.17")


# ---------------------------------------------------------------- the plugin's fixtures

CONFORMANCE_LIKE = """
def test_models_endpoint(lfm_server, lfm_model_name, lfm_sglang_version):
    lfm_server.check_alive()
    assert lfm_model_name == {model!r}
    assert lfm_sglang_version == "0.0.0-standin"
"""


def test_plugin_serves_tests_from_base_url(pytester: pytest.Pytester, running: SglangServer) -> None:
    pytester.makepyfile(CONFORMANCE_LIKE.format(model=MODEL))
    result = pytester.runpytest("-p", "no:cacheprovider", "--lfm-base-url", f"{running.base_url}/v1",
                                "--lfm-model", "LiquidAI/LFM2-350M")
    result.assert_outcomes(passed=1)


def test_plugin_skips_without_gpu_or_base_url(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU, also on a GPU host
    monkeypatch.delenv("LFM_BASE_URL", raising=False)
    pytester.makepyfile(CONFORMANCE_LIKE.format(model=MODEL))
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--lfm-model", "LiquidAI/LFM2-350M")
    result.assert_outcomes(skipped=1)
    assert NO_RUNTIME[:60] in result.stdout.str()
