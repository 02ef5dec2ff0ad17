"""Fixture factories. The default fixtures are what they make (``fixtures``: ``lfm_server =
factories.lfm_server_fixture()``, ``lfm_client = factories.lfm_client_fixture("lfm_server", ...)``), and a suite makes
its own with them, for a fixed model and configuration, through the same runtime pool:

    # conftest.py
    from pytest_lfm import factories

    moe_server = factories.lfm_server_fixture("LiquidAI/LFM2-8B-A1B", extra_args=("--max-running-requests", "8"))
    moe_client = factories.lfm_client_fixture("moe_server")

Servers and engines are session-scoped; the clients, the live server and the quiet fixture are made for the server
fixture they name, per test."""

from __future__ import annotations

import contextlib
import inspect
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import openai
import pytest

from pytest_lfm import clients, report
from pytest_lfm.errors import ExternalServerError
from pytest_lfm.matrix import LaunchConfig, parity_engine_launch
from pytest_lfm.messages import NO_RUNTIME
from pytest_lfm.recording.replay import ReplayServer
from pytest_lfm.recording.store import Store
from pytest_lfm.report.notes import QUIET
from pytest_lfm.runtime import ExternalServer, HttpServer, SglangEngine, SglangServer, hosts
from pytest_lfm.runtime.pool import RuntimePool
from pytest_lfm.settings import Settings
from pytest_lfm.state import RUN, Run

R = TypeVar("R", SglangServer, SglangEngine)


