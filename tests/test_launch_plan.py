"""The launch plan and the runtime pool that follows it, against real subprocesses (tests/standin_server.py): one
launch per runtime configuration, sized from the model's files, the next ones started in the background while tests
run and as many as fit, none left behind by a stop or a signal; a foreign server on the chosen port; --lfm-base-url
checked once."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from pytest_lfm.errors import ExternalServerError, ServerStartError
from pytest_lfm.matrix import LaunchConfig, ModelSpec, load_matrix
from pytest_lfm.runtime import ExternalServer, Launch, RuntimePool, SglangServer
from pytest_lfm.runtime.plan import RUNTIME_OVERHEAD_MIB, PlannedLaunch, estimate_mib
from pytest_lfm.runtime.schedule import default_max_starting

ROOT = Path(__file__).resolve().parents[1]
STANDIN_PATH = str(Path(__file__).with_name("standin_server.py"))
STANDIN = [sys.executable, STANDIN_PATH]

# a small LFM2-like model: 2 attention and 4 short-conv layers
CONFIG = {"model_type": "lfm2", "layer_types": ["conv", "conv", "full_attention", "conv", "full_attention", "conv"],
          "hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 8, "conv_L_cache": 3}
WEIGHTS_MIB = 300
TOKENS = 262_144  # --max-total-tokens: x 4096 B of KV per token (below) = 1024 MiB
SLOTS = 4096  # --max-mamba-cache-size: x 16384 B of conv state per slot (below) = 64 MiB
# KV: 2 attention layers x 8 kv heads x head_dim 64 (1024 / 16) x (key + value) x 2 B (bfloat16) = 4096 B per token
# conv state: 4 conv layers x hidden 1024 x (conv_L_cache 3 - 1) x 2 B = 16384 B per slot
NEED_MIB = WEIGHTS_MIB + 1024 + 64 + RUNTIME_OVERHEAD_MIB


def make_model(root: Path, name: str = "lfm2-test", *, capped: bool = True) -> ModelSpec:
    """A matrix model whose id is a local directory holding a config.json and a model.safetensors of WEIGHTS_MIB,
    its pools capped by its launch_args (or not: ``capped=False``)."""
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(CONFIG))
    with (directory / "model.safetensors").open("wb") as weights:
        weights.truncate(WEIGHTS_MIB << 20)
    args = ["--max-total-tokens", str(TOKENS), "--max-mamba-cache-size", str(SLOTS)] if capped else []
    matrix = root / f"{name}.toml"
    matrix.write_text(f"""
[[model]]
id = {json.dumps(str(directory))}
family = "dense"
capabilities = ["chat"]
chat_template = "lfm2"
launch_args = {json.dumps(args)}
""")
    spec = load_matrix([matrix]).get(str(directory))
    assert spec is not None
    return spec


def variant(model: ModelSpec, name: str, *standin_flags: str) -> LaunchConfig:
    """A configuration of ``model`` of its own (its id names it); ``standin_flags`` tell the stand-in how to act."""
    return LaunchConfig(model, extra_args=("--served-model-name", name, *standin_flags))


def make_pool(tmp_path: Path, planned: list[PlannedLaunch], **kwargs: object) -> RuntimePool:
    return RuntimePool([0], tmp_path / "logs", 20.0, plan=planned, server_command=STANDIN, **kwargs)  # type: ignore[arg-type]


def record(pool: RuntimePool, config: LaunchConfig) -> Launch | None:
    return next((launch for launch in pool.launches if launch.config == config.id), None)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def group_alive(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return members


def standins_of(marker: str) -> list[int]:
    """Live stand-in processes whose command line contains ``marker`` (a test's own model directory)."""
    found = []
    for proc in psutil.process_iter():
        try:
            cmdline = proc.cmdline()
            if any(STANDIN_PATH in part for part in cmdline) and any(marker in part for part in cmdline) \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def child_pids(log: Path) -> list[int]:
    """The pids the stand-in logged for its --spawn-child children (one in its group, one in a new session)."""
    match = re.search(r"child pids (\d+) (\d+)", log.read_text())
    assert match, log.read_text()
    return [int(match[1]), int(match[2])]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)


@pytest.fixture
def model(tmp_path: Path) -> ModelSpec:
    return make_model(tmp_path)


def subprocess_env(**extra: str) -> dict[str, str]:
    """This interpreter's environment for an inner pytest: this checkout importable, none of this run's xdist or
    pytest-lfm settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "LFM_")) and k not in ("CUDA_VISIBLE_DEVICES", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), *extra.pop("PYTHONPATH", "").split(os.pathsep)]))
    env.update(extra)
    return env


# ---------------------------------------------------------------- the plan at collection

DUMP_PLUGIN = """
import json

