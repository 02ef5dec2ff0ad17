"""pytest-lfm's hooks and default fixtures. The logic lives in the modules these call."""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from pytest_lfm import report
from pytest_lfm.errors import ExternalServerError
from pytest_lfm.matrix import CAPABILITIES, PROFILES, LaunchConfig, Matrix, MatrixError, ModelSpec, load_matrix
from pytest_lfm.measure.fidelity import FIDELITY_MARKER
from pytest_lfm.micro.script import Script, load_script
from pytest_lfm.recording.exchange import RecordingError
from pytest_lfm.recording.replay import ReplayServer
from pytest_lfm.recording.store import Store, open_store, stale_micro_recording, store_id, unreplayable
from pytest_lfm.report.notes import QUIET
from pytest_lfm.runtime import ExternalServer, SglangEngine, SglangServer, compat, hosts, plan
from pytest_lfm.runtime.pool import RuntimePool, default_max_starting
from pytest_lfm.runtime.server import kill_all
from pytest_lfm.settings import DTYPES, Settings, add_options, describe, resolve
from pytest_lfm.state import PLAN, POOL, SELECTED, SETTINGS

MATRIX = pytest.StashKey[Matrix]()
EXTERNAL = pytest.StashKey[ExternalServer]()
MESSAGES = pytest.StashKey["Messages"]()
SIGNAL_HANDLERS = pytest.StashKey[dict[int, Any]]()  # the handlers the run replaced, restored at its end
CURRENT_MODEL = pytest.StashKey[str]()  # the model of the test being set up (xdist: which models this worker runs)

NO_RUNTIME = ("no CUDA GPU here and no --lfm-base-url: the suites that need an sglang runtime run on a GPU host, "
              "or against a running server with --lfm-base-url URL, or from a recording with --lfm-replay DIR")


def requires_marker(*capabilities: str) -> None:
    """Marker signature: the test needs these model capabilities (chat, tools, vision)."""
    unknown = set(capabilities) - set(CAPABILITIES)
    if unknown or not capabilities:
        raise ValueError(f"lfm_requires takes capabilities from {CAPABILITIES}, got {capabilities}")