def lfm_server_fixture(
    model: str | None = None, *, dtype: str = "bfloat16", profile: str = "default", extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Callable[..., Any]:
    """A session-scoped server fixture. Without ``model``: the server of the configuration under test
    (``lfm_launch``), as the run says to test it. With ``model`` (a matrix id): that model in this configuration,
    launched through the worker's pool and stopped after the fixture's last test."""
    if model is None:

        def lfm_server(
            pytestconfig: pytest.Config, lfm_launch: LaunchConfig, lfm_runtime_pool: RuntimePool | None,
            lfm_recording: Store | None,
        ) -> Iterator[HttpServer]:
            """The sglang server for the configuration under test: launched once (as the plan says), reused,
            stopped after its last test. With --lfm-base-url: that server, checked once; a server that cannot be
            tested ends the run. With --lfm-replay: the recording of one."""
            yield from _server_under_test(pytestconfig.stash[RUN], lfm_launch, lfm_runtime_pool, lfm_recording)

        return pytest.fixture(scope="session")(lfm_server)

    def server(pytestconfig: pytest.Config, lfm_runtime_pool: RuntimePool | None) -> Iterator[SglangServer]:
        launch = _matrix_launch(pytestconfig.stash[RUN], "lfm_server_fixture", model, dtype, profile, extra_args, env)
        with _from_pool(lfm_runtime_pool, launch, RuntimePool.server) as runtime:
            yield runtime

    server.__doc__ = f"An sglang server of {model} ({dtype}, {_variant(profile, extra_args, env)}), launched here."
    return pytest.fixture(scope="session")(server)


def lfm_engine_fixture(
    model: str | None = None, *, dtype: str = "bfloat16", profile: str = "default", extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Callable[..., Any]:
    """A session-scoped offline ``sgl.Engine`` fixture: of the configuration under test without ``model``, else of
    ``model`` (a matrix id) in this configuration. One engine at a time runs in a process: the pool stops the one
    alive before it starts another."""
    if model is None:

        def lfm_engine(
            lfm_settings: Settings, lfm_launch: LaunchConfig, lfm_runtime_pool: RuntimePool | None,
        ) -> Iterator[SglangEngine]:
            """An offline sgl.Engine for the configuration under test, without the radix cache (the reference for
            the server's prefix cache: ``matrix.parity_engine_launch``): one per configuration, stopped after its
            last test."""
            yield from _engine(lfm_settings, lfm_runtime_pool, parity_engine_launch(lfm_launch))

        return pytest.fixture(scope="session")(lfm_engine)

    def engine(pytestconfig: pytest.Config, lfm_runtime_pool: RuntimePool | None) -> Iterator[SglangEngine]:
        run = pytestconfig.stash[RUN]
        launch = _matrix_launch(run, "lfm_engine_fixture", model, dtype, profile, extra_args, env)
        yield from _engine(run.settings, lfm_runtime_pool, launch)

    engine.__doc__ = f"An offline sgl.Engine of {model} ({dtype}, {_variant(profile, extra_args, env)})."
    return pytest.fixture(scope="session")(engine)


def lfm_live_server_fixture(server: str) -> Callable[..., Any]:
    """A fixture giving the server of the fixture named ``server``, checked alive before each test."""

    def live_server(request: pytest.FixtureRequest, **fixtures: Any) -> HttpServer:
        return _live(request, fixtures[server])

    return _fixture(live_server, asks_for=("request", server), doc=(
        f"``{server}``, checked to be alive: a local server's process (free), a server someone else started once.\n\n"
        "In replay, a test the recording has no exchange of runs, and fails at its first request (one that sends "
        "none, e.g. a test skipping a model, keeps its verdict); under --lfm-replay-missing skip it is skipped here."))


def lfm_client_fixture(server: str, *, recording: str | None = None) -> Callable[..., Any]:
    """An OpenAI client fixture for the server fixture named ``server``, recorded or replayed in the recording
    fixture named ``recording`` (a ``Store`` or None) when there is one."""

    def client_fixture(request: pytest.FixtureRequest, **fixtures: Any) -> Iterator[openai.OpenAI]:
        client = clients.openai_client(*_client_of(request, fixtures, server, recording))
        yield client
        client.close()

    return _fixture(client_fixture, asks_for=_names(server, recording), doc=(
        f"An OpenAI client for ``{server}``, checked alive before the test (no retries: every failure shows)"
        f"{_recorded(recording)}."))


def lfm_async_client_fixture(server: str, *, recording: str | None = None) -> Callable[..., Any]:
    """The async twin of ``lfm_client_fixture``."""

    def async_client_fixture(request: pytest.FixtureRequest, **fixtures: Any) -> openai.AsyncOpenAI:
        return clients.async_openai_client(*_client_of(request, fixtures, server, recording))

    return _fixture(async_client_fixture, asks_for=_names(server, recording), doc=(
        f"An async OpenAI client for ``{server}``, checked alive before the test (no retries){_recorded(recording)}."))


def lfm_http_fixture(server: str, *, recording: str | None = None) -> Callable[..., Any]:
    """An httpx client fixture on the root URL of the server fixture named ``server`` (like ``lfm_client_fixture``)."""

    def http_fixture(request: pytest.FixtureRequest, **fixtures: Any) -> Iterator[httpx.Client]:
        with clients.http_client(*_client_of(request, fixtures, server, recording)) as client:
            yield client

    return _fixture(http_fixture, asks_for=_names(server, recording), doc=(
        f"An httpx client on ``{server}``'s root URL, for the endpoints outside the OpenAI API, checked alive before "
        f"the test{_recorded(recording)}."))


def lfm_quiet_fixture(server: str) -> Callable[..., Any]:
    """A fixture for a test that measures time or memory on the server of the fixture named ``server``."""

    def quiet(request: pytest.FixtureRequest, lfm_runtime_pool: RuntimePool | None,
              **fixtures: Any) -> Iterator[dict[str, Any]]:
        serving = fixtures[server]
        if lfm_runtime_pool is None or not isinstance(serving, SglangServer):
            yield {"starting": None, "alive": None, "note": "not launched here: what else runs is not known"}
            return
        with lfm_runtime_pool.quiet(serving) as context:
            report.note(request, QUIET, context)
            yield context

    return _fixture(quiet, asks_for=("request", "lfm_runtime_pool", server), doc=(
        f"For a test that measures time or memory on ``{server}``: no other runtime of this worker starts or runs "
        "while it does (the others are paused). What was paused is noted in the report beside the figure."))


def _fixture(func: Callable[..., Any], *, asks_for: Sequence[str], doc: str) -> Callable[..., Any]:
    """``func`` as a function-scoped fixture that asks for the fixtures named in ``asks_for`` (given to it as keyword
    arguments). pytest reads what a fixture asks for from its signature; here the caller of the factory names it."""
    func.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in asks_for])
    func.__doc__ = "\n\n".join(textwrap.fill(paragraph, 110) for paragraph in doc.split("\n\n"))
    return pytest.fixture(func)


