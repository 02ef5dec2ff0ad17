"""An engine's shutdown must not take the servers running beside it: sgl.Engine.shutdown() kills every descendant
of the calling process, and the pool's servers are descendants too."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import psutil

from pytest_lfm.runtime.engine import scoped_process_kill
from pytest_lfm.runtime.server import SglangServer

STANDIN = (sys.executable, str(Path(__file__).with_name("standin_server.py")))


def kill_process_tree(parent_pid: int | None = None, include_parent: bool = True, **kwargs: object) -> None:
    """What sglang's does: SIGKILL the process's descendants (and the process, with include_parent)."""
    parent = psutil.Process(parent_pid or os.getpid())
    for child in parent.children(recursive=True):
        child.kill()
    if include_parent and parent.pid != os.getpid():
        parent.kill()


def test_engine_shutdown_kills_only_what_the_engine_spawned(tmp_path: Path) -> None:
    engine_module = types.SimpleNamespace(kill_process_tree=kill_process_tree)
    with SglangServer("standin/model", command=STANDIN, log_dir=tmp_path, launch_timeout=20, name="beside") as server:
        scheduler = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with scoped_process_kill(engine_module, [psutil.Process(scheduler.pid)]):
            engine_module.kill_process_tree(os.getpid(), include_parent=False, wait_timeout=60)
        assert scheduler.wait(10) == -9
        assert server.is_running()
    assert engine_module.kill_process_tree is kill_process_tree