def pytest_collection_finish(session):
    rows = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        launch = callspec.params.get("lfm_launch") if callspec else None
        if launch is None:
            continue
        names = set(item.fixturenames)
        skip = item.get_closest_marker("skip")
        rows.append({"config": launch.id, "engine": "lfm_engine" in names,
                     "runtime": bool(names & {"lfm_server", "lfm_engine", "lfm_runtime_pool"}),
                     "skipped": skip is not None, "reason": skip.kwargs.get("reason", "") if skip else ""})
    with open(session.config.getoption("--lfm-dump-to"), "w") as out:
        json.dump(rows, out)

def pytest_addoption(parser):
    parser.addoption("--lfm-dump-to")
"""
RADIX_LESS = "---disable-radix-cache"  # what an engine's configuration id adds to its model's
PLAN_LINE = re.compile(r"^\s*(\d+)\. (engine|server) (.+?)\s+(\d+) tests")


@pytest.mark.parametrize(("args", "launches"), [((), 20), (("--lfm-dtype", "both"), 33)], ids=["default", "both"])
def test_collection_plans_one_launch_per_runtime_configuration(
    tmp_path: Path, visible_gpus: Callable[[int], None], args: tuple[str, ...], launches: int,
) -> None:
    """The conformance suites of the micro selection name each runtime configuration in many tests: the plan
    launches each (kind, configuration) once, in the order the sorted tests first need them, each model's engine
    before its server; an engine is its configuration without the radix cache. With both dtypes every variant runs
    in each dtype, and the float16 variant (FLOAT16_VARIANT: --stream-interval, SGLANG_FORWARD_UNKNOWN_TOOLS) is a
    configuration of its own beside the model's own float16 one, and so is the seeded one (DETERMINISTIC_VARIANT) in
    each dtype: 33 launches (micro-thinking has bfloat16 only and no chat, so no seeded launch)."""
    visible_gpus(1)
    (tmp_path / "lfm_dump.py").write_text(DUMP_PLUGIN)
    dump = tmp_path / "items.json"
    # the parser corpus (CPU, no runtime) is left out: importing sglang for it is most of the collection's time
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "lfm_dump",
         "--lfm-dump-to", str(dump), "--ignore=conformance/test_parser_corpus.py", *args, "conformance"],
        cwd=ROOT, env=subprocess_env(PYTHONPATH=str(tmp_path)), capture_output=True, text=True, timeout=120,
        check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    heads = [line for line in result.stdout.splitlines() if line.startswith("pytest-lfm launch plan:")]
    assert heads == [f"pytest-lfm launch plan: {launches} launches on GPU 0 (NVIDIA H200, 143771 MiB); up to "
                     f"{default_max_starting()} start at once in the background while tests run, and the slow "
                     "(torch.compile) ones besides; timing and memory checks run last, alone"], result.stdout[-3000:]
    planned = [(m[2], m[3]) for m in map(PLAN_LINE.match, result.stdout.splitlines()) if m]
    assert [int(m[1]) for m in map(PLAN_LINE.match, result.stdout.splitlines()) if m] == list(range(1, launches + 1))
    assert len(planned) == len(set(planned)) == launches, planned
    engines = [config for kind, config in planned if kind == "engine"]
    models = ["micro-dense", "micro-thinking", "micro-moe", "micro-vl"]
    dtypes = ["", "-float16"] if args else [""]
    # micro-thinking (capability reasoning, bfloat16 only) serves no engine test and has no float16 configuration
    own = [f"{m}{d}" for m in models for d in (dtypes if m != "micro-thinking" else [""])]
    first = [(kind, config + RADIX_LESS if kind == "engine" else config)
             for config in own for kind in (("server",) if config == "micro-thinking" else ("engine", "server"))]
    assert engines == [c + RADIX_LESS for c in own if c != "micro-thinking"]  # each engine once, one per configuration
    # each model's own configurations first, in selection order, its engine right before its server
    assert planned[:len(first)] == first
    assert all(kind == "server" for kind, _ in planned[len(first):])
    # what the plan launches is exactly what the collected tests that are not skipped need, in their order
    items = [row for row in json.loads(dump.read_text()) if row["runtime"] and not row["skipped"]]
    in_item_order = list(dict.fromkeys(row["config"] for row in items))
    assert list(dict.fromkeys(config.removesuffix(RADIX_LESS) for _, config in planned)) == in_item_order
    assert sorted({row["config"] + RADIX_LESS for row in items if row["engine"]}) == sorted(engines)
    reasons = [line.strip() for line in result.stdout.splitlines() if line.startswith("      ")]
    assert any(r.startswith("--stream-interval: ") for r in reasons), reasons  # why a variant carries its arguments
    assert any(r.startswith("--disable-radix-cache: ") for r in reasons), reasons


LINEUP = {  # the current lineup's new models: what their launches must carry, what they lack
    "LiquidAI/LFM2.5-230M": (("--tool-call-parser", "lfm2"), "vision"),
    "LiquidAI/LFM2.5-350M": (("--tool-call-parser", "lfm2"), "vision"),
    "LiquidAI/LFM2.5-1.2B-Thinking": (("--tool-call-parser", "lfm2", "--reasoning-parser", "qwen3-thinking"), "vision"),
    "LiquidAI/LFM2.5-2.6B": (("--tool-call-parser", "lfm2", "--reasoning-parser", "qwen3-thinking"), "vision"),
    "LiquidAI/LFM2.5-8B-A1B": (("--tool-call-parser", "lfm2", "--reasoning-parser", "qwen3"), "vision"),
    "LiquidAI/LFM2.5-24B-A2B": (("--tool-call-parser", "lfm2"), "vision"),
    "LiquidAI/LFM2.5-VL-450M": (("--tool-call-parser", "lfm2"), ""),
    "LiquidAI/LFM2.5-VL-3B": ((), "tools"),
}


def test_the_new_lineup_collects_every_suite_with_its_launch_arguments_and_skips_by_capability(
    tmp_path: Path, visible_gpus: Callable[[int], None],
) -> None:
    """``--lfm-model`` with the new models' short names: each model's own server launches with its matrix arguments
    (the reasoning ones with their --reasoning-parser), and a suite needing a capability it lacks skips, saying so."""
    visible_gpus(1)
    (tmp_path / "lfm_dump.py").write_text(DUMP_PLUGIN)
    dump = tmp_path / "items.json"
    selectors = [arg for model in LINEUP for arg in ("--lfm-model", model.split("/")[1])]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "lfm_dump",
         "--lfm-dump-to", str(dump), "--ignore=conformance/test_parser_corpus.py", "--lfm-level", "quick",
         *selectors, "conformance"],
        cwd=ROOT, env=subprocess_env(PYTHONPATH=str(tmp_path)), capture_output=True, text=True, timeout=120,
        check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    servers = {m[3]: line.split(" tests", 1)[1] for line in result.stdout.splitlines()
               if (m := PLAN_LINE.match(line)) and m[2] == "server"}
    rows = json.loads(dump.read_text())
    for model, (args, lacks) in LINEUP.items():
        assert model in servers, (model, sorted(servers))
        launch = servers[model][servers[model].index("--"):]  # the arguments, after the estimate
        assert launch.startswith(f"{' '.join(args)} --enable-metrics".strip()), (model, launch)
        assert ("--reasoning-parser" in launch) == ("--reasoning-parser" in args), (model, launch)
        reasons = {row["reason"] for row in rows if row["config"] == model and row["skipped"]}
        if lacks:
            assert f"{model} lacks capability {lacks}" in reasons, (model, reasons)
        assert not any("lacks capability vision" in r for r in reasons) or lacks == "vision", (model, reasons)
        assert [row for row in rows if row["config"] == model and not row["skipped"]], model


def test_estimate_from_weights_kv_pool_conv_state_pool_and_overhead(tmp_path: Path) -> None:
    capped = make_model(tmp_path, "capped")
    # 300 MiB of weights + 262144 tokens x 4096 B + 4096 slots x 16384 B + the runtime's overhead
    assert estimate_mib(LaunchConfig(capped)) == 300 + 1024 + 64 + 4096 == NEED_MIB
    assert estimate_mib(LaunchConfig(capped, "float16")) == NEED_MIB  # the pools' sizes come from the arguments
    # tensor parallel: each GPU holds its share of weights and pools, and a whole overhead
    assert estimate_mib(LaunchConfig(capped, extra_args=("--tp-size", "2"))) == (300 + 1024 + 64) // 2 + 4096
    # without the conv-state cap: its pool is not counted
    only_tokens = make_model(tmp_path, "only-tokens")
    spec = ModelSpec(only_tokens.id, "dense", frozenset({"chat"}), "lfm2", ("--max-total-tokens", str(TOKENS)))
    assert estimate_mib(LaunchConfig(spec)) == 300 + 1024 + 4096
    # without --max-total-tokens sglang sizes its pools from the free memory: unknown, the runtime runs alone
    assert estimate_mib(LaunchConfig(make_model(tmp_path, "uncapped", capped=False))) is None
    # capped, but the model's files are not on this host: unknown too
    elsewhere = ModelSpec("LiquidAI/not-in-any-cache-xyz", "dense", frozenset({"chat"}), "lfm2",
                          ("--max-total-tokens", str(TOKENS)))
    assert estimate_mib(LaunchConfig(elsewhere)) is None


# ---------------------------------------------------------------- starting ahead, as many as fit


def test_the_next_planned_server_starts_in_the_background_while_the_first_serves(
    tmp_path: Path, model: ModelSpec,
) -> None:
    first_config, second_config = variant(model, "first"), variant(model, "second")
    assert estimate_mib(first_config) == estimate_mib(second_config) == NEED_MIB
    pool = make_pool(tmp_path, [PlannedLaunch("server", first_config, ["a1", "a2"]),
                                PlannedLaunch("server", second_config, ["b1"])],
                     capacity_mib=2 * NEED_MIB, max_starting=1)
    try:
        first = pool.server(first_config)  # test a1
        second_record = record(pool, second_config)
        assert second_record is not None and second_record.background and second_record.started_s is not None
        pool.test_done("a1")
        assert pool.server(first_config) is first  # test a2: the same server, asked for again
        time.sleep(0.5)  # a2 runs
        first_done_s = time.monotonic() - pool.t0
        pool.test_done("a2")
        assert second_record.started_s < first_done_s  # started before the first server's tests were done
        asked = time.monotonic()
        second = pool.server(second_config)  # test b1
        waited = time.monotonic() - asked
        assert second is not first and second.is_running()
        assert second_record.startup_seconds is not None and waited < second_record.startup_seconds, (
            waited, second_record)
        first_record = record(pool, first_config)
        assert first_record is not None and first_record.stopped_s is not None  # stopped after its last test
        wait_for(lambda: not first.is_running(), 10, "the first server stopped after its last test")
        split = pool.time_split(testing_s=1.0, wall_s=time.monotonic() - pool.t0)
        assert split["launches"] == split["planned"] == 2 and split["launching_hidden_s"] > 0, split
    finally:
        pool.stop()
    assert not standins_of(model.id)


def test_slow_starts_begin_with_the_first_ready_runtime_beside_the_start_slots(
    tmp_path: Path, model: ModelSpec,
) -> None:
    """The torch.compile profile's starts take minutes and the closing timing checks need every one of them: they
    start once the first runtime is ready (not beside the first wave, which they slow down), beyond the start slots
    the servers needed sooner take turns in."""
    soon, later = variant(model, "soon"), variant(model, "later")
    slow = [LaunchConfig(model, profile="low-latency", extra_args=("--served-model-name", f"slow-{n}")) for n in (1, 2)]
    pool = make_pool(tmp_path, [PlannedLaunch("server", soon, ["a"]), PlannedLaunch("server", later, ["b"]),
                                *(PlannedLaunch("server", c, [c.id]) for c in slow)],
                     capacity_mib=10 * NEED_MIB, max_starting=1)
    try:
        pool.prefetch()
        assert {launch.config for launch in pool.launches} == {soon.id}  # the slow ones wait for a ready runtime
        pool.server(soon)
        started = {launch.config for launch in pool.launches}
        assert {c.id for c in slow} <= started, started
        assert all(launch.background for launch in pool.launches)
    finally:
        pool.stop()
    assert not standins_of(model.id)


@pytest.mark.parametrize("sizing", ["capacity-for-one", "uncapped-runs-alone"])
def test_a_server_that_does_not_fit_waits_for_the_last_test_of_the_one_before(
    tmp_path: Path, model: ModelSpec, sizing: str,
) -> None:
    first_config = variant(model, "first")
    if sizing == "capacity-for-one":
        second_config, capacity = variant(model, "second"), NEED_MIB + NEED_MIB // 2
    else:  # capacity for many, but sglang sizes an uncapped server from the free memory: it runs alone
        second_config, capacity = variant(make_model(tmp_path, "uncapped", capped=False), "second"), 10 * NEED_MIB
        assert estimate_mib(second_config) is None
    pool = make_pool(tmp_path, [PlannedLaunch("server", first_config, ["a1", "a2"]),
                                PlannedLaunch("server", second_config, ["b1"])],
                     capacity_mib=capacity, max_starting=2)
    try:
        first = pool.server(first_config)
        pool.test_done("a1")
        time.sleep(0.5)  # time enough for a start in the background, had one been made
        assert record(pool, second_config) is None, pool.launches
        pool.test_done("a2")  # the first server's last test: it stops, then the second starts
        wait_for(lambda: record(pool, second_config) is not None, 20, "the second server started")
        first_record, second_record = record(pool, first_config), record(pool, second_config)
        assert first_record is not None and first_record.stopped_s is not None
        assert second_record is not None and second_record.background
        assert second_record.started_s is not None and second_record.started_s >= first_record.stopped_s
        second = pool.server(second_config)
        assert second.is_running()
        wait_for(lambda: not first.is_running(), 10, "the first server stopped")
        assert [launch.config for launch in pool.launches] == [first_config.id, second_config.id]
    finally:
        pool.stop()
    assert not standins_of(str(tmp_path))


# ---------------------------------------------------------------- nothing left behind


def test_stop_with_several_runtimes_alive_leaves_no_process(tmp_path: Path, model: ModelSpec) -> None:
    """One server serving, one that failed to start, one that crashed after its start and left its children (one
    detached into a session of its own): pool.stop() leaves none of their processes."""
    serving = variant(model, "serving", "--spawn-child")
    failing = variant(model, "failing", "--fail-at-start")
    # a crash 2 s after its first 200: after the start's identity check, also on a loaded host (a crash before the
    # server is ready is test_a_server_that_dies_while_starting_leaves_no_detached_descendant)
    crashing = variant(model, "crashing", "--crash-after", "2", "--spawn-child")
    pool = make_pool(tmp_path, [PlannedLaunch("server", c, [c.id]) for c in (serving, crashing, failing)],
                     capacity_mib=10 * NEED_MIB, max_starting=3)
    children: list[int] = []
    try:
        server = pool.server(serving)
        with pytest.raises(ServerStartError, match="exited with code 3"):
            pool.server(failing)
        crashed = pool.server(crashing)
        assert crashed.pid is not None and crashed.log_path is not None
        wait_for(lambda: not crashed.is_running(), 10, "the crashing stand-in exited")
        assert server.is_running() and server.pid is not None and server.log_path is not None
        children = child_pids(server.log_path) + child_pids(crashed.log_path)
        assert all(alive(pid) for pid in children)  # the crashed server's children outlived it
        assert len(standins_of(model.id)) == 1
        started = time.monotonic()
    finally:
        pool.stop()
    try:
        assert time.monotonic() - started < 15
        assert not standins_of(model.id)
        assert [pid for pid in [server.pid, crashed.pid, *children] if alive(pid)] == []
        assert group_alive(server.pid) == group_alive(crashed.pid) == []
    finally:  # what a failure left behind: gone before the next test
        for leftover in [*standins_of(model.id), *children]:
            if alive(leftover):
                os.kill(leftover, signal.SIGKILL)
    assert [(x.config, x.error is not None) for x in pool.launches] == [
        (serving.id, False), (crashing.id, False), (failing.id, True)]


@pytest.mark.parametrize("ours", ["exits-address-in-use", "alive-on-another-address"])
def test_a_foreign_server_on_the_port_is_not_taken_for_ours(tmp_path: Path, ours: str) -> None:
    """A server someone else started answers on our port: ours either cannot bind it and exits, or (listening on
    another address of the host) runs while the foreign one answers our URL; either way start() fails and the
    foreign server is left alone."""
    foreign = SglangServer("foreign/model", command=STANDIN, log_dir=tmp_path / "foreign", name="foreign",
                           launch_timeout=20).start()
    try:
        env = {"STANDIN_ARGS": "--host 127.0.0.2"} if ours == "alive-on-another-address" else {}
        server = SglangServer("our/model", command=STANDIN, port=foreign.port, env=env, log_dir=tmp_path / "ours",
                              name="ours", launch_timeout=20)
        try:
            with pytest.raises(ServerStartError) as info:
                server.start()
        finally:
            server.stop()
        message = str(info.value)
        if ours == "alive-on-another-address":
            assert (f"port {foreign.port} is answered by another server (its GET /get_server_info says "
                    f"model_path='foreign/model', port={foreign.port})") in message
        else:
            assert re.search(rf"right after its health check passed|port {foreign.port} is answered by another "
                             "server", message), message
        assert server.pid is not None and not alive(server.pid) and not server.is_running()
        assert foreign.is_running()
        foreign.check_alive()
        assert foreign.served_model() == "foreign/model"
    finally:
        foreign.stop()


# ---------------------------------------------------------------- signals end the run, and its servers

SIGNAL_CONFTEST = """
import sys
import pytest
from pytest_lfm.runtime.pool import RuntimePool

