"""When the pool starts runtimes: how many at once, in what order, at what CPU priority, within how much GPU
memory; and the live state of each launch it knows."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_lfm.matrix import LaunchConfig
from pytest_lfm.runtime import hosts
from pytest_lfm.runtime.engine import SglangEngine
from pytest_lfm.runtime.launches import Launch
from pytest_lfm.runtime.server import SglangServer

PoolRuntime = SglangServer | SglangEngine
"""What the pool launches (the Runtime protocol of ``pytest_lfm.runtime`` is what every runtime offers)."""
USABLE_SHARE = 0.85
"""Of a GPU's memory, what the runtimes may hold together: sglang keeps the rest free for its activations."""
PROGRESS_EVERY = 15.0
BACKGROUND_NICENESS = 10
"""CPU priority of a start no test waits for yet: it takes the cores the starts that tests wait for leave idle."""


SOON = 3
"""How many of the next servers the tests need start before the slow ones (torch.compile profiles)."""


def default_max_starting() -> int:
    """Runtimes that may start at once besides the slow ones: a start keeps about three cores busy (tokenizer,
    scheduler, compilers)."""
    return max(1, min(5, (os.cpu_count() or 3) // 3))


def is_slow(entry: Entry) -> bool:
    """A start of a non-default profile (torch.compile: minutes). It does not wait for a start slot: every one of
    them starts as soon as the first runtime is ready, at background priority, because the closing timing checks
    need them all and wait for any start still in flight (docs/gpu-runs/2026-12-01-h200-h: the last one, kept out of
    the slots until 244 s, held the first timing check 83 s). Not before: started at 0 s beside the builds and the
    first wave they put the default servers at 162 s and the first engine at 148 s (123 s and 111 s without them,
    docs/gpu-runs/2026-12-02-h200-a)."""
    return entry.config.profile != "default"


@dataclass
class Entry:
    """The live state of one launch the pool knows: planned, or asked for by a test."""

    kind: str
    config: LaunchConfig
    remaining: set[str]
    record: Launch
    need_mib: int | None
    planned: bool
    state: str = "idle"  # idle -> starting -> ready -> stopped | failed
    urgent: bool = False  # a test waits for it: full CPU priority
    runtime: PoolRuntime | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def start_order(waiting: Sequence[Entry]) -> list[Entry]:
    """The order background starts go in: the next SOON servers the tests need (``waiting`` is in plan order),
    then the slow starts, which the timing checks at the end of the run need, then the rest in plan order."""
    soon, later = list(waiting[:SOON]), waiting[SOON:]
    return soon + sorted(later, key=lambda e: not is_slow(e))


def usable_capacity_mib(gpus: Sequence[int]) -> int:
    """What the runtimes may hold on the first of ``gpus``: USABLE_SHARE of its memory, less what is used now."""
    listed = {g.index: g for g in hosts.list_gpus()}
    first = listed.get(gpus[0]) if gpus else None
    if first is None:
        return 0
    return int(first.memory_total_mib * USABLE_SHARE) - first.memory_used_mib
