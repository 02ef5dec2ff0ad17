"""Latency of a served model over the streaming chat API, measured the way ``sglang.bench_serving`` measures it.

The workload and the client mirror ``python -m sglang.bench_serving --backend sglang-oai-chat --dataset-name random-ids
--random-range-ratio 1.0``: prompts are random token ids decoded to text and sent as one user message, every
request asks for a fixed number of tokens with ``ignore_eos``, a few warmup requests run first, then the prefix cache
is flushed and the prompts run at a fixed concurrency. The figures follow ``sglang.benchmark.serving``'s
``calculate_metrics``:

- TTFT: request sent -> first chunk with non-empty content (``reasoning_content`` counts as content);
- ITL: the gaps between later content chunks (all requests pooled);
- TPOT per request: (E2E - TTFT) / (output tokens - 1), output tokens from the stream's ``usage``;
- E2E: request sent -> last line of the stream (``[DONE]``);
- output throughput: all output tokens / wall time of the measured run.

One departure, made on both sides: every request (and bench_serving, through ``--extra-request-body``) asks for
``skip_special_tokens: false``. A model that answers random ids with special tokens only streams no content otherwise,
and TTFT and ITL read 0 in the plugin and in bench_serving alike (a micro checkpoint did, H200, 2026-12-01). A
request whose stream still carries no content is counted in ``no_content_requests`` (its TTFT is 0, as in
bench_serving) and the suites fail on any, so a 0 never passes for a measured TTFT.

The client is aiohttp with one session (one connection) per request, as in bench_serving: an httpx client measured
about 1 ms more TTFT than bench_serving against the same stand-in server, aiohttp within 0.5%.

Fidelity against bench_serving (``fidelity_runs``, ``normalized_fidelity_ratios``): the two clients take turns
on one server, and each run is divided by what the server's own ``--enable-metrics`` histograms measured over it,
because the server's speed moves between runs by more than the 5% being judged.

Usable without pytest::

    tokenizer = load_tokenizer("/path/to/model")
    result = measure("http://127.0.0.1:30000", "/path/to/model", tokenizer, Workload(concurrency=1))
    print(result.figures(), judge(result, {"ttft_ms": 10, "tpot_ms": 1}))
"""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

FIDELITY_MARKER = ("lfm_fidelity: compares the plugin's TTFT/TPOT with sglang.bench_serving on the same server; "
                   "runs only when selected with -m lfm_fidelity")
FIDELITY_TOLERANCE = 0.05

# budget key -> (figure of LatencyResult it bounds, "max" for an upper bound or "min" for a lower bound)
BUDGET_FIGURES: dict[str, tuple[str, str]] = {
    "ttft_ms": ("mean_ttft_ms", "max"),
    "tpot_ms": ("mean_tpot_ms", "max"),
    "itl_ms": ("mean_itl_ms", "max"),
    "e2e_ms": ("mean_e2e_ms", "max"),
    "output_tok_s": ("output_tok_s", "min"),
}
DEFAULT_TOLERANCE = 0.1
READ_BUFSIZE = 10 * 1024**2  # bench_serving's aiohttp read buffer


@dataclass(frozen=True)
class Workload:
    """What one latency run sends: bench_serving's random-ids dataset at a fixed length and concurrency."""

    input_len: int = 1024
    output_len: int = 128
    num_prompts: int = 64
    concurrency: int = 1
    warmup_requests: int = 8
    seed: int = 42
    flush_cache: bool = True
    timeout: float = 300.0

    def __post_init__(self) -> None:
        if min(self.input_len, self.output_len, self.num_prompts, self.concurrency) < 1 or self.warmup_requests < 0:
            raise ValueError(f"lengths, num_prompts and concurrency must be >= 1, warmup_requests >= 0: {self}")


@dataclass(frozen=True)
class Prompt:
    """One request of the workload; ``prompt_len`` is the nominal length as bench_serving counts it."""

    text: str
    prompt_len: int
    output_len: int


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


