"""GPUs from nvidia-smi (a stand-in script on PATH), the xdist worker index, and free ports that never clash."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from pytest_lfm.errors import RuntimeLeftoverWarning
from pytest_lfm.runtime import hosts

ROOT = str(Path(__file__).resolve().parents[1])  # importable in subprocesses even before `pip install -e .`

FAKE_SMI = """\
#!{python}
import sys
from pathlib import Path
used = Path({used!r}).read_text().strip()
rows = {{"0": "0, GPU-aaaa-0000, NVIDIA H100 80GB HBM3, 81559, " + used,
         "1": "1, GPU-bbbb-1111, NVIDIA H100 80GB HBM3, 81559, 3"}}
args = sys.argv[1:]
if any(a.startswith("--query-compute-apps=") for a in args):
    apps = Path({used!r} + ".apps")
    print(apps.read_text() if apps.is_file() else "", end="")
    sys.exit(0)
chosen = [args[args.index("-i") + 1]] if "-i" in args else list(rows)
for index in chosen:
    cells = rows[index].split(", ")
    if "--query-gpu=memory.used" in args:
        print(cells[4])
    elif "--query-gpu=index,uuid" in args:
        print(cells[0] + ", " + cells[1])
    else:
        print(rows[index])
"""


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An nvidia-smi on PATH reporting two H100s; GPU 0's memory.used is read from the returned file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    used = tmp_path / "used"
    used.write_text("4")
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI.format(python=sys.executable, used=str(used)))
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return used


def test_no_nvidia_smi_means_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert hosts.list_gpus() == []
    assert hosts.gpu_memory_baseline([0]) == {}
    with pytest.raises(hosts.GpuQueryError, match="nvidia-smi not found"):
        hosts.gpu_memory_used_mib(0)


def test_list_gpus_parses_nvidia_smi(fake_smi: Path) -> None:
    assert hosts.list_gpus() == [
        hosts.Gpu(0, "NVIDIA H100 80GB HBM3", 81559, 4, "GPU-aaaa-0000"),
        hosts.Gpu(1, "NVIDIA H100 80GB HBM3", 81559, 3, "GPU-bbbb-1111"),
    ]
    assert hosts.gpu_memory_used_mib(0) == 4


@pytest.mark.parametrize(("visible", "expected"), [("1", [1]), ("GPU-bbbb", [1]), ("0,1", [0, 1]), ("", [])])
def test_list_gpus_honours_cuda_visible_devices(
    fake_smi: Path, monkeypatch: pytest.MonkeyPatch, visible: str, expected: list[int],
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert [g.index for g in hosts.list_gpus()] == expected


def test_gpu_processes_parses_the_compute_apps(fake_smi: Path) -> None:
    Path(f"{fake_smi}.apps").write_text("GPU-aaaa-0000, 4242, python3, 2777\nGPU-bbbb-1111, 7, other, [N/A]\n")
    assert hosts.gpu_processes([0, 1]) == [hosts.GpuProcess(0, 4242, "python3", 2777)]  # [N/A]: no figure, left out
    assert hosts.gpu_processes([1]) == []


def test_memory_of_counts_only_the_given_processes(fake_smi: Path) -> None:
    Path(f"{fake_smi}.apps").write_text("GPU-aaaa-0000, 4242, python3, 2777\nGPU-aaaa-0000, 99, sglang, 2000\n")
    assert hosts.memory_of([4242], [0]) == 2777
    assert hosts.memory_of([4242, 99], [0]) == 4777
    assert hosts.memory_of([5], [0]) == 0
    Path(f"{fake_smi}.apps").write_text("")
    assert hosts.memory_of([4242], [0]) is None  # nvidia-smi lists nobody: not known


def test_leftover_warning_names_the_runtimes_processes_still_on_the_gpu(
    fake_smi: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another runtime's memory on the same GPU is not this runtime's leftover: only its own processes count."""
    from pytest_lfm.runtime import processes

    monkeypatch.setattr(processes, "GPU_RELEASE_TIMEOUT", 0.2)
    Path(f"{fake_smi}.apps").write_text("GPU-aaaa-0000, 4242, sglang, 2777\nGPU-aaaa-0000, 99, other, 9000\n")
    with pytest.warns(RuntimeLeftoverWarning, match=r"GPU 0: pid 4242 sglang 2777 MiB"):
        processes.warn_leftovers("engine", [], [4242], [0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        processes.warn_leftovers("engine", [], [5], [0])  # pid 99's memory belongs to someone else


@pytest.mark.parametrize(("worker", "index"), [("gw0", 0), ("gw3", 3), ("gw12", 12), ("master", 0), ("", 0)])
def test_worker_index(monkeypatch: pytest.MonkeyPatch, worker: str, index: int) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    assert hosts.worker_index() == index


def test_worker_index_outside_xdist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert hosts.worker_index() == 0


def test_free_port_is_in_the_worker_range_and_not_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    claims = tmp_path / "claims.json"
    ports = [hosts.free_port(claims=claims) for _ in range(5)]
    first = hosts.PORT_BASE + 2 * hosts.PORT_SPAN
    assert len(set(ports)) == 5
    assert all(first <= p < first + hosts.PORT_SPAN for p in ports)
    assert set(json.loads(claims.read_text())) == {str(p) for p in ports}


def test_free_port_skips_a_bound_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw5")
    first = hosts.PORT_BASE + 5 * hosts.PORT_SPAN
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", first))
        busy.listen()
        assert hosts.free_port(claims=tmp_path / "claims.json") == first + 1


CLAIMER = """
import json, sys
from pathlib import Path
from pytest_lfm.runtime import hosts
ports = [hosts.free_port(claims=Path(sys.argv[1])) for _ in range(20)]
print(json.dumps(ports), flush=True)
sys.stdin.read()  # hold the claims (they lapse when this process ends) until the test has every port
"""


def test_concurrent_sessions_with_one_worker_number_get_distinct_ports(tmp_path: Path) -> None:
    """Two pytest sessions on one host both have a gw0: the claims file keeps their ports apart."""
    claims = tmp_path / "claims.json"
    env = {"PYTEST_XDIST_WORKER": "gw0", "PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT}
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(claims)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(4)]
    try:
        ports = [p for proc in procs for p in json.loads(proc.stdout.readline())]  # type: ignore[union-attr]
    finally:
        for proc in procs:
            proc.communicate(timeout=30)
    assert len(ports) == 80
    assert len(set(ports)) == 80


XDIST_TEST = """
import os, pytest
from pathlib import Path
from pytest_lfm.runtime import hosts

@pytest.mark.parametrize("n", range(8))
def test_claim(n):
    out = Path({out!r}) / (os.environ["PYTEST_XDIST_WORKER"] + "-" + str(n))
    out.write_text(" ".join(str(hosts.free_port(claims=Path({claims!r}))) for _ in range(5)))
"""


def test_free_port_never_clashes_under_xdist(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTHONPATH", ROOT)
    out = tmp_path / "ports"
    out.mkdir()
    pytester.makepyfile(XDIST_TEST.format(out=str(out), claims=str(tmp_path / "claims.json")))
    result = pytester.runpytest_subprocess("-n", "4", "-p", "no:cacheprovider", "-p", "no:lfm")
    result.assert_outcomes(passed=8)
    workers = {f.name.split("-")[0] for f in out.iterdir()}
    ports = [int(p) for f in out.iterdir() for p in f.read_text().split()]
    assert len(workers) > 1, textwrap.shorten(result.stdout.str(), 500)
    assert len(ports) == 40
    assert len(set(ports)) == 40
