"""SglangEngine.stop() gives the calling process's cached and CUDA-IPC-shared memory back (no GPU needed: torch is
faked)."""

from __future__ import annotations

import sys
import types

import pytest

from pytest_lfm.runtime.engine import release_cached_cuda_memory, release_mm_feature_pool


def fake_torch(initialized: bool, calls: list[str]) -> types.ModuleType:
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        is_initialized=lambda: initialized, empty_cache=lambda: calls.append("empty_cache"),
        ipc_collect=lambda: calls.append("ipc_collect"))
    return torch


@pytest.mark.parametrize(("initialized", "expected"), [(True, ["ipc_collect", "empty_cache"]), (False, [])])
def test_cached_cuda_memory_is_released_only_where_cuda_was_used(
    monkeypatch: pytest.MonkeyPatch, initialized: bool, expected: list[str]
) -> None:
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "torch", fake_torch(initialized, calls))
    release_cached_cuda_memory()
    assert calls == expected


def test_no_torch_imported_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    release_cached_cuda_memory()


class _Pool:
    def __init__(self) -> None:
        self.memory_pool: object = bytearray(8)
        self.stopped = False

    def shutdown(self) -> None:
        self.stopped = True


def test_the_image_processors_cuda_ipc_pool_is_freed_after_shutdown() -> None:
    """sglang 0.5.17's VL image processor keeps a 1 GiB CUDA-IPC pool in the Engine's process after shutdown()."""
    pool = _Pool()
    processor = types.SimpleNamespace(cudaipc_mmfeature_pool=pool)
    engine = types.SimpleNamespace(tokenizer_manager=types.SimpleNamespace(mm_processor=processor))
    assert release_mm_feature_pool(engine)
    assert pool.stopped and not hasattr(pool, "memory_pool") and processor.cudaipc_mmfeature_pool is None
    assert not release_mm_feature_pool(engine)  # once
    no_images = types.SimpleNamespace(tokenizer_manager=types.SimpleNamespace(mm_processor=None))
    assert not release_mm_feature_pool(no_images) and not release_mm_feature_pool(object())
