"""The server's own latency figures: sglang's ``--enable-metrics`` histograms, read from ``GET /metrics``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

# the server's own histograms (sglang --enable-metrics): what it measured itself for the requests it served
SERVER_METRICS = {"ttft": "sglang:time_to_first_token_seconds", "itl": "sglang:inter_token_latency_seconds"}


def server_latency_totals(base_url: str, timeout: float = 30.0) -> dict[str, tuple[float, float]] | None:
    """(sum of seconds, count) of the server's TTFT and inter-token-latency histograms from ``GET /metrics``, over
    all their label sets; None when the server has no /metrics (sglang launched without ``--enable-metrics``)."""
    try:
        response = httpx.get(f"{base_url}/metrics", timeout=timeout)
    except httpx.HTTPError:
        return None
    return latency_totals_from_metrics(response.text) if response.status_code == 200 else None


def latency_totals_from_metrics(text: str) -> dict[str, tuple[float, float]] | None:
    """``server_latency_totals`` from a Prometheus text exposition (what ``/metrics`` answers); None when it does not
    parse. A histogram the text lacks counts (0, 0): sglang's multiprocess collector shows a labelled histogram only
    once it has observed something, so a fresh server's /metrics has neither (on the H200, the first fidelity run
    then has no "before" and so no server figures: docs/gpu-runs/2026-12-01-h200-f)."""
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return None
    totals: dict[str, tuple[float, float]] = dict.fromkeys(SERVER_METRICS, (0.0, 0.0))
    for family in families:
        for key, name in SERVER_METRICS.items():
            if family.name == name:
                totals[key] = (sum(x.value for x in family.samples if x.name == f"{name}_sum"),
                               sum(x.value for x in family.samples if x.name == f"{name}_count"))
    return totals


def server_means(before: Mapping[str, tuple[float, float]] | None,
                 after: Mapping[str, tuple[float, float]] | None) -> dict[str, float] | None:
    """The server's own mean TTFT and ITL (ms, as ``ttft_ms`` / ``itl_ms``) over the requests served between two
    ``server_latency_totals``; None without both snapshots or with nothing served in between."""
    if before is None or after is None:
        return None
    out = {}
    for key in SERVER_METRICS:
        seconds, count = after[key][0] - before[key][0], after[key][1] - before[key][1]
        if count <= 0 or seconds <= 0:
            return None
        out[f"{key}_ms"] = 1000 * seconds / count
    return out


T = TypeVar("T")


def observed(base_url: str, run: Callable[[], T]) -> tuple[T, dict[str, float] | None]:
    """``run()``, with the server's own mean TTFT and ITL over it (``server_means``; None without metrics)."""
    before = server_latency_totals(base_url)
    value = run()
    return value, server_means(before, server_latency_totals(base_url))