STANDIN_PATH = {standin!r}


@pytest.fixture(scope="session")
def lfm_runtime_pool(tmp_path_factory):
    pool = RuntimePool([0], tmp_path_factory.mktemp("logs"), 20, server_command=[sys.executable, STANDIN_PATH])
    yield pool
    pool.stop()
"""
SIGNAL_TEST = """
import json
import os
import time
from pathlib import Path


def test_serves_for_a_minute(lfm_server):
    out = Path({out!r})
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({{"pid": lfm_server.pid, "log": str(lfm_server.log_path)}}))
    os.replace(tmp, out)
    time.sleep(60)
"""


def default_hangup() -> None:
    """The inner run starts with SIGHUP and SIGINT at their defaults, as a terminal's foreground job has them, also
    under `nohup` (which ignores SIGHUP for everything it starts) or as a background job of a script (started with
    SIGINT ignored); the plugin leaves an ignored signal ignored."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signals", ["SIGTERM", "SIGHUP", "SIGINT-twice", "SIGINT-at-once"])
def test_a_signal_ends_the_run_and_stops_its_servers(tmp_path: Path, signals: str) -> None:
    """SIGTERM (a timeout, a CI cancel) and SIGHUP (a closed terminal) end the run as a Ctrl-C does: teardown stops
    the server. A second Ctrl-C while a stop waits for a server that ignores SIGTERM kills it outright (the stop
    would otherwise wait 30 s); one right after the first (while pytest reports it) does the same without breaking
    pytest's teardown and report into a raw traceback."""
    out = tmp_path / "server.json"
    project = tmp_path / "project"
    project.mkdir()
    (project / "conftest.py").write_text(SIGNAL_CONFTEST.format(standin=STANDIN_PATH))
    (project / "test_signal.py").write_text(SIGNAL_TEST.format(out=str(out)))
    server_args = ["--lfm-server-arg=--spawn-child", f"--lfm-server-arg=--marker={tmp_path}"]  # the stand-in ignores it
    if signals.startswith("SIGINT"):
        server_args.append("--lfm-server-arg=--ignore-sigterm")
    output = tmp_path / "pytest.log"
    with output.open("wb") as log:
        run = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist",
                                "--lfm-model", "LiquidAI/LFM2-350M", *server_args, "test_signal.py"],
                               cwd=project, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, preexec_fn=default_hangup)
    pid, children = None, []
    try:
        wait_for(lambda: out.exists() or run.poll() is not None, 60, "the inner test wrote its server's pid")
        assert run.poll() is None, output.read_text()
        served = json.loads(out.read_text())
        pid, server_log = int(served["pid"]), Path(served["log"])
        children = child_pids(server_log)
        assert alive(pid) and all(alive(child) for child in children)
        sent = time.monotonic()
        if signals == "SIGINT-twice":
            run.send_signal(signal.SIGINT)
            wait_for(lambda: "ignoring SIGTERM" in server_log.read_text(), 20, "the teardown's stop began")
            time.sleep(max(0.0, 0.3 - (time.monotonic() - sent)))
            run.send_signal(signal.SIGINT)  # lands while stop() waits for the server to exit
        elif signals == "SIGINT-at-once":
            run.send_signal(signal.SIGINT)
            time.sleep(0.2)
            run.send_signal(signal.SIGINT)
        else:
            run.send_signal(getattr(signal, signals))
        run.wait(40)
        took = time.monotonic() - sent
        text = output.read_text()
        if signals.startswith("SIGINT"):
            assert took < 20, (took, text)  # not the 30 s a stop gives a server that ignores SIGTERM
            assert run.returncode == pytest.ExitCode.INTERRUPTED, text
            assert "pytest-lfm: SIGINT again: killing the runtimes now" in text, text
            assert "Traceback (most recent call last)" not in text, text
        else:
            assert took < 15, (took, text)
            assert run.returncode == pytest.ExitCode.INTERRUPTED, text
            assert f"pytest-lfm: {signals}: stopping the runtimes" in text, text
        wait_for(lambda: not alive(pid) and not any(map(alive, children)), 5, "the server and its children gone")
        assert group_alive(pid) == [], text
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait(10)
        for leftover in [*standins_of(str(tmp_path)), *children]:  # what a failure left: kill it, then report
            if alive(leftover):
                os.kill(leftover, signal.SIGKILL)


