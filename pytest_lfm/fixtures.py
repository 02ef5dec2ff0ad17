"""pytest-lfm's default fixtures: the settings, the model and runtime configuration under test, the runtime pool, the
recording and the prompt script; then the server, clients and engine of the configuration under test, which the
factories make (``factories``), as they make a suite's own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_lfm import factories
from pytest_lfm.matrix import LaunchConfig, ModelSpec
from pytest_lfm.micro.script import Script, load_script
from pytest_lfm.recording.exchange import RecordingError
from pytest_lfm.recording.store import Store, open_store, stale_micro_recording, store_id
from pytest_lfm.runtime import HttpServer, hosts
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
def lfm_script() -> Script:
    """The micro checkpoints' script: the suites' prompts and, for micro checkpoints, the exact answers."""
    return load_script()


# what a test runs against: what the factories make for the configuration under test (a suite's own are made the same)
lfm_server = factories.lfm_server_fixture()
lfm_live_server = factories.lfm_live_server_fixture("lfm_server")
lfm_quiet = factories.lfm_quiet_fixture("lfm_live_server")
lfm_client = factories.lfm_client_fixture("lfm_server", recording="lfm_recording")
lfm_async_client = factories.lfm_async_client_fixture("lfm_server", recording="lfm_recording")
lfm_http = factories.lfm_http_fixture("lfm_server", recording="lfm_recording")
lfm_engine = factories.lfm_engine_fixture()


@pytest.fixture
def lfm_model_name(lfm_live_server: HttpServer) -> str:
    """The ``model`` string to send in requests: what the server lists in /v1/models."""
    return lfm_live_server.served_model()


@pytest.fixture
def lfm_sglang_version(lfm_live_server: HttpServer) -> str:
    """The sglang version of the server under test (its /get_server_info, else the installed one)."""
    return lfm_live_server.sglang_version()
