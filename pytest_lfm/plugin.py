"""pytest-lfm's hooks and default fixtures. The logic lives in the modules these call."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from pytest_lfm import hosts, latency, recording, report
from pytest_lfm.engine import SglangEngine
from pytest_lfm.matrix import CAPABILITIES, PROFILES, LaunchConfig, Matrix, MatrixError, ModelSpec, load_matrix
from pytest_lfm.micro.script import Script, load_script
from pytest_lfm.recording import RecordingError, ReplayServer, Store, open_store, stale_micro_recording, store_id
from pytest_lfm.runtime import RuntimePool
from pytest_lfm.server import ExternalServer, SglangServer
from pytest_lfm.settings import DTYPES, Settings, add_options, describe, resolve

SETTINGS = pytest.StashKey[Settings]()
MATRIX = pytest.StashKey[Matrix]()
SELECTED = pytest.StashKey[list[ModelSpec]]()
POOL = pytest.StashKey[RuntimePool | None]()

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
            f"pytest-lfm: unknown model {exc.args[0]!r} (from {settings.sources['model']}). Known ids: "
            f"{', '.join(matrix.ids())}; selectors: dense, moe, vl, micro, all. To add a model, write a "
            "[[model]] entry (see matrices/models.toml) in a TOML file and pass --lfm-matrix FILE.") from None
    if settings.base_url and len(selected) != 1:
        raise pytest.UsageError(
            f"pytest-lfm: --lfm-base-url {settings.base_url} tests one running server, but the model selection "
            f"({', '.join(settings.models)}) names {len(selected)} models. Pass --lfm-model with the id of the "
            "model that server serves.")
    if problem := recording.unreplayable(settings, selected):
        raise pytest.UsageError(problem)
    config.stash[SETTINGS], config.stash[MATRIX], config.stash[SELECTED] = settings, matrix, selected
    config.stash[POOL] = None
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"  # all tests of one model on one worker (xdist_group marks below)
    if getattr(config, "workerinput", {}).get("lfm_loadgroup"):
        config.option.loadgroup = True  # a worker derives loadgroup from its own arguments: see pytest_configure_node
    config.addinivalue_line("markers", latency.FIDELITY_MARKER)
    report.register(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: tell the worker that the controller schedules by xdist_group (the switch in pytest_configure)."""
    node.workerinput["lfm_loadgroup"] = node.config.option.dist == "loadgroup"


def pytest_unconfigure(config: pytest.Config) -> None:
    pool = config.stash.get(POOL, None)
    if pool is not None:
        pool.stop()


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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group tests by runtime configuration (each launches once): server checks, then load tests (pytest-benchmark:
    a server that load brings down takes no functional check with it), then engines, then tests that drive the
    runtime pool themselves (they stop whatever runs). (One model per xdist worker comes from the xdist_group mark
    on each lfm_launch parameter.) Each selected model's own launches run before the variants that markers ask
    for (a float16 probe, the low-latency profile), so a run cut short has qualified every model. Under
    --lfm-replay, the ``lfm_live`` tests are deselected: a compare of the replay's report with the recorded run's
    lists them as checks only the recorded run holds, not as changes."""
    settings = config.stash[SETTINGS]
    if settings.replay_dir:
        live = [item for item in items if item.get_closest_marker("lfm_live")]
        if live:
            config.hook.pytest_deselected(items=live)
            items[:] = [item for item in items if not item.get_closest_marker("lfm_live")]
    order: dict[str, int] = {}
    models = [m.id for m in config.stash[SELECTED]]

    def key(item: pytest.Item) -> tuple[int, int, int, int]:
        callspec = getattr(item, "callspec", None)
        launch = callspec.params.get("lfm_launch") if callspec else None
        if not isinstance(launch, LaunchConfig):
            return (-1, 0, 0, 0)
        own_args = inspect.signature(item.obj).parameters if isinstance(item, pytest.Function) else {}
        names = getattr(item, "fixturenames", ())
        phase = (3 if "lfm_runtime_pool" in own_args and "lfm_server" not in own_args
                 else 2 if "lfm_engine" in names else 1 if "benchmark" in names else 0)
        # every model's own launches (the selected dtypes), in selection order, before the marker variants
        # (probes, profiles, ...) in order of appearance; whatever order pytest's own reordering handed on
        first = order.setdefault(launch.id, len(order))
        own = LaunchConfig(launch.model, launch.dtype, "default", settings.server_args)
        if launch == own and launch.dtype in settings.dtypes:
            return (0, models.index(launch.model.id), settings.dtypes.index(launch.dtype), phase)
        return (1, first, 0, phase)

    items.sort(key=key)
    if getattr(config.option, "loadgroup", False):
        _restore_xdist_group_ids(items)


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
    """The runtime pool of this worker, or None when no runtime can be started here."""
    if not lfm_gpus:
        yield None
        return
    pool = RuntimePool(lfm_gpus, tmp_path_factory.mktemp("lfm-logs"), lfm_settings.launch_timeout)
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
    lfm_settings: Settings, lfm_launch: LaunchConfig, lfm_runtime_pool: RuntimePool | None,
    lfm_recording: Store | None,
) -> Iterator[SglangServer | ExternalServer | ReplayServer]:
    """The sglang server for the configuration under test: launched once, reused, stopped when done."""
    if lfm_settings.replay_dir and lfm_recording is not None:
        yield ReplayServer(lfm_recording)
        return
    if lfm_settings.base_url:
        server: SglangServer | ExternalServer = ExternalServer(lfm_settings.base_url)
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
    lfm_launch: LaunchConfig, lfm_runtime_pool: RuntimePool | None, lfm_recording: Store | None,
) -> SglangServer | ExternalServer | ReplayServer:
    """``lfm_server``, restarted if an engine took its GPU, and checked to be alive (the log tail if not).

    In replay, a test the recording has no exchange of runs, and fails at its first request (one that sends none,
    e.g. a test skipping a model, keeps its verdict); under --lfm-replay-missing skip it is skipped here."""
    replaying = isinstance(lfm_server, ReplayServer) and lfm_recording is not None
    if (replaying and request.config.stash[SETTINGS].replay_missing == "skip"
            and not lfm_recording.has_test(request.node.nodeid)):  # type: ignore[union-attr]
        pytest.skip(f"not in the recording {lfm_recording.root}: this test did not run when it was made "  # type: ignore[union-attr]
                    "(re-record on a GPU host with --lfm-record)")
    server = lfm_server
    if isinstance(server, SglangServer) and lfm_runtime_pool and not lfm_runtime_pool.is_current(server):
        server = lfm_runtime_pool.server(lfm_launch)
    server.check_alive()
    return server


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
) -> Iterator[SglangEngine]:
    """An offline sgl.Engine for the configuration under test; shut down when done."""
    if lfm_settings.base_url or lfm_settings.replay_dir:
        pytest.skip("--lfm-base-url / --lfm-replay test a server over HTTP; the offline Engine needs a local GPU")
    if lfm_runtime_pool is None:
        pytest.skip(NO_RUNTIME)
    engine = lfm_runtime_pool.engine(lfm_launch)
    yield engine
    lfm_runtime_pool.release(engine)
