"""What the report learns of a run's launches: one record per runtime start, and the time split of the run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Launch:
    """What the report needs to know about one runtime start (times in seconds since the pool was made)."""

    kind: str
    config: str
    model: str
    args: list[str]
    gpus: list[int]
    planned: bool = True
    background: bool = False
    tests: int = 0
    estimate_mib: int | None = None
    memory_mib: int | None = None
    started_s: float | None = None
    ready_s: float | None = None
    stopped_s: float | None = None
    startup_seconds: float | None = None
    build_seconds: float | None = None  # of the startup: waiting for its micro checkpoint's build (0 if cached)
    error: str | None = None
    stopped_at: float | None = None


def time_split(launches: Sequence[Launch], waits: Sequence[tuple[float, float]], t0: float, testing_s: float,
               wall_s: float, planned: int) -> dict[str, float]:
    """Where the run's wall time went: waiting for runtimes (``launching_s``, the ``waits`` tests spent), startup
    time that ran while tests ran (``launching_hidden_s``, summed over the launches), ``testing_s`` (test time less
    the waits inside it) and ``idle_s`` (collection, reports, teardown). Launch times count from ``t0``."""
    launching = sum(end - start for start, end in waits)
    total = hidden = 0.0
    for record in launches:
        if record.started_s is None:
            continue
        start = t0 + record.started_s
        end = t0 + (record.ready_s if record.ready_s is not None else record.stopped_s or record.started_s)
        covered = sum(max(0.0, min(end, w_end) - max(start, w_start)) for w_start, w_end in waits)
        total += end - start
        hidden += max(0.0, end - start - covered)
    testing = max(0.0, testing_s - launching)
    return {"wall_s": round(wall_s, 1), "launching_s": round(launching, 1),
            "launching_hidden_s": round(hidden, 1), "startup_total_s": round(total, 1),
            "testing_s": round(testing, 1), "idle_s": round(max(0.0, wall_s - testing - launching), 1),
            "launches": len(launches), "planned": planned}
