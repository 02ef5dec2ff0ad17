"""Fidelity of the plugin's latency figures against ``sglang.bench_serving`` on the same server.

The two clients take turns on one server (``interleaved_rounds``), and each run is divided by what the server's own
``--enable-metrics`` histograms measured over it (``normalized_fidelity_ratios``), because the server's speed moves
between runs by more than the 5% being judged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np

from pytest_lfm.measure.bench_serving import run_bench_serving
from pytest_lfm.measure.client import measure, warm_up
from pytest_lfm.measure.metrics import observed
from pytest_lfm.measure.stats import LatencyResult
from pytest_lfm.measure.workload import Workload, random_ids_prompts

FIDELITY_MARKER = ("lfm_fidelity: compares the plugin's TTFT/TPOT with sglang.bench_serving on the same server; "
                   "runs only when selected with -m lfm_fidelity")
FIDELITY_TOLERANCE = 0.05


def fidelity_ratios(ours: Sequence[LatencyResult], bench: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """ours / bench_serving's for mean TTFT, mean TPOT, mean ITL and mean E2E over the rounds given (the ratio of
    the means; 1.0 = identical), and of the medians as ``median_ttft`` / ``median_tpot`` (reported: one slow round
    moves a mean more); a figure bench_serving reports as 0 in some round is left out."""
    pairs = {"ttft": ("mean_ttft_ms", "mean_ttft_ms"), "tpot": ("mean_tpot_ms", "mean_tpot_ms"),
             "itl": ("mean_itl_ms", "mean_itl_ms"), "e2e": ("mean_e2e_ms", "mean_e2e_latency_ms"),
             "median_ttft": ("median_ttft_ms", "median_ttft_ms"), "median_tpot": ("median_tpot_ms", "median_tpot_ms")}
    out = {}
    for name, (mine, theirs) in pairs.items():
        values = [float(b.get(theirs) or 0) for b in bench]
        if values and all(v > 0 for v in values):
            out[name] = float(np.mean([float(getattr(r, mine)) for r in ours])) / float(np.mean(values))
    return out


def normalized_fidelity_ratios(ours: Sequence[LatencyResult], bench: Sequence[Mapping[str, Any]],
                               ours_server: Sequence[Mapping[str, float] | None],
                               bench_server: Sequence[Mapping[str, float] | None]) -> dict[str, float]:
    """ours / bench_serving's with every run divided by what the server itself measured over that run: TTFT by
    the server's mean TTFT, TPOT by its mean inter-token latency; the ratio of the means over the rounds of
    client / server. A server that runs 20% slower during one run moves that run's client figures and the server's
    own alike, so what is left is how the two clients measure, not when they ran (on the H200 the server's decode
    time moved 1.37-1.81 ms between runs a minute apart while client / server stayed 0.912-0.915 for both clients:
    docs/gpu-runs/2026-12-01-h200-e). {} when some run has no server figures."""
    ours_figures = [s for s in ours_server if s is not None]
    bench_figures = [s for s in bench_server if s is not None]
    if not ours_figures or not bench_figures or len(ours_figures) < len(ours) or len(bench_figures) < len(bench):
        return {}
    pairs = {"ttft": ("mean_ttft_ms", "mean_ttft_ms", "ttft_ms"), "tpot": ("mean_tpot_ms", "mean_tpot_ms", "itl_ms")}
    out = {}
    for name, (mine, theirs, server) in pairs.items():
        o = [float(getattr(r, mine)) / s[server] for r, s in zip(ours, ours_figures, strict=True)]
        b = [float(x.get(theirs) or 0) / s[server] for x, s in zip(bench, bench_figures, strict=True)]
        if all(v > 0 for v in o + b):
            out[name] = float(np.mean(o)) / float(np.mean(b))
    return out


FIDELITY_ROUNDS = 4
T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")


def interleaved_rounds(run_ours: Callable[[], A], run_bench: Callable[[], B],
                       rounds: int = FIDELITY_ROUNDS) -> tuple[list[A], list[B]]:
    """The plugin's and bench_serving's measurements of one server in the order ours, theirs, theirs, ours, theirs,
    ours, ours, theirs (ABBA pairs), so that a drift of the server over the minutes of a run falls on both sides
    alike (for an even number of rounds, a linear drift cancels in the means): on the H200 the plugin's own TPOT on
    one server was 1.17 ms and, minutes later, 1.45 ms (docs/gpu-runs/2026-12-01-h200-c)."""
    ours: list[A] = []
    bench: list[B] = []
    for i in range(rounds):
        if i % 4 in (0, 3):
            ours.append(run_ours())
            bench.append(run_bench())
        else:
            bench.append(run_bench())
            ours.append(run_ours())
    return ours, bench


def fidelity_runs(base_url: str, model: str, tokenizer: Any, tokenizer_path: str, workload: Workload,
                  rounds: int = FIDELITY_ROUNDS) -> tuple[list[tuple[LatencyResult, dict[str, float] | None]],
                                                          list[tuple[dict[str, Any], dict[str, float] | None]]]:
    """The fidelity check's runs, each ``observed``: the plugin's ``measure`` and ``run_bench_serving`` of
    ``workload`` in ``interleaved_rounds``. Every run's warmup (``measure``'s and bench_serving's: the workload's
    first prompt) is sent before the server's "before" snapshot, and both clients then run with no warmup of their
    own, so the server's figures cover exactly the requests the client times; and a few untimed requests prime a
    fresh server first. With the warmups inside the server's window, on the H200, the server's mean TTFT over the
    first run was 45 ms, the client's 16 ms (the first requests a server serves are slow), and the normalized TTFT
    ratio 0.88 (docs/gpu-runs/2026-12-01-h200-f)."""
    timed = replace(workload, warmup_requests=0)
    first = random_ids_prompts(tokenizer, workload.input_len, workload.output_len, workload.num_prompts,
                               workload.seed)[0]  # the draws depend on num_prompts: the timed runs' first prompt
    measure(base_url, model, tokenizer, replace(workload, num_prompts=min(workload.num_prompts, 8)))

    def run(client: Callable[[], T]) -> tuple[T, dict[str, float] | None]:
        asyncio.run(warm_up(base_url, model, first, workload))
        return observed(base_url, client)

    return interleaved_rounds(lambda: run(lambda: measure(base_url, model, tokenizer, timed)),
                              lambda: run(lambda: run_bench_serving(base_url, model, tokenizer_path, timed)), rounds)
