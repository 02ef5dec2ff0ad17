"""The fixture factories: a suite's own server and clients, and the default fixtures they make, against real
stand-in servers (tests/standin_server.py) launched by a runtime pool."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

STANDIN_PATH = str(Path(__file__).with_name("standin_server.py"))

CONFTEST = """
import sys
import pytest
from pytest_lfm import factories
from pytest_lfm.runtime.pool import RuntimePool


@pytest.fixture(scope="session")
def lfm_runtime_pool(tmp_path_factory):
    pool = RuntimePool([0], tmp_path_factory.mktemp("logs"), 20, server_command=[{python!r}, {standin!r}])
    yield pool
    pool.stop()


moe_server = factories.lfm_server_fixture("LiquidAI/LFM2-350M", extra_args=("--max-running-requests", "8"))
moe_client = factories.lfm_client_fixture("moe_server")
moe_http = factories.lfm_http_fixture("moe_server")
"""

TESTS = """
def test_the_suites_own_server_runs_its_configuration(moe_server, moe_client, moe_http):
    assert "--max-running-requests" in moe_server.command
    assert [m.id for m in moe_client.models.list().data] == ["LiquidAI/LFM2-350M"]
    assert moe_http.get("/health").status_code == 200

def test_the_default_fixtures_are_made_the_same_way(lfm_server, lfm_client, lfm_http, lfm_quiet):
    assert "--max-running-requests" not in lfm_server.command
    assert [m.id for m in lfm_client.models.list().data] == ["LiquidAI/LFM2-350M"]
    assert lfm_http.get("/health").status_code == 200
    assert lfm_quiet["starting"] == []  # the pool's quiet: nothing started while the test ran
"""

STOPPED = """
def test_stops_the_suites_server(moe_server):
    moe_server.stop()

def test_a_client_checks_its_server_is_alive(moe_client):
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A suite whose conftest makes its own server and clients with the factories, on a pool of stand-in servers."""
    pytester.makeconftest(CONFTEST.format(python=sys.executable, standin=STANDIN_PATH))
    return pytester


def test_a_suites_own_server_and_clients_behave_as_the_default_ones(suite: pytest.Pytester) -> None:
    suite.makepyfile(TESTS)
    suite.runpytest_subprocess("-p", "no:cacheprovider", "--lfm-model", "LiquidAI/LFM2-350M").assert_outcomes(passed=2)


def test_a_factory_client_checks_its_server_is_alive_before_the_test(suite: pytest.Pytester) -> None:
    suite.makepyfile(STOPPED)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--lfm-model", "LiquidAI/LFM2-350M")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_a_client_checks_its_server_is_alive*",
                                 "*ServerCrashedError: sglang server * is not running*"])
