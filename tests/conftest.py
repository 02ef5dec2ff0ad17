"""Shared fixtures: pytester, and GPUs on a host that has none."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import pytest

pytest_plugins = ["pytester"]

# nvidia-smi stand-in: {count} idle GPUs, answering the --query-gpu fields pytest_lfm.runtime.hosts asks for
NVIDIA_SMI = """\
#!{python}
import sys
args = sys.argv[1:]
fields = next((a.split("=", 1)[1].split(",") for a in args if a.startswith("--query-gpu=")), [])
chosen = [int(args[args.index("-i") + 1])] if "-i" in args else range({count})
for i in chosen:
    cells = {{"index": str(i), "uuid": f"GPU-fake-{{i}}", "name": "NVIDIA H200", "memory.total": "143771",
             "memory.used": "0"}}
    print(", ".join(cells[f] for f in fields))
"""


@pytest.fixture
def visible_gpus(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """Make ``count`` GPUs (indices 0 ... count - 1) visible to this process and the ones it starts, on any host:
    an nvidia-smi stand-in first on PATH, CUDA_VISIBLE_DEVICES unset."""

    def make(count: int) -> None:
        bin_dir = tmp_path_factory.mktemp("nvidia-smi")
        smi = bin_dir / "nvidia-smi"
        smi.write_text(NVIDIA_SMI.format(python=sys.executable, count=count))
        smi.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    return make

