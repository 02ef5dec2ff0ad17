"""Multi-GPU runs on CPU (issue 8): GPUs per xdist worker, one model per worker, tensor parallel from the matrix."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

TP2_MATRIX = """
[[model]]
id = "micro-moe-tp2"
family = "moe"
micro = "moe"
capabilities = ["chat", "tools"]
chat_template = "lfm2"
launch_args = ["--tool-call-parser", "lfm2", "--tp-size", "2"]
"""

RECORD_GPUS = """
import json, os
from pathlib import Path

def test_gpus(lfm_gpus):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    Path({out!r}, worker + ".json").write_text(json.dumps(lfm_gpus))
"""

RECORD_MODEL = """
import os
from pathlib import Path
import pytest

@pytest.mark.parametrize("n", range(4))
def test_{name}(lfm_launch, n):
    with Path({out!r}, os.environ["PYTEST_XDIST_WORKER"] + ".txt").open("a") as f:
        f.write(lfm_launch.model.id + "\\n")
"""


@pytest.fixture
def outside_xdist(monkeypatch: pytest.MonkeyPatch, visible_gpus: Callable[[int], None]) -> None:
    """The inner runs must not inherit this run's worker variables (CI runs these tests under xdist); they see eight
    GPUs (--lfm-gpu is checked against the visible ones), also on a host without one."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    visible_gpus(8)


@pytest.mark.usefixtures("outside_xdist")
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-n", "2", "--lfm-gpu", "0,1"], {"gw0": [0], "gw1": [1]}),
        (["-n", "2", "--lfm-gpu", "3,5,7"], {"gw0": [3, 7], "gw1": [5]}),
        (["--lfm-gpu", "0,1"], {"main": [0, 1]}),
    ],
    ids=["two-workers-two-gpus", "two-workers-three-gpus", "no-xdist"],
)
def test_each_xdist_worker_gets_its_own_gpus(
    pytester: pytest.Pytester, args: list[str], expected: dict[str, list[int]],
) -> None:
    out = pytester.mkdir("out")
    pytester.makepyfile(RECORD_GPUS.format(out=str(out)))
    dist = ["--dist", "each"] if "-n" in args else []  # each: every worker runs the test once
    result = pytester.runpytest(*args, *dist, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=len(expected))
    assert {p.stem: json.loads(p.read_text()) for p in out.iterdir()} == expected


@pytest.mark.usefixtures("outside_xdist")
def test_all_tests_of_one_model_run_on_one_worker(pytester: pytest.Pytester) -> None:
    out = pytester.mkdir("out")
    pytester.makepyfile(**{f"test_{name}": RECORD_MODEL.format(name=name, out=str(out)) for name in "abc"})
    result = pytester.runpytest("-n", "2", "--lfm-model", "micro-dense", "--lfm-model", "micro-moe",
                                "--lfm-dtype", "both", "-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3 * 4 * 2 * 2)
    # -n turns --dist load into loadgroup; every test of a model carries xdist_group(model id)
    result.stdout.fnmatch_lines_random(["*test_a?micro-dense-0?@micro-dense*",
                                        "*test_c?micro-moe-float16-3?@micro-moe*"])
    workers_of: dict[str, set[str]] = {}
    for path in out.iterdir():
        for model in path.read_text().split():
            workers_of.setdefault(model, set()).add(path.stem)
    assert set(workers_of) == {"micro-dense", "micro-moe"}
    assert all(len(workers) == 1 for workers in workers_of.values()), workers_of


@pytest.mark.usefixtures("outside_xdist")
def test_tp_size_from_the_matrix_takes_two_gpus(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", tp=TP2_MATRIX)
    pytester.makepyfile("""
def test_tp(lfm_launch, lfm_gpus, lfm_runtime_pool):
    assert lfm_launch.tp_size == 2 and lfm_launch.engine_kwargs()["tp_size"] == 2
    assert lfm_launch.server_args()[-3:-1] == ["--tp-size", "2"]
    assert lfm_gpus == [0, 1] and lfm_runtime_pool.gpus_for(lfm_launch) == [0, 1]
""")
    result = pytester.runpytest("--lfm-matrix", "tp.toml", "--lfm-model", "micro-moe-tp2", "--lfm-gpu", "0,1",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.usefixtures("outside_xdist")
def test_tp_size_beyond_the_workers_gpus_is_a_clear_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makefile(".toml", tp=TP2_MATRIX)
    pytester.makepyfile("def test_serves(lfm_server): pass")
    result = pytester.runpytest("-n", "2", "--lfm-matrix", "tp.toml", "--lfm-model", "micro-moe-tp2",
                                "--lfm-gpu", "0,1", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*RuntimeError: micro-moe-tp2 needs 2 GPUs (tensor parallel) but this worker "
                                 "has [[][01][]]*"])