# ---------------------------------------------------------------- --lfm-base-url


@pytest.fixture
def not_openai(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SglangServer]:
    with SglangServer("standin/model", ["--models", request.param], command=STANDIN, log_dir=tmp_path,
                      name="standin", launch_timeout=20) as server:
        yield server


@pytest.mark.parametrize(("not_openai", "answer"), [("404", "HTTP 404"), ("not-json", "JSONDecodeError")],
                         indirect=["not_openai"])
def test_a_healthy_server_without_a_model_list_is_not_usable(not_openai: SglangServer, answer: str) -> None:
    external = ExternalServer(f"{not_openai.base_url}/v1")
    with pytest.raises(ExternalServerError) as info:
        external.verify()
    message = str(info.value)
    assert info.value.base_url == not_openai.base_url
    assert f"the server at {not_openai.base_url} (--lfm-base-url) is healthy but not OpenAI-compatible: " \
           f"GET {not_openai.base_url}/v1/models gave " in message and answer in message, message
    assert "leave --lfm-base-url out" in message


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BASE_URL_TESTS = """
def test_server(lfm_server):
    pass

def test_client(lfm_client):
    pass

def test_name(lfm_model_name):
    pass

def test_version(lfm_sglang_version):
    pass

def test_http(lfm_http):
    pass
"""