def _names(server: str, recording: str | None) -> tuple[str, ...]:
    return ("request", server, *([recording] if recording else []))


def _recorded(recording: str | None) -> str:
    return f"; its exchanges are recorded or replayed in ``{recording}`` when it is open" if recording else ""


def _variant(profile: str, extra_args: Sequence[str], env: Mapping[str, str] | None) -> str:
    return ", ".join([f"profile {profile}", *([" ".join(extra_args)] if extra_args else []),
                      *(f"{k}={v}" for k, v in sorted((env or {}).items()))])


def _client_of(request: pytest.FixtureRequest, fixtures: dict[str, Any], server: str,
               recording: str | None) -> tuple[str, Store | None, str]:
    """What a client of a factory is made with: its live server's URL, the recording it goes to, the test's id."""
    return _live(request, fixtures[server]).base_url, fixtures[recording] if recording else None, request.node.nodeid


def _live(request: pytest.FixtureRequest, server: HttpServer) -> HttpServer:
    """``server``, checked alive (a test the recording lacks is skipped here under --lfm-replay-missing skip)."""
    if (isinstance(server, ReplayServer) and request.config.stash[RUN].settings.replay_missing == "skip"
            and not server.store.has_test(request.node.nodeid)):
        pytest.skip(f"not in the recording {server.store.root}: this test did not run when it was made "
                    "(re-record on a GPU host with --lfm-record)")
    server.check_alive()
    return server


def _matrix_launch(run: Run, factory: str, model: str, dtype: str, profile: str, extra_args: Sequence[str],
                   env: Mapping[str, str] | None) -> LaunchConfig:
    spec = run.matrix.get(model)
    if spec is None:
        raise pytest.UsageError(f"{factory}({model!r}): not in the model matrix; add it with --lfm-matrix FILE or use "
                                "one of: " + ", ".join(run.matrix.ids()))
    return LaunchConfig(spec, dtype, profile, tuple(extra_args), tuple(sorted((env or {}).items())))


@contextlib.contextmanager
def _from_pool(pool: RuntimePool | None, launch: LaunchConfig,
               start: Callable[[RuntimePool, LaunchConfig], R]) -> Iterator[R]:
    """The pool's runtime of ``launch`` (the test is skipped where none can start), released after the fixture's
    last test: one the plan has stops after its last planned test, another one stops now."""
    if pool is None:
        pytest.skip(NO_RUNTIME)
    runtime = start(pool, launch)
    yield runtime
    pool.release(runtime)


def _server_under_test(run: Run, launch: LaunchConfig, pool: RuntimePool | None,
                       recording: Store | None) -> Iterator[HttpServer]:
    if run.settings.replay_dir and recording is not None:
        yield ReplayServer(recording)
    elif run.settings.base_url:
        run.external = run.external or ExternalServer(run.settings.base_url)
        try:
            run.external.start()
        except ExternalServerError as exc:
            pytest.exit(f"pytest-lfm: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
        yield _write_meta(recording, launch, run.external)
    else:
        with _from_pool(pool, launch, RuntimePool.server) as server:
            yield _write_meta(recording, launch, server)


def _write_meta(recording: Store | None, launch: LaunchConfig, server: SglangServer | ExternalServer) -> HttpServer:
    """``server``, once what it is has gone into the recording's meta (under --lfm-record)."""
    if recording is not None:
        recording.write_meta(
            sglang_version=server.sglang_version(), launch_args=server.command or launch.server_args(),
            served_model=server.served_model(), model=launch.model.id, dtype=launch.dtype,
            profile=launch.profile, startup_seconds=server.startup_seconds, gpus=[g.name for g in hosts.list_gpus()])
    return server


def _engine(settings: Settings, pool: RuntimePool | None, launch: LaunchConfig) -> Iterator[SglangEngine]:
    if settings.base_url or settings.replay_dir:
        pytest.skip("--lfm-base-url / --lfm-replay test a server over HTTP; the offline Engine needs a local GPU")
    with _from_pool(pool, launch, RuntimePool.engine) as engine:
        yield engine
