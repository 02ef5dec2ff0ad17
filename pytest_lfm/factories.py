"""Fixture factories for downstream suites: their own server/client fixtures for a fixed model and configuration.

    # conftest.py
    from pytest_lfm import factories

    moe_server = factories.lfm_server_fixture("LiquidAI/LFM2-8B-A1B", extra_args=("--max-running-requests", "8"))
    moe_client = factories.lfm_client_fixture("moe_server")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import openai
import pytest

from pytest_lfm import clients
from pytest_lfm.matrix import LaunchConfig
from pytest_lfm.messages import NO_RUNTIME
from pytest_lfm.runtime.pool import RuntimePool
from pytest_lfm.runtime.server import SglangServer
from pytest_lfm.state import RUN


def lfm_server_fixture(
    model: str, *, dtype: str = "bfloat16", profile: str = "default", extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Callable[..., Any]:
    """A session-scoped fixture serving ``model`` (a matrix id) with this configuration, via the worker's pool."""

    @pytest.fixture(scope="session")
    def server_fixture(
        pytestconfig: pytest.Config, lfm_runtime_pool: RuntimePool | None,
    ) -> Iterator[SglangServer]:
        matrix = pytestconfig.stash[RUN].matrix
        spec = matrix.get(model)
        if spec is None:
            raise pytest.UsageError(f"lfm_server_fixture({model!r}): not in the model matrix; add it with "
                                    "--lfm-matrix FILE or use one of: " + ", ".join(matrix.ids()))
        if lfm_runtime_pool is None:
            pytest.skip(NO_RUNTIME)
        launch = LaunchConfig(spec, dtype, profile, tuple(extra_args), tuple(sorted((env or {}).items())))
        server = lfm_runtime_pool.server(launch)
        yield server
        lfm_runtime_pool.release(server)

    return server_fixture


def lfm_client_fixture(server_fixture_name: str) -> Callable[..., Any]:
    """A function-scoped OpenAI client fixture for the server fixture named ``server_fixture_name``."""

    @pytest.fixture
    def client_fixture(request: pytest.FixtureRequest) -> Iterator[openai.OpenAI]:
        server = request.getfixturevalue(server_fixture_name)
        server.check_alive()
        client = clients.openai_client(server.base_url)
        yield client
        client.close()

    return client_fixture