@pytest.mark.parametrize("server", ["unreachable", "not-openai"])
def test_a_base_url_that_cannot_be_tested_stops_the_run_once(
    pytester: pytest.Pytester, tmp_path: Path, server: str,
) -> None:
    if server == "unreachable":
        url, problem, standin = f"http://127.0.0.1:{_unused_port()}", "is not usable: GET /health: ConnectError", None
    else:
        standin = SglangServer("standin/model", ["--models", "404"], command=STANDIN, log_dir=tmp_path,
                               name="standin", launch_timeout=20).start()
        url, problem = standin.base_url, "is healthy but not OpenAI-compatible"
    try:
        pytester.makepyfile(BASE_URL_TESTS)
        result = pytester.runpytest("-p", "no:cacheprovider", "--lfm-base-url", url, "--lfm-model",
                                    "LiquidAI/LFM2-350M")
    finally:
        if standin is not None:
            standin.stop()
    text = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, text
    assert text.count(f"pytest-lfm: the server at {url} (--lfm-base-url) {problem}") == 1, text
    outcomes = result.parseoutcomes()
    assert not any(outcomes.get(key) for key in ("passed", "failed", "errors", "error")), text


def health_hits(server: SglangServer) -> int:
    assert server.log_path is not None
    return server.log_path.read_text().count('"GET /health HTTP/1.1"')


