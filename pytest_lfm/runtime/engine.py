"""An offline ``sgl.Engine`` (usable without pytest) that leaves no process and no GPU memory behind.

    with SglangEngine("LiquidAI/LFM2-350M", gpus=[0], cuda_graph_max_bs=4) as engine:
        engine.generate(prompt=["Hello"], sampling_params={"max_new_tokens": 8})
"""

from __future__ import annotations

import gc
import multiprocessing.resource_tracker
import os
import sys
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any

import psutil

from pytest_lfm.runtime import compat, hosts
from pytest_lfm.runtime.processes import sweep, warn_leftovers


@contextmanager
def _environ(updates: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _same_session(proc: psutil.Process, session: int) -> bool:
    try:
        return os.getsid(proc.pid) == session
    except OSError:
        return False


def _descendants() -> set[psutil.Process]:
    """This process's descendants in its own session: what an sgl.Engine spawns. The servers the pool runs meanwhile
    have sessions of their own (start_new_session) and are not the engine's to stop."""
    tracker = getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None)
    session = os.getsid(0)
    return {p for p in psutil.Process().children(recursive=True) if p.pid != tracker and _same_session(p, session)}


def release_mm_feature_pool(engine: Any) -> bool:
    """Free the CUDA-IPC feature pool of an engine's image processor; True if there was one.

    sgl.Engine runs its tokenizer manager, and for VL models the image processor, in the calling process. With
    ``mm_feature_transport`` cuda_ipc (sglang 0.5.17's default on one node) that processor reserves a pool of
    SGLANG_MM_FEATURE_CACHE_MB (1 GiB) on the GPU (utils/cuda_ipc_transport_utils.py: MmItemMemoryPool) and
    shutdown() leaves it: on the H200, 1542 MiB stay held by the pytest process after a micro-vl Engine's shutdown
    (the pool and the CUDA context), with torch.cuda.ipc_collect and empty_cache already done
    (docs/gpu-runs/2026-12-01-h200-d). The release does not give that memory back either: it finds and drops the
    pool, and 1024 MiB stay allocated by torch (docs/gpu-runs/2026-12-01-h200-e; likely the pool's storage, shared
    with the scheduler that died holding it, stays with torch until this process exits). It is kept for what it
    tells: stop() records whether a pool was there
    (``mm_feature_pool_released``), and the shutdown check names the pool only then."""
    processor = getattr(getattr(engine, "tokenizer_manager", None), "mm_processor", None)
    pool = getattr(processor, "cudaipc_mmfeature_pool", None)
    if processor is None or pool is None:
        return False
    with suppress(Exception):  # sglang's own teardown; what it raises must not hide the release
        pool.shutdown()
    for name in ("memory_pool", "available_chunks", "occupied_chunks", "sync_flag_list"):
        with suppress(AttributeError):
            delattr(pool, name)
    processor.cudaipc_mmfeature_pool = None
    return True


def release_cached_cuda_memory() -> None:
    """Return this process's cached CUDA blocks to the driver. sgl.Engine runs its tokenizer manager (for VL models the
    image processor too) in the calling process: on the H100 each micro-vl Engine left ~1 GiB held by the pytest
    process after shutdown (docs/gpu-runs/2026-11-25-h100-a), which only the process's exit gave back. On the
    H200 neither this nor dropping the image processor's CUDA-IPC pool first (release_mm_feature_pool) gives that
    pool's 1 GiB back before the process exits (docs/gpu-runs/2026-12-01-h200-d, 2026-12-01-h200-e)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.ipc_collect()
        torch.cuda.empty_cache()


@contextmanager
def scoped_process_kill(module: Any, spawned: Collection[psutil.Process]) -> Iterator[None]:
    """sgl.Engine.shutdown() ends with ``kill_process_tree(os.getpid(), include_parent=False)``: it SIGKILLs every
    descendant of this process, the sglang servers the pool runs beside the engine too. While it shuts down, that
    call in the engine's module is narrowed to the processes the engine spawned (and their trees)."""
    original = getattr(module, "kill_process_tree", None)
    if original is None:
        yield
        return

    def scoped(parent_pid: int | None = None, *args: Any, **kwargs: Any) -> Any:
        if parent_pid not in (None, os.getpid()):
            return original(parent_pid, *args, **kwargs)
        kwargs.pop("include_parent", None)
        for proc in spawned:
            original(proc.pid, include_parent=True, **kwargs)
        return None

    module.kill_process_tree = scoped
    try:
        yield
    finally:
        module.kill_process_tree = original


class SglangEngine:
    """``sgl.Engine(model_path=..., dtype=..., **engine_kwargs)`` started at construction with ``gpus`` as
    CUDA_VISIBLE_DEVICES and ``env`` set while it spawns its processes; stop() shuts it down, kills the processes it
    spawned that outlive the shutdown and waits until the GPUs' memory is back to what it was before."""

    def __init__(
        self, model_path: str, *, dtype: str = "bfloat16", gpus: Sequence[int] | None = None,
        env: Mapping[str, str] | None = None, **engine_kwargs: Any,
    ) -> None:
        import sglang as sgl

        fields, flags = compat.server_args_schema()
        self.model_path = model_path
        self.gpus = list(gpus) if gpus is not None else None
        self.kwargs = compat.normalize_engine_kwargs({"model_path": model_path, "dtype": dtype, **engine_kwargs},
                                                     fields, flags, compat.installed_sglang_version() or "installed")
        updates = dict(env or {})
        if self.gpus is not None:
            updates["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
            updates.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        self.own_gpu_mib_before = hosts.memory_of([os.getpid()], self.gpus or ())
        self._before = _descendants()
        started = time.monotonic()
        with _environ(updates):
            self.engine: Any = sgl.Engine(**self.kwargs)
        self.startup_seconds: float | None = round(time.monotonic() - started, 2)
        self.mm_feature_pool_released: bool | None = None  # stop(): whether an image-feature pool was freed
        self.spawned_pids: list[int] = [p.pid for p in _descendants() - self._before]
        self._running = True

    def __repr__(self) -> str:
        return f"SglangEngine({self.model_path!r}, gpus={self.gpus})"

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """``sgl.Engine.generate``."""
        return self.engine.generate(*args, **kwargs)

    def is_running(self) -> bool:
        return self._running

    def kill(self) -> None:
        """SIGKILL the processes the engine spawned, now (from a signal handler; stop() then finds them gone)."""
        for proc in _descendants() - self._before:
            with suppress(psutil.Error):
                proc.kill()

    def stop(self) -> None:
        """Shut the engine down, kill what it spawned and left, wait for its GPUs' memory (warn if it stays)."""
        if not self._running:
            return
        self._running = False
        spawned = _descendants() - self._before
        self.spawned_pids = sorted({*self.spawned_pids, *(p.pid for p in spawned)})
        try:
            with scoped_process_kill(sys.modules.get(type(self.engine).__module__), spawned):
                self.engine.shutdown()
        finally:
            stubborn = sweep(spawned)
            self.mm_feature_pool_released = release_mm_feature_pool(self.engine)
        release_cached_cuda_memory()
        warn_leftovers(self, stubborn, self.spawned_pids, self.gpus)

    def __enter__(self) -> SglangEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

