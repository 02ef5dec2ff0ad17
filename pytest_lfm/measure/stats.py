"""The figures of a latency run (``sglang.benchmark.serving``'s ``calculate_metrics``) and their budgets.

- TTFT: request sent -> first chunk with non-empty content (``reasoning_content`` counts as content);
- ITL: the gaps between later content chunks (all requests pooled);
- TPOT per request: (E2E - TTFT) / (output tokens - 1), output tokens from the stream's ``usage``;
- E2E: request sent -> last line of the stream (``[DONE]``);
- output throughput: all output tokens / wall time of the measured run.

A request whose stream carries no content is counted in ``no_content_requests`` (its TTFT is 0, as in
bench_serving) and the suites fail on any, so a 0 never passes for a measured TTFT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pytest_lfm.measure.workload import Workload

# budget key -> (figure of LatencyResult it bounds, "max" for an upper bound or "min" for a lower bound)
BUDGET_FIGURES: dict[str, tuple[str, str]] = {
    "ttft_ms": ("mean_ttft_ms", "max"),
    "tpot_ms": ("mean_tpot_ms", "max"),
    "itl_ms": ("mean_itl_ms", "max"),
    "e2e_ms": ("mean_e2e_ms", "max"),
    "output_tok_s": ("output_tok_s", "min"),
}
DEFAULT_TOLERANCE = 0.1


@dataclass
class RequestTiming:
    """One streamed request, as bench_serving's ``RequestFuncOutput`` records it (seconds, perf_counter)."""

    success: bool = False
    start: float = 0.0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    latency: float = 0.0
    output_len: int = 0
    prompt_tokens: int | None = None
    error: str = ""


@dataclass(frozen=True)
class LatencyResult:
    """The figures of one run (milliseconds, tokens per second) and what failed."""

    workload: Workload
    completed: int
    failed: int
    duration_s: float
    total_output_tokens: int
    total_prompt_tokens: int | None
    short_requests: int
    no_content_requests: int
    mean_ttft_ms: float
    median_ttft_ms: float
    p99_ttft_ms: float
    mean_tpot_ms: float
    median_tpot_ms: float
    p99_tpot_ms: float
    mean_itl_ms: float
    median_itl_ms: float
    p99_itl_ms: float
    mean_e2e_ms: float
    median_e2e_ms: float
    p99_e2e_ms: float
    output_tok_s: float
    request_per_s: float
    errors: tuple[str, ...] = ()

    def figures(self) -> dict[str, float]:
        """The numeric figures, rounded for reports (what goes into notes and pytest-benchmark's extra_info)."""
        out: dict[str, float] = {}
        for key, value in asdict(self).items():
            if key in ("workload", "errors") or value is None:
                continue
            out[key] = round(float(value), 4) if isinstance(value, float) else value
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"workload": asdict(self.workload), **self.figures(), "errors": list(self.errors)}


@dataclass(frozen=True)
class Verdict:
    """One figure against its budget; ``status`` is "pass", "fail" or "reported" (no budget for it)."""

    metric: str
    measured: float
    budget: float | None = None
    limit: float | None = None
    bound: str = "max"
    status: str = "reported"

    def describe(self) -> str:
        if self.budget is None:
            return f"{self.metric} {self.measured:.3f} (no budget)"
        op = "<=" if self.bound == "max" else ">="
        return (f"{self.metric} {self.measured:.3f} {'within' if self.status == 'pass' else 'OUTSIDE'} budget "
                f"{self.budget:g} ({op} {self.limit:.3f} with tolerance)")


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, median, p99) in ms; 0 for no values, as bench_serving's ``np.mean(x or 0)``."""
    arr = np.asarray(values or [0.0], dtype=float) * 1000
    return float(np.mean(arr)), float(np.median(arr)), float(np.percentile(arr, 99))


def summarize(timings: Sequence[RequestTiming], duration_s: float, workload: Workload) -> LatencyResult:
    """bench_serving's ``calculate_metrics`` over the successful requests (a stream without content counts with TTFT
    0, as there; ``no_content_requests`` says how many did, and the suites fail on any)."""
    ok = [t for t in timings if t.success]
    ttfts = [t.ttft for t in ok]
    tpots = [(t.latency - t.ttft) / (t.output_len - 1) for t in ok if t.output_len > 1]
    itls = [gap for t in ok for gap in t.itl]
    e2es = [t.latency for t in ok]
    total_output = sum(t.output_len for t in ok)
    prompt_tokens = [t.prompt_tokens for t in ok if t.prompt_tokens is not None]
    ttft, tpot, itl, e2e = _stats(ttfts), _stats(tpots), _stats(itls), _stats(e2es)
    return LatencyResult(
        workload=workload,
        completed=len(ok),
        failed=len(timings) - len(ok),
        duration_s=duration_s,
        total_output_tokens=total_output,
        total_prompt_tokens=sum(prompt_tokens) if len(prompt_tokens) == len(ok) and ok else None,
        short_requests=sum(1 for t in ok if t.output_len < workload.output_len),
        no_content_requests=sum(1 for t in ok if t.ttft == 0.0),
        mean_ttft_ms=ttft[0], median_ttft_ms=ttft[1], p99_ttft_ms=ttft[2],
        mean_tpot_ms=tpot[0], median_tpot_ms=tpot[1], p99_tpot_ms=tpot[2],
        mean_itl_ms=itl[0], median_itl_ms=itl[1], p99_itl_ms=itl[2],
        mean_e2e_ms=e2e[0], median_e2e_ms=e2e[1], p99_e2e_ms=e2e[2],
        output_tok_s=total_output / duration_s if duration_s > 0 else 0.0,
        request_per_s=len(ok) / duration_s if duration_s > 0 else 0.0,
        errors=tuple(dict.fromkeys(t.error for t in timings if not t.success))[:5],
    )


def judge(result: LatencyResult, budget: Mapping[str, Any] | None) -> list[Verdict]:
    """Each budgeted figure against its bound (upper for latencies, lower for throughput) with the tolerance.

    Figures without a budget, and every figure when ``budget`` is None, are "reported": never a failure.
    """
    budget = budget or {}
    tolerance = float(budget.get("tolerance", DEFAULT_TOLERANCE))
    verdicts = []
    for key, (figure, bound) in BUDGET_FIGURES.items():
        measured = float(getattr(result, figure))
        if key not in budget:
            verdicts.append(Verdict(key, measured, bound=bound))
            continue
        target = float(budget[key])
        limit = target * (1 + tolerance) if bound == "max" else target * (1 - tolerance)
        ok = measured <= limit if bound == "max" else measured >= limit
        verdicts.append(Verdict(key, measured, target, limit, bound, "pass" if ok else "fail"))
    return verdicts