@pytest.fixture
def external(tmp_path: Path) -> Iterator[SglangServer]:
    with SglangServer("standin/model", command=STANDIN, log_dir=tmp_path, name="external",
                      launch_timeout=20) as server:
        yield server


def test_a_base_url_is_checked_once_per_run_not_per_test(pytester: pytest.Pytester, external: SglangServer) -> None:
    assert health_hits(external) == 0  # the start itself polls /health_generate
    pytester.makepyfile(BASE_URL_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--lfm-base-url", f"{external.base_url}/v1",
                                "--lfm-model", "LiquidAI/LFM2-350M")
    result.assert_outcomes(passed=5)
    assert health_hits(external) == 1


def test_a_failed_test_against_a_base_url_reports_the_servers_health(
    pytester: pytest.Pytester, external: SglangServer,
) -> None:
    pytester.makepyfile("""
def test_passes(lfm_server):
    pass

def test_fails(lfm_server):
    assert False, "the answer was wrong"
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rf", "--lfm-base-url", external.base_url,
                                "--lfm-model", "LiquidAI/LFM2-350M")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*- pytest-lfm server health -*",
                                 f"{external.base_url} after this failure: healthy"])
    assert health_hits(external) == 2  # once when first used, once for the failure


# ---------------------------------------------------------------- starts and stops at the edges


def test_a_server_that_dies_while_starting_leaves_no_detached_descendant(tmp_path: Path) -> None:
    server = SglangServer("standin/model", ["--spawn-child", "--crash-after-requests", "0"], command=STANDIN,
                          log_dir=tmp_path, name="dies", launch_timeout=20)
    children: list[int] = []
    try:
        with pytest.raises(ServerStartError, match="exited with code 7"):
            server.start()  # its first health check crashes it
        assert server.log_path is not None
        children = child_pids(server.log_path)
        assert [pid for pid in children if alive(pid)] == []
    finally:
        for leftover in children:
            if alive(leftover):
                os.kill(leftover, signal.SIGKILL)


def test_a_start_a_test_waits_for_is_not_a_background_start(tmp_path: Path, model: ModelSpec) -> None:
    config = variant(model, "asked")
    pool = make_pool(tmp_path, [PlannedLaunch("server", config, ["t1"])], capacity_mib=2 * NEED_MIB)
    try:
        pool.server(config)
        [launch] = pool.launches
        assert not launch.background, launch
    finally:
        pool.stop()


def test_an_uncapped_server_does_not_start_while_the_one_before_is_still_stopping(
    tmp_path: Path, model: ModelSpec,
) -> None:
    first_config = variant(model, "slow-to-stop", "--slow-stop", "3")  # exits 3 s after SIGTERM, as sglang can
    second_config = variant(make_model(tmp_path, "uncapped", capped=False), "alone")
    pool = make_pool(tmp_path, [PlannedLaunch("server", first_config, ["a1"]),
                                PlannedLaunch("server", second_config, ["b1"])],
                     capacity_mib=10 * NEED_MIB, max_starting=2)
    try:
        first = pool.server(first_config)
        pool.test_done("a1")
        time.sleep(0.5)  # time enough for a start in the background, had one been made
        second_record = record(pool, second_config)
        assert second_record is None or not first.is_running(), (second_record, first)
    finally:
        pool.stop()


FAKE_BUILD = """
import json, os, sys, time
from pytest_lfm import micro
name = sys.argv[-1]
log = os.path.join(os.environ["FAKE_BUILD_LOG"])
with open(log, "a") as f:
    f.write(f"start {name} {time.time()}\\n")
print(f"step 1 loss 2.5 ({name})", flush=True)
time.sleep(1.0)
if os.environ.get("FAKE_BUILD_FAILS") == name:
    print("CUDA error: out of memory", flush=True)
    sys.exit(3)
path = micro.checkpoint_dir(name)
path.mkdir(parents=True, exist_ok=True)
(path / "config.json").write_text(json.dumps({"model_type": "lfm2"}))
(path / micro.INFO_FILE).write_text("{}")
with open(log, "a") as f:
    f.write(f"end {name} {time.time()}\\n")
"""


@pytest.fixture
def fake_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Micro checkpoints 'built' by a script that logs a step and writes the build record, 1 s each."""
    monkeypatch.setenv("LFM_MICRO_CACHE", str(tmp_path / "micro"))
    monkeypatch.setenv("FAKE_BUILD_LOG", str(tmp_path / "builds.log"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    script = tmp_path / "fake_build.py"
    script.write_text(FAKE_BUILD)
    return script


def test_micro_checkpoints_build_side_by_side_each_in_a_process_of_its_own(tmp_path: Path, fake_builds: Path) -> None:
    matrix = load_matrix()
    dense, moe = (LaunchConfig(matrix.get(name)) for name in ("micro-dense", "micro-moe"))  # type: ignore[arg-type]
    logged: list[str] = []
    pool = make_pool(tmp_path, [PlannedLaunch("server", dense, ["a"]), PlannedLaunch("server", moe, ["b"])],
                     capacity_mib=10 * NEED_MIB, max_starting=2, log=logged.append)
    pool.starter.builds.command = [sys.executable, str(fake_builds)]
    try:
        server = pool.server(dense)
        assert server.is_running()
        pool.server(moe)
    finally:
        pool.stop()
    events = {tuple(line.split()[:2]): float(line.split()[2])
              for line in (tmp_path / "builds.log").read_text().splitlines()}
    assert events[("start", "moe")] < events[("end", "dense")], events  # the second began before the first ended
    for config in (dense, moe):  # each start's record says how much of it was the build (the fake one takes 1 s)
        launch = record(pool, config)
        assert launch is not None and launch.build_seconds is not None and launch.build_seconds >= 1.0, launch
    assert "micro dense: step 1 loss 2.5 (dense)" in logged, logged
    assert not [child for child in psutil.Process().children(recursive=True) if child.is_running()
                and child.status() != psutil.STATUS_ZOMBIE and str(fake_builds) in child.cmdline()]


def test_a_failed_micro_build_names_its_output_and_the_command_to_rerun(tmp_path: Path, fake_builds: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_BUILD_FAILS", "dense")
    dense = LaunchConfig(load_matrix().get("micro-dense"))  # type: ignore[arg-type]
    pool = make_pool(tmp_path, [PlannedLaunch("server", dense, ["a"])], capacity_mib=10 * NEED_MIB)
    pool.starter.builds.command = [sys.executable, str(fake_builds)]
    try:
        with pytest.raises(RuntimeError, match=r"(?s)micro checkpoint dense did not build .*exited with code 3.*"
                                               r"CUDA error: out of memory.*pytest-lfm micro build dense --verbose"):
            pool.server(dense)
        [launch] = pool.launches
        assert launch.error and "did not build" in launch.error
    finally:
        pool.stop()


POOL_MESSAGES = """
import threading
import pytest
from pytest_lfm.state import RUN

@pytest.fixture
def runtime(request):
    say = request.config.stash[RUN].messages
    say("starting server x")  # from the main thread, during the setup pytest captures
    worker = threading.Thread(target=say, args=("micro dense: step 100 loss 0.5 (3s)",))
    worker.start()
    worker.join()
    say("waiting for server x (15 s)")
    return "x"

def test_uses_the_runtime(runtime):
    assert runtime == "x"
"""


def test_the_pools_messages_reach_the_terminal_while_pytest_captures_a_test(pytester: pytest.Pytester) -> None:
    """A start, a build's progress and a wait are shown while a passing test sets up, not swallowed with its
    captured output."""
    pytester.makepyfile(POOL_MESSAGES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*pytest-lfm: starting server x*", "*pytest-lfm: micro dense: step 100 loss 0.5*",
                                 "*pytest-lfm: waiting for server x (15 s)*"])