# ---------------------------------------------------------------- workload


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str) -> Any:
    """The served model's tokenizer, loaded as bench_serving loads it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=True)


def random_ids_prompts(tokenizer: Any, input_len: int, output_len: int, num_prompts: int, seed: int) -> list[Prompt]:
    """bench_serving's ``random-ids`` prompts for ``--random-range-ratio 1.0 --seed SEED`` (same RNG draws, same text).

    The lengths are fixed, but the draws bench_serving makes for them are repeated so that the token offsets that
    follow match its own for the same seed.
    """
    rng = np.random.RandomState(seed)
    rng.randint(input_len, input_len + 1, size=num_prompts)
    rng.randint(output_len, output_len + 1, size=num_prompts)
    # Text prompts: the server's encode adds special tokens, so bench_serving shortens the ids by that many.
    length = max(1, input_len - int(tokenizer.num_special_tokens_to_add()))
    vocab = int(tokenizer.vocab_size)
    offsets = rng.randint(0, vocab, size=num_prompts)
    return [
        Prompt(tokenizer.decode([int((offsets[i] + i + j) % vocab) for j in range(length)]), length, output_len)
        for i in range(num_prompts)
    ]


# ---------------------------------------------------------------- client


EXTRA_BODY: dict[str, Any] = {"skip_special_tokens": False}  # what both clients add to bench_serving's body


def chat_payload(model: str, prompt: Prompt, max_tokens: int | None = None) -> dict[str, Any]:
    """bench_serving's sglang-oai-chat request body, with the usage chunk requested (as sglang >= 0.5.23 does) and
    ``EXTRA_BODY``."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt.text}],
        "max_completion_tokens": prompt.output_len if max_tokens is None else max_tokens,
        "stream": True,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
        **EXTRA_BODY,
    }


async def stream_chat(base_url: str, payload: Mapping[str, Any], timeout: float = 300.0) -> RequestTiming:
    """Send one streaming chat request and time its chunks, as bench_serving's sglang-oai-chat client does.

    Like bench_serving, each request gets its own aiohttp session (so its own connection), and the clock starts
    once the session exists.
    """
    timing = RequestTiming(output_len=int(payload["max_completion_tokens"]))
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout, read_bufsize=READ_BUFSIZE) as session:
        start = last = time.perf_counter()
        timing.start = start
        try:
            async with session.post(f"{base_url}/v1/chat/completions", json=payload) as response:
                if response.status != 200:
                    timing.error = f"HTTP {response.status}: {(await response.text())[:500]}"
                    return timing
                async for raw in response.content:
                    line = raw.strip()
                    if not line:
                        continue
                    data = line.decode().removeprefix("data: ")
                    timing.latency = time.perf_counter() - start
                    if data == "[DONE]":
                        continue
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        timing.error = f"error in stream: {json.dumps(chunk['error'])[:500]}"
                        return timing
                    usage = chunk.get("usage") or {}
                    timing.output_len = int(usage.get("completion_tokens", timing.output_len))
                    if "prompt_tokens" in usage:
                        timing.prompt_tokens = int(usage["prompt_tokens"])
                    choices = chunk.get("choices") or []
                    if not choices:
                        continue
                    delta = choices[0].get("delta") or {}
                    content = (delta.get("reasoning_content") or delta.get("reasoning") or "") + (
                        delta.get("content") or "")
                    if content:
                        now = time.perf_counter()
                        if timing.ttft == 0.0:
                            timing.ttft = now - start
                        else:
                            timing.itl.append(now - last)
                        last = now
            timing.success = True
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:  # ValueError: a chunk that is not JSON
            timing.error = f"{type(exc).__name__}: {exc}"
    return timing


