"""pytest-lfm's default fixtures: the settings, the model and runtime configuration under test, the runtime pool,
servers (launched, external or replayed), clients, engines and the prompt script."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from pytest_lfm import clients, report
from pytest_lfm.errors import ExternalServerError
from pytest_lfm.matrix import LaunchConfig, ModelSpec
from pytest_lfm.messages import NO_RUNTIME
from pytest_lfm.micro.script import Script, load_script
from pytest_lfm.recording.exchange import RecordingError
from pytest_lfm.recording.replay import ReplayServer
from pytest_lfm.recording.store import Store, open_store, stale_micro_recording, store_id
from pytest_lfm.report.notes import QUIET
from pytest_lfm.runtime import ExternalServer, HttpServer, SglangEngine, SglangServer, hosts
from pytest_lfm.runtime.pool import RuntimePool
from pytest_lfm.settings import Settings
from pytest_lfm.state import RUN


@pytest.fixture(scope="session")
def lfm_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved pytest-lfm settings."""
    return pytestconfig.stash[RUN].settings


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
                       plan=pytestconfig.stash[RUN].plan, log=pytestconfig.stash[RUN].messages)
    if hasattr(pytestconfig, "workerinput"):  # xdist: start ahead only the models this worker is given
        current = pytestconfig.stash[RUN].current_model
        pool.active_models = {current} if current is not None else set()
    pytestconfig.stash[RUN].pool = pool
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
) -> Iterator[HttpServer]:
    """The sglang server for the configuration under test: launched once (as the plan says), reused, stopped after
    its last test. With --lfm-base-url: that server, checked once; a server that cannot be tested ends the run."""
    if lfm_settings.replay_dir and lfm_recording is not None:
        yield ReplayServer(lfm_recording)
        return
    if lfm_settings.base_url:
        run = pytestconfig.stash[RUN]
        run.external = run.external or ExternalServer(lfm_settings.base_url)
        server: SglangServer | ExternalServer = run.external
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
    request: pytest.FixtureRequest, lfm_server: HttpServer,
    lfm_recording: Store | None,
) -> HttpServer:
    """``lfm_server``, checked to be alive: a local server's process (free), a server someone else started once.

    In replay, a test the recording has no exchange of runs, and fails at its first request (one that sends none,
    e.g. a test skipping a model, keeps its verdict); under --lfm-replay-missing skip it is skipped here."""
    replaying = isinstance(lfm_server, ReplayServer) and lfm_recording is not None
    if (replaying and request.config.stash[RUN].settings.replay_missing == "skip"
            and not lfm_recording.has_test(request.node.nodeid)):  # type: ignore[union-attr]
        pytest.skip(f"not in the recording {lfm_recording.root}: this test did not run when it was made "  # type: ignore[union-attr]
                    "(re-record on a GPU host with --lfm-record)")
    lfm_server.check_alive()
    return lfm_server


@pytest.fixture
def lfm_quiet(
    request: pytest.FixtureRequest, lfm_runtime_pool: RuntimePool | None,
    lfm_live_server: HttpServer,
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
def lfm_model_name(lfm_live_server: HttpServer) -> str:
    """The ``model`` string to send in requests: what the server lists in /v1/models."""
    return lfm_live_server.served_model()


@pytest.fixture
def lfm_http(
    request: pytest.FixtureRequest, lfm_live_server: HttpServer,
    lfm_recording: Store | None,
) -> Iterator[httpx.Client]:
    """An httpx client on the server's root URL, for the endpoints outside the OpenAI API."""
    with clients.http_client(lfm_live_server.base_url, lfm_recording, request.node.nodeid) as client:
        yield client


@pytest.fixture
def lfm_client(
    request: pytest.FixtureRequest, lfm_live_server: HttpServer,
    lfm_recording: Store | None,
) -> Iterator[openai.OpenAI]:
    """An OpenAI client for the server under test (no retries: every failure shows)."""
    client = clients.openai_client(lfm_live_server.base_url, lfm_recording, request.node.nodeid)
    yield client
    client.close()


@pytest.fixture
def lfm_async_client(
    request: pytest.FixtureRequest, lfm_live_server: HttpServer,
    lfm_recording: Store | None,
) -> openai.AsyncOpenAI:
    """An async OpenAI client for the server under test (no retries)."""
    return clients.async_openai_client(lfm_live_server.base_url, lfm_recording, request.node.nodeid)


@pytest.fixture
def lfm_sglang_version(lfm_live_server: HttpServer) -> str:
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
