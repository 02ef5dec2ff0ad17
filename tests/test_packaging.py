"""The installed distribution carries the suites: `pytest --pyargs pytest_lfm.conformance` needs no clone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_conformance_suites_run_from_the_installed_package(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "pytest_lfm.conformance", "--collect-only", "-q",
         "-p", "no:cacheprovider"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "test_chat.py::" in result.stdout and " tests collected" in result.stdout, result.stdout[-3000:]