async def run_load(base_url: str, model: str, prompts: Sequence[Prompt], workload: Workload) -> LatencyResult:
    """Warm up, flush the prefix cache, then send ``prompts`` at ``workload.concurrency``; summarize."""
    await _warm_up(base_url, model, prompts[0], workload)
    if workload.flush_cache:
        async with aiohttp.ClientSession() as session, session.post(f"{base_url}/flush_cache") as response:
            response.raise_for_status()
    await asyncio.sleep(1.0)

    semaphore = asyncio.Semaphore(workload.concurrency)

    async def limited(prompt: Prompt) -> RequestTiming:
        async with semaphore:
            return await stream_chat(base_url, chat_payload(model, prompt), workload.timeout)

    started = time.perf_counter()
    timings = await asyncio.gather(*(limited(p) for p in prompts))
    return summarize(timings, time.perf_counter() - started, workload)


async def _warm_up(base_url: str, model: str, prompt: Prompt, workload: Workload) -> None:
    """bench_serving's warmup: ``workload.warmup_requests`` copies of the first prompt at once, at most 32 tokens."""
    if workload.warmup_requests:
        warm = chat_payload(model, prompt, max_tokens=min(prompt.output_len, 32))
        outcomes = await asyncio.gather(*(stream_chat(base_url, warm, workload.timeout)
                                          for _ in range(workload.warmup_requests)))
        if not any(o.success for o in outcomes):
            raise RuntimeError(f"every warmup request to {base_url} failed; first error: {outcomes[0].error}")


def measure(base_url: str, model: str, tokenizer: Any, workload: Workload) -> LatencyResult:
    """Run ``workload`` against the server at ``base_url`` (its root URL) serving ``model``."""
    prompts = random_ids_prompts(tokenizer, workload.input_len, workload.output_len, workload.num_prompts,
                                 workload.seed)
    return asyncio.run(run_load(base_url, model, prompts, workload))


# ---------------------------------------------------------------- figures


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


# ---------------------------------------------------------------- fidelity against bench_serving


def bench_serving_command(base_url: str, model: str, tokenizer_path: str, workload: Workload,
                          output_file: Path) -> list[str]:
    """The ``sglang.bench_serving`` command for the same workload (same seed: the same prompts)."""
    cmd = [
        sys.executable, "-m", "sglang.bench_serving", "--backend", "sglang-oai-chat", "--base-url", base_url,
        "--model", model, "--tokenizer", tokenizer_path, "--dataset-name", "random-ids",
        "--random-input-len", str(workload.input_len), "--random-output-len", str(workload.output_len),
        "--random-range-ratio", "1.0", "--num-prompts", str(workload.num_prompts),
        "--max-concurrency", str(workload.concurrency), "--warmup-requests", str(workload.warmup_requests),
        "--seed", str(workload.seed), "--output-file", str(output_file), "--disable-tqdm",
        "--extra-request-body", json.dumps(EXTRA_BODY),
    ]
    if workload.flush_cache:
        cmd.append("--flush-cache")
    return cmd


def run_bench_serving(base_url: str, model: str, tokenizer_path: str, workload: Workload,
                      timeout: float = 900.0) -> dict[str, Any]:
    """Run bench_serving against the server and return its result record (mean_ttft_ms, mean_tpot_ms, ...)."""
    with tempfile.TemporaryDirectory(prefix="lfm-bench-") as tmp:
        out = Path(tmp) / "bench.jsonl"
        cmd = bench_serving_command(base_url, model, tokenizer_path, workload, out)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
            raise RuntimeError(f"bench_serving failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        record: dict[str, Any] = json.loads(out.read_text().strip().splitlines()[-1])
        return record


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
        asyncio.run(_warm_up(base_url, model, first, workload))
        return observed(base_url, client)

    return interleaved_rounds(lambda: run(lambda: measure(base_url, model, tokenizer, timed)),
                              lambda: run(lambda: run_bench_serving(base_url, model, tokenizer_path, timed)), rounds)