def launch_marker(
    *, dtype: str | None = None, profile: str = "default", extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> None:
    """Marker signature: run the test on this variant of each selected model's runtime."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"lfm_launch dtype must be one of {DTYPES}, got {dtype!r}")
    if profile not in PROFILES:
        raise ValueError(f"lfm_launch profile must be one of {tuple(PROFILES)}, got {profile!r}")


def live_marker() -> None:
    """Marker signature: the test needs a runtime of its own or its timings (an Engine, a second launch, latency),
    which a recording cannot answer: deselected under --lfm-replay."""


MARKERS: dict[str, Callable[..., None]] = {"lfm_requires": requires_marker, "lfm_launch": launch_marker,
                                           "lfm_live": live_marker}


def _marker_kwargs(node: pytest.Function | pytest.Item, name: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    marker = node.get_closest_marker(name)
    if marker is None:
        return (), {}
    try:
        MARKERS[name](*marker.args, **marker.kwargs)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"{node.nodeid}: bad @pytest.mark.{name}: {exc}") from None
    return marker.args, dict(marker.kwargs)


# ---------------------------------------------------------------- hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, func in MARKERS.items():
        doc = (func.__doc__ or "").split(": ", 1)[-1]
        config.addinivalue_line("markers", f"{name}{inspect.signature(func)}: {doc}".replace(" -> None", ""))
    settings = resolve(config, dict(os.environ))
    try:
        matrix = load_matrix(settings.matrix_paths)
    except MatrixError as exc:
        raise pytest.UsageError(f"pytest-lfm: {exc}") from None
    try:
        selected = matrix.select(settings.models)
    except KeyError as exc:
        raise pytest.UsageError(
            f"pytest-lfm: {matrix.selection_error(exc.args[0], settings.sources['model'])}") from None
    if settings.base_url and len(selected) != 1:
        raise pytest.UsageError(
            f"pytest-lfm: --lfm-base-url {settings.base_url} tests one running server, but the model selection "
            f"({', '.join(settings.models)}) names {len(selected)} models. Pass --lfm-model with the id of the "
            "model that server serves.")
    if problem := unreplayable(settings, selected):
        raise pytest.UsageError(problem)
    config.stash[SETTINGS], config.stash[MATRIX], config.stash[SELECTED] = settings, matrix, selected
    config.stash[POOL] = None
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"  # all tests of one model on one worker (xdist_group marks below)
    if getattr(config, "workerinput", {}).get("lfm_loadgroup"):
        config.option.loadgroup = True  # a worker derives loadgroup from its own arguments: see pytest_configure_node
    config.addinivalue_line("markers", FIDELITY_MARKER)
    config.stash[PLAN] = []
    config.stash[MESSAGES] = Messages(config)
    config.pluginmanager.register(RuntimeHooks(config), "lfm-runtime")
    _end_on_signals(config)
    report.register(config)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: pytest ends the run as on Ctrl-C (teardown, report), so no runtime outlives it."""


def _end_on_signals(config: pytest.Config) -> None:
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
                config.stash[MESSAGES].write_now(f"pytest-lfm: {name} again: killing the runtimes now (once more "
                                                 "to stop waiting for them)")
            pool = config.stash.get(POOL, None)
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
    config.stash[SIGNAL_HANDLERS] = previous


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


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: tell the worker that the controller schedules by xdist_group (the switch in pytest_configure)."""
    node.workerinput["lfm_loadgroup"] = node.config.option.dist == "loadgroup"


def pytest_unconfigure(config: pytest.Config) -> None:
    pool = config.stash.get(POOL, None)
    if pool is not None:
        pool.stop()
    for sig, handler in config.stash.get(SIGNAL_HANDLERS, {}).items():
        signal.signal(sig, handler)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[SETTINGS]
    versions = []
    for dist in ("sglang", "torch", "transformers"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} not installed")
    gpus = hosts.list_gpus()
    gpu_line = ", ".join(f"{g.index}: {g.name}" for g in gpus) if gpus else "none (CUDA runtime tests will skip)"
    return [
        "pytest-lfm settings (value, source):",
        *describe(settings),
        f"pytest-lfm models: {', '.join(m.id for m in config.stash[SELECTED])}",
        *config.stash[MATRIX].describe_overrides(),
        f"pytest-lfm runtime: {'; '.join(versions)}; GPUs: {gpu_line}",
    ]


def _launch_configs(metafunc: pytest.Metafunc) -> list[Any]:
    config = metafunc.config
    settings = config.stash[SETTINGS]
    required, _ = _marker_kwargs(metafunc.definition, "lfm_requires")
    _, variant = _marker_kwargs(metafunc.definition, "lfm_launch")
    dtypes = (variant["dtype"],) if variant.get("dtype") else settings.dtypes
    params = []
    for model in config.stash[SELECTED]:
        for dtype in dtypes:
            launch = LaunchConfig(
                model, dtype, variant.get("profile", "default"),
                (*settings.server_args, *variant.get("extra_args", ())),
                tuple(sorted(variant.get("env", {}).items())),
            )
            missing = set(required) - model.capabilities
            marks = [pytest.mark.xdist_group(model.id)]  # all tests of one model on one worker (loadgroup)
            if missing:
                marks.append(pytest.mark.skip(reason=f"{model.id} lacks capability {', '.join(sorted(missing))}"))
            elif dtype not in model.dtypes:
                marks.append(pytest.mark.skip(reason=f"{model.id} is not qualified for {dtype} (matrix dtypes)"))
            params.append(pytest.param(launch, id=launch.id, marks=marks))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lfm_launch" in metafunc.fixturenames:
        metafunc.parametrize("lfm_launch", _launch_configs(metafunc), indirect=True, scope="session")


QUICK_LEAVES_OUT = "not in the quick level (--lfm-level quick): a launch variant, an engine or a timing/memory check"
FIDELITY_OPT_IN = "opt-in (it starts sglang.bench_serving several times): select it with -m lfm_fidelity"


def _quick_leaves_out(item: pytest.Item) -> bool:
    """The quick level runs the functional suites on each model's own server only."""
    _, variant = _marker_kwargs(item, "lfm_launch")
    names = set(getattr(item, "fixturenames", ()))
    return bool(variant) or "lfm_engine" in names or plan.is_quiet(item) or (
        "lfm_runtime_pool" in plan.own_args(item) and "lfm_server" not in names)


def _order_key(settings: Settings, models: list[str], item: pytest.Item, first: dict[str, int]) -> tuple[int, ...]:
    """Timing and memory checks last (no runtime starts or serves beside them); before them each selected model's
    own configurations in selection order, its engine before its server (the engine's start overlaps the server's),
    then the variants markers ask for (float16 probe, low-latency profile) in order of appearance; within a
    configuration, tests that drive the pool themselves last (they stop what they test), and an engine's tests that
    need its server too after those that do not."""
    launch = plan.launch_of(item)
    if launch is None:
        return (-1, 0, 0, 0, 0)
    names = getattr(item, "fixturenames", ())
    kind = "engine" if "lfm_engine" in names else "server"
    order = first.setdefault(plan.launch_key(kind, launch), len(first))
    # an engine test that compares with the server waits for it: the engine's own tests go first
    drives = int("lfm_runtime_pool" in plan.own_args(item)) * 2 + int(kind == "engine" and "lfm_server" in names)
    own = LaunchConfig(launch.model, launch.dtype, "default", settings.server_args)
    block = ((0, models.index(launch.model.id), settings.dtypes.index(launch.dtype), kind != "engine")
             if launch == own and launch.dtype in settings.dtypes else (1, order, 0, 0))
    return (int(plan.is_quiet(item)), *block, drives)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out what the run does not ask for (the quick level's exclusions; under --lfm-replay the ``lfm_live``
    tests, which a recording cannot answer), mark opt-in tests to skip at collection (they then launch nothing),
    order the tests by runtime configuration and make the launch plan from that order."""
    settings = config.stash[SETTINGS]
    dropped = [item for item in items if (settings.replay_dir and item.get_closest_marker("lfm_live"))
               or (settings.level == "quick" and _quick_leaves_out(item))]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        kept = set(map(id, dropped))
        items[:] = [item for item in items if id(item) not in kept]
    fidelity_asked = "lfm_fidelity" in (config.getoption("markexpr", "") or "")
    installed = compat.installed_sglang_version() if not settings.base_url and not settings.replay_dir else None
    for item in items:
        if item.get_closest_marker("lfm_fidelity") and not fidelity_asked:
            item.add_marker(pytest.mark.skip(reason=FIDELITY_OPT_IN))
        launch = plan.launch_of(item)
        if installed and launch is not None and not compat.at_least(installed, launch.model.min_sglang):
            item.add_marker(pytest.mark.skip(reason=(
                f"sglang {installed} is installed; {launch.model.id} needs sglang >= {launch.model.min_sglang} "
                f"(min_sglang in {launch.model.source})")))
    models = [m.id for m in config.stash[SELECTED]]
    first: dict[str, int] = {}
    items.sort(key=lambda item: _order_key(settings, models, item, first))
    if getattr(config.option, "loadgroup", False):
        _restore_xdist_group_ids(items)
    config.stash[PLAN] = plan.build_plan(items) if _launches_here(settings) else []


def _launches_here(settings: Settings) -> bool:
    return not settings.base_url and not settings.replay_dir and bool(_visible_gpus(settings))


def _visible_gpus(settings: Settings) -> list[int]:
    visible = [g.index for g in hosts.list_gpus()]
    return list(settings.gpus) if settings.gpus is not None and visible else visible


def pytest_collection_finish(session: pytest.Session) -> None:
    """Show the launch plan before anything runs (also under --collect-only)."""
    config = session.config
    if hasattr(config, "workerinput"):
        return
    settings = config.stash[SETTINGS]
    planned = config.stash[PLAN]
    if settings.base_url:
        where = f"--lfm-base-url {settings.base_url}"
    elif settings.replay_dir:
        where = f"--lfm-replay {settings.replay_dir}"
    elif not planned:
        where = "no CUDA GPU visible" if not _visible_gpus(settings) else "no selected test needs a runtime"
    else:
        gpus = {g.index: g for g in hosts.list_gpus()}
        chosen = _visible_gpus(settings)
        where = ", ".join(f"GPU {i} ({gpus[i].name}, {gpus[i].memory_total_mib} MiB)" for i in chosen if i in gpus)
    estimates = {p.key: plan.estimate_mib(p.config) for p in planned}
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        for line in plan.describe(planned, where=where, estimates=estimates, max_starting=default_max_starting()):
            terminal.write_line(line)


class RuntimeHooks:
    """Per-test hooks of the runtime pool, registered at configure: tell the pool which models this worker runs and
    which tests are done (it stops a runtime after its last test), and write the pool's messages."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        launch = plan.launch_of(item)
        if launch is not None:
            self.config.stash[CURRENT_MODEL] = launch.model.id
            pool = self.config.stash.get(POOL, None)
            if pool is not None:
                pool.activate(launch.model.id)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        pool = self.config.stash.get(POOL, None)
        if pool is not None:
            pool.test_done(nodeid)
        self.config.stash[MESSAGES].flush()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test against a server someone else started says whether that server is still healthy (it is
    checked once when first used, not before every test: sglang's health endpoints take a second or more)."""
    report: pytest.TestReport = yield
    external = item.config.stash.get(EXTERNAL, None)
    if report.failed and external is not None and "lfm_server" in getattr(item, "fixturenames", ()):
        problem = external.health()
        report.sections.append(("pytest-lfm server health", f"{external.base_url} after this failure: "
                                + ("healthy" if problem is None else f"NOT healthy: {problem}")))
    return report


def _restore_xdist_group_ids(items: list[pytest.Item]) -> None:
    """xdist <= 3.8 groups by an "@group" suffix it writes to ``item._nodeid``, which pytest >= 9.2 no longer reads
    (pytest-xdist#1386): without this, --dist loadgroup silently spreads one model over every worker."""
    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        if groups and hasattr(item, "_id") and item.nodeid.rfind("@") <= item.nodeid.rfind("]"):
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def lfm_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved pytest-lfm settings."""
    return pytestconfig.stash[SETTINGS]


@pytest.fixture(scope="session")
def lfm_launch(request: pytest.FixtureRequest) -> LaunchConfig:
    """The runtime configuration under test (parametrized over models x dtypes)."""
    launch: LaunchConfig = request.param
    return launch


@pytest.fixture(scope="session")
def lfm_model(lfm_launch: LaunchConfig) -> ModelSpec:
    """The model under test."""
    return lfm_launch.model


@pytest.fixture(scope="session")
def lfm_dtype(lfm_launch: LaunchConfig) -> str:
    """The dtype the runtime under test serves with."""
    return lfm_launch.dtype


@pytest.fixture(scope="session")
def lfm_gpus(lfm_settings: Settings) -> list[int]:
    """This worker's GPUs: --lfm-gpu (or all visible GPUs) dealt round-robin to the xdist workers (one each with
    ``-n`` equal to the GPU count; all of them without xdist, for ``--tp-size N``); [] without a GPU."""
    visible = [g.index for g in hosts.list_gpus()]
    chosen = list(lfm_settings.gpus) if lfm_settings.gpus is not None else visible
    if not chosen:
        return []
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    return chosen[hosts.worker_index() % len(chosen)::workers]


@pytest.fixture(scope="session")
def lfm_runtime_pool(
    pytestconfig: pytest.Config, lfm_settings: Settings, lfm_gpus: list[int], tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RuntimePool | None]:
    """The runtime pool of this worker (it follows the launch plan), or None when no runtime can be started here."""
    if not lfm_gpus:
        yield None
        return
    pool = RuntimePool(lfm_gpus, tmp_path_factory.mktemp("lfm-logs"), lfm_settings.launch_timeout,
                       plan=pytestconfig.stash[PLAN], log=pytestconfig.stash[MESSAGES])
    if hasattr(pytestconfig, "workerinput"):  # xdist: start ahead only the models this worker is given
        pool.active_models = {pytestconfig.stash[CURRENT_MODEL]} if CURRENT_MODEL in pytestconfig.stash else set()
    pytestconfig.stash[POOL] = pool
    yield pool
    pool.stop()


@pytest.fixture(scope="session")
def lfm_recording(lfm_settings: Settings, lfm_launch: LaunchConfig) -> Iterator[Store | None]:
    """The recording of the configuration under test (--lfm-record / --lfm-replay), or None."""
    directory = lfm_settings.record_dir or lfm_settings.replay_dir
    if directory is None:
        yield None
        return
    if lfm_settings.replay_dir and not (Path(directory) / store_id(lfm_launch.id)).is_dir():
        pytest.skip(f"no recording of {lfm_launch.id} in {directory}: this configuration did not run when it was "
                    "made (re-record on a GPU host with --lfm-record)")
    try:
        store = open_store(directory, lfm_launch.id, "record" if lfm_settings.record_dir else "replay")
        stale = (stale_micro_recording(store, lfm_launch.model.micro)
                 if lfm_settings.replay_dir and lfm_launch.model.micro else None)
    except RecordingError as exc:
        pytest.fail(str(exc), pytrace=False)
    if stale:
        pytest.fail(stale, pytrace=False)
    yield store
    store.close()


@pytest.fixture(scope="session")
def lfm_server(
    pytestconfig: pytest.Config, lfm_settings: Settings, lfm_launch: LaunchConfig,
    lfm_runtime_pool: RuntimePool | None, lfm_recording: Store | None,
) -> Iterator[SglangServer | ExternalServer | ReplayServer]:
    """The sglang server for the configuration under test: launched once (as the plan says), reused, stopped after
    its last test. With --lfm-base-url: that server, checked once; a server that cannot be tested ends the run."""
    if lfm_settings.replay_dir and lfm_recording is not None:
        yield ReplayServer(lfm_recording)
        return
    if lfm_settings.base_url:
        server: SglangServer | ExternalServer = pytestconfig.stash.setdefault(
            EXTERNAL, ExternalServer(lfm_settings.base_url))
        try:
            server.start()
        except ExternalServerError as exc:
            pytest.exit(f"pytest-lfm: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    elif lfm_runtime_pool is None:
        pytest.skip(NO_RUNTIME)
    else:
        server = lfm_runtime_pool.server(lfm_launch)
    if lfm_recording is not None:
        lfm_recording.write_meta(
            sglang_version=server.sglang_version(), launch_args=server.command or lfm_launch.server_args(),
            served_model=server.served_model(), model=lfm_launch.model.id, dtype=lfm_launch.dtype,
            profile=lfm_launch.profile, startup_seconds=server.startup_seconds,
            gpus=[g.name for g in hosts.list_gpus()])
    yield server
    if lfm_runtime_pool is not None and isinstance(server, SglangServer):
        lfm_runtime_pool.release(server)


@pytest.fixture
def lfm_live_server(
    request: pytest.FixtureRequest, lfm_server: SglangServer | ExternalServer | ReplayServer,
    lfm_recording: Store | None,
) -> SglangServer | ExternalServer | ReplayServer:
    """``lfm_server``, checked to be alive: a local server's process (free), a server someone else started once.

    In replay, a test the recording has no exchange of runs, and fails at its first request (one that sends none,
    e.g. a test skipping a model, keeps its verdict); under --lfm-replay-missing skip it is skipped here."""
    replaying = isinstance(lfm_server, ReplayServer) and lfm_recording is not None
    if (replaying and request.config.stash[SETTINGS].replay_missing == "skip"
            and not lfm_recording.has_test(request.node.nodeid)):  # type: ignore[union-attr]
        pytest.skip(f"not in the recording {lfm_recording.root}: this test did not run when it was made "  # type: ignore[union-attr]
                    "(re-record on a GPU host with --lfm-record)")
    lfm_server.check_alive()
    return lfm_server


@pytest.fixture
def lfm_quiet(
    request: pytest.FixtureRequest, lfm_runtime_pool: RuntimePool | None,
    lfm_live_server: SglangServer | ExternalServer | ReplayServer,
) -> Iterator[dict[str, Any]]:
    """For a test that measures time or memory on the server under test: no other runtime of this worker starts
    or runs while it does (the others are paused). What was paused is noted in the report beside the figure."""
    if lfm_runtime_pool is None or not isinstance(lfm_live_server, SglangServer):
        yield {"starting": None, "alive": None, "note": "not launched here: what else runs is not known"}
        return
    with lfm_runtime_pool.quiet(lfm_live_server) as context:
        report.note(request, QUIET, context)
        yield context


@pytest.fixture
def lfm_model_name(lfm_live_server: SglangServer | ExternalServer | ReplayServer) -> str:
    """The ``model`` string to send in requests: what the server lists in /v1/models."""
    return lfm_live_server.served_model()


@pytest.fixture
def lfm_http(
    request: pytest.FixtureRequest, lfm_live_server: SglangServer | ExternalServer | ReplayServer,
    lfm_recording: Store | None,
) -> Iterator[httpx.Client]:
    """An httpx client on the server's root URL, for the endpoints outside the OpenAI API."""
    transport = lfm_recording.transport(request.node.nodeid) if lfm_recording else None
    with httpx.Client(base_url=lfm_live_server.base_url, timeout=120, transport=transport) as client:
        yield client


@pytest.fixture
def lfm_client(
    request: pytest.FixtureRequest, lfm_live_server: SglangServer | ExternalServer | ReplayServer,
    lfm_recording: Store | None,
) -> Iterator[openai.OpenAI]:
    """An OpenAI client for the server under test (no retries: every failure shows)."""
    http = openai.DefaultHttpxClient(transport=lfm_recording.transport(request.node.nodeid)) if lfm_recording else None
    client = openai.OpenAI(base_url=f"{lfm_live_server.base_url}/v1", api_key="EMPTY", max_retries=0, timeout=120,
                           http_client=http)
    yield client
    client.close()


@pytest.fixture
def lfm_async_client(
    request: pytest.FixtureRequest, lfm_live_server: SglangServer | ExternalServer | ReplayServer,
    lfm_recording: Store | None,
) -> openai.AsyncOpenAI:
    """An async OpenAI client for the server under test (no retries)."""
    http = (openai.DefaultAsyncHttpxClient(transport=lfm_recording.async_transport(request.node.nodeid))
            if lfm_recording else None)
    return openai.AsyncOpenAI(base_url=f"{lfm_live_server.base_url}/v1", api_key="EMPTY", max_retries=0,
                              timeout=120, http_client=http)


@pytest.fixture
def lfm_sglang_version(lfm_live_server: SglangServer | ExternalServer | ReplayServer) -> str:
    """The sglang version of the server under test (its /get_server_info, else the installed one)."""
    return lfm_live_server.sglang_version()


@pytest.fixture(scope="session")
def lfm_script() -> Script:
    """The micro checkpoints' script: the suites' prompts and, for micro checkpoints, the exact answers."""
    return load_script()


@pytest.fixture(scope="session")
def lfm_engine(
    lfm_settings: Settings, lfm_launch: LaunchConfig, lfm_runtime_pool: RuntimePool | None,
) -> SglangEngine:
    """An offline sgl.Engine for the configuration under test: one per configuration, stopped after its last test."""
    if lfm_settings.base_url or lfm_settings.replay_dir:
        pytest.skip("--lfm-base-url / --lfm-replay test a server over HTTP; the offline Engine needs a local GPU")
    if lfm_runtime_pool is None:
        pytest.skip(NO_RUNTIME)
    return lfm_runtime_pool.engine(lfm_launch)
