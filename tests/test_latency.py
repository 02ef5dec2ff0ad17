"""Latency figures follow sglang.bench_serving's definitions (CPU: synthetic timings, a fake streaming server)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import numpy as np
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

from pytest_lfm.measure import metrics as server_metrics
from pytest_lfm.measure.bench_serving import bench_serving_command
from pytest_lfm.measure.client import chat_payload, measure, stream_chat
from pytest_lfm.measure.fidelity import fidelity_ratios, fidelity_runs, interleaved_rounds, normalized_fidelity_ratios
from pytest_lfm.measure.metrics import latency_totals_from_metrics, observed, server_latency_totals, server_means
from pytest_lfm.measure.stats import LatencyResult, RequestTiming, Verdict, judge, summarize
from pytest_lfm.measure.workload import Prompt, Workload, load_tokenizer, random_ids_prompts


class FakeTokenizer:
    """What the random-ids workload needs from a tokenizer."""

    vocab_size = 1000

    def num_special_tokens_to_add(self) -> int:
        return 1

    def decode(self, ids: list[int]) -> str:
        return " ".join(f"t{i}" for i in ids)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [0] * len(text.split())


TIMINGS = [
    RequestTiming(success=True, start=10.0, ttft=0.020, itl=[0.002, 0.003, 0.002], latency=0.027, output_len=4),
    RequestTiming(success=True, start=10.1, ttft=0.030, itl=[0.004] * 7, latency=0.060, output_len=8),
    RequestTiming(success=True, start=10.2, ttft=0.015, itl=[], latency=0.015, output_len=1),
    RequestTiming(success=False, start=10.3, error="HTTP 500: boom"),
]


def test_summarize_by_hand() -> None:
    result = summarize(TIMINGS, 2.0, Workload(output_len=8, num_prompts=4))
    assert (result.completed, result.failed, result.total_output_tokens) == (3, 1, 13)
    assert result.mean_ttft_ms == pytest.approx((20 + 30 + 15) / 3)
    # TPOT = (E2E - TTFT) / (output tokens - 1), only for requests with more than one token
    assert result.mean_tpot_ms == pytest.approx(((27 - 20) / 3 + (60 - 30) / 7) / 2)
    assert result.mean_itl_ms == pytest.approx(1000 * sum([0.002, 0.003, 0.002] + [0.004] * 7) / 10)
    assert result.mean_e2e_ms == pytest.approx((27 + 60 + 15) / 3)
    assert result.output_tok_s == pytest.approx(13 / 2.0)
    assert result.short_requests == 2
    assert result.errors == ("HTTP 500: boom",)


def test_summarize_with_no_success_is_zero_not_an_error() -> None:
    result = summarize([RequestTiming(error="x")], 1.0, Workload())
    assert (result.completed, result.failed, result.mean_ttft_ms, result.output_tok_s) == (0, 1, 0.0, 0.0)


@pytest.fixture(scope="module")
def sglang_serving() -> Any:
    return pytest.importorskip("sglang.benchmark.serving", reason="sglang's bench_serving is not importable here")


def test_summarize_equals_sglang_calculate_metrics(sglang_serving: Any) -> None:
    """Cross-check against sglang's own calculate_metrics on the same synthetic requests."""
    rng = np.random.default_rng(0)
    timings = list(TIMINGS)
    for i in range(20):
        itl = [float(x) for x in rng.uniform(0.001, 0.01, size=15)]
        ttft = float(rng.uniform(0.01, 0.05))
        timings.append(RequestTiming(success=True, start=11 + i * 0.05, ttft=ttft, itl=itl,
                                     latency=ttft + sum(itl) + 0.001, output_len=16))
    outputs = [sglang_serving.RequestFuncOutput(success=t.success, latency=t.latency, ttft=t.ttft, itl=t.itl,
                                                output_len=t.output_len, start_time=t.start) for t in timings]
    metrics, _ = sglang_serving.calculate_metrics(input_requests=None, outputs=outputs, dur_s=3.5,
                                                  tokenizer=FakeTokenizer(), backend="sglang-oai-chat")
    ours = summarize(timings, 3.5, Workload(output_len=16))
    pairs = {"completed": "completed", "total_output_tokens": "total_output", "output_tok_s": "output_throughput",
             "request_per_s": "request_throughput", "mean_e2e_ms": "mean_e2e_latency_ms",
             "median_e2e_ms": "median_e2e_latency_ms", "p99_e2e_ms": "p99_e2e_latency_ms"}
    for name in ("ttft", "tpot", "itl"):
        for stat in ("mean", "median", "p99"):
            pairs[f"{stat}_{name}_ms"] = f"{stat}_{name}_ms"
    for mine, theirs in pairs.items():
        assert getattr(ours, mine) == pytest.approx(getattr(metrics, theirs), rel=1e-12), mine


def test_random_ids_prompts_equal_bench_servings() -> None:
    random_ds = pytest.importorskip("sglang.benchmark.datasets.random", reason="sglang's datasets not importable")
    np.random.seed(7)
    theirs = random_ds.sample_random_requests(input_len=12, output_len=5, num_prompts=6, range_ratio=1.0,
                                              tokenizer=FakeTokenizer(), dataset_path="", random_sample=False)
    ours = random_ids_prompts(FakeTokenizer(), 12, 5, 6, seed=7)
    assert [(p.text, p.prompt_len, p.output_len) for p in ours] == [(r.prompt, r.prompt_len, r.output_len)
                                                                    for r in theirs]


def test_random_ids_prompts_fixed_lengths() -> None:
    prompts = random_ids_prompts(FakeTokenizer(), 10, 4, 3, seed=1)
    assert [len(p.text.split()) for p in prompts] == [9, 9, 9]  # one special token added by the server's encode
    assert len({p.text for p in prompts}) == 3


def test_chat_payload_is_bench_servings() -> None:
    prompt = Prompt("hi", 1, 128)
    body = chat_payload("m", prompt)
    assert body == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 128,
                    "stream": True, "temperature": 0.0, "ignore_eos": True, "stream_options": {"include_usage": True},
                    "skip_special_tokens": False}
    assert chat_payload("m", prompt, max_tokens=32)["max_completion_tokens"] == 32


# ---------------------------------------------------------------- a fake streaming server


GAP = 0.01  # seconds between streamed tokens
FIRST = 0.03  # seconds to the first token
REGISTRY = CollectorRegistry()  # the fake server's own latency histograms, named as sglang --enable-metrics names them
SERVER_TTFT = Histogram("sglang:time_to_first_token_seconds", "ttft", ["is_streaming"], registry=REGISTRY)
SERVER_ITL = Histogram("sglang:inter_token_latency_seconds", "itl", registry=REGISTRY)


def _chunk(delta: dict[str, Any] | None = None, usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, Any] = {"choices": [{"index": 0, "delta": delta}] if delta is not None else []}
    if usage:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    seen: ClassVar[list[dict[str, Any]]] = []
    metrics: ClassVar[bool] = True  # serve /metrics (sglang --enable-metrics)
    slowdown: ClassVar[float] = 1.0  # a server that drifts: every delay times this

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/v1/models":
            self._json(200, {"data": [{"id": "fake-model"}]})
        elif self.path == "/metrics" and _Handler.metrics:
            data = generate_latest(REGISTRY)
            self.send_response(200)
            self.send_header("content-type", CONTENT_TYPE_LATEST)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.split("?")[0] == "/flush_cache":
            self._json(200, {})
            return
        request = json.loads(body)
        _Handler.seen.append(request)
        if request["model"] not in ("fake-model", "error-model", "reasoning-model", "specials-model", "silent-model"):
            self._json(400, {"message": "unknown model"})
            return
        n = int(request["max_completion_tokens"])
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        self.wfile.write(_chunk({"role": "assistant", "content": ""}))
        self.wfile.flush()
        started = time.perf_counter()
        time.sleep(FIRST * _Handler.slowdown)
        for i in range(n):
            if i:
                time.sleep(GAP * _Handler.slowdown)
            now = time.perf_counter()
            if i:
                SERVER_ITL.observe(now - started)
            else:
                SERVER_TTFT.labels(is_streaming="true").observe(now - started)
            started = now
            if request["model"] == "error-model" and i == 1:
                self.wfile.write(b'data: {"error": {"message": "out of memory"}}\n\n')
                return
            key = "reasoning_content" if request["model"] == "reasoning-model" and i == 0 else "content"
            text = f"w{i} "
            if request["model"] == "silent-model" or (request["model"] == "specials-model"
                                                      and request.get("skip_special_tokens", True)):
                text = ""  # sglang strips special tokens from the text unless skip_special_tokens is false
            elif request["model"] == "specials-model":
                text = "<|im_end|>"
            self.wfile.write(_chunk({key: text}))
            self.wfile.flush()
        self.wfile.write(_chunk({}, usage={"prompt_tokens": 7, "completion_tokens": n}))
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_measure_against_a_streaming_server(fake_server: str) -> None:
    _Handler.seen.clear()
    workload = Workload(input_len=16, output_len=6, num_prompts=4, concurrency=2, warmup_requests=2)
    result = measure(fake_server, "fake-model", FakeTokenizer(), workload)
    assert (result.completed, result.failed, result.short_requests) == (4, 0, 0)
    assert result.total_output_tokens == 24 and result.total_prompt_tokens == 28
    assert FIRST * 1000 <= result.mean_ttft_ms < FIRST * 1000 + 40  # the role-only chunk is not the first token
    assert GAP * 1000 <= result.mean_itl_ms < GAP * 1000 + 15
    assert result.mean_tpot_ms == pytest.approx((result.mean_e2e_ms - result.mean_ttft_ms) / 5, rel=0.2)
    assert len(_Handler.seen) == 2 + 4  # warmup requests, then the workload


def test_failed_requests_are_counted_with_their_error(fake_server: str) -> None:
    workload = Workload(input_len=4, output_len=2, num_prompts=3, warmup_requests=0)
    result = measure(fake_server, "other-model", FakeTokenizer(), workload)
    assert result.failed == 3 and result.completed == 0
    assert result.errors and result.errors[0].startswith("HTTP 400") and "unknown model" in result.errors[0]


def test_failing_warmup_stops_the_run(fake_server: str) -> None:
    with pytest.raises(RuntimeError, match="every warmup request"):
        measure(fake_server, "other-model", FakeTokenizer(), Workload(input_len=4, output_len=2,
                                                                       num_prompts=1, warmup_requests=1))


def test_an_error_inside_the_stream_fails_the_request(fake_server: str) -> None:
    result = measure(fake_server, "error-model", FakeTokenizer(), Workload(input_len=4, output_len=3,
                                                                        num_prompts=2, warmup_requests=0))
    assert result.failed == 2 and "out of memory" in result.errors[0]


def test_reasoning_content_counts_as_content(fake_server: str) -> None:
    payload = chat_payload("reasoning-model", Prompt("x", 1, 3))
    timing = asyncio.run(stream_chat(fake_server, payload))
    assert timing.success and timing.ttft >= FIRST and len(timing.itl) == 2 and timing.output_len == 3


def test_special_tokens_only_answers_are_timed_through_skip_special_tokens_false(fake_server: str) -> None:
    result = measure(fake_server, "specials-model", FakeTokenizer(), Workload(input_len=4, output_len=3,
                                                                           num_prompts=2, warmup_requests=0))
    assert result.completed == 2 and result.no_content_requests == 0 and result.mean_ttft_ms >= FIRST * 1000


def test_streams_without_content_are_counted_not_timed(fake_server: str) -> None:
    result = measure(fake_server, "silent-model", FakeTokenizer(), Workload(input_len=4, output_len=3,
                                                                         num_prompts=2, warmup_requests=0))
    assert result.completed == 2 and result.no_content_requests == 2 and result.mean_ttft_ms == 0.0


# ---------------------------------------------------------------- budgets


def _result(**figures: float) -> LatencyResult:
    base = summarize([], 1.0, Workload())
    return LatencyResult(**{**base.__dict__, **figures})


def test_judge_upper_and_lower_bounds_with_tolerance() -> None:
    result = _result(mean_ttft_ms=10.5, mean_tpot_ms=1.2, output_tok_s=950.0)
    by_metric = {v.metric: v for v in judge(result, {"ttft_ms": 10, "tpot_ms": 1.0, "output_tok_s": 1000})}
    assert by_metric["ttft_ms"].status == "pass"  # 10.5 <= 10 * 1.1
    assert by_metric["tpot_ms"].status == "fail"  # 1.2 > 1.1
    assert by_metric["output_tok_s"].status == "pass"  # 950 >= 900
    assert by_metric["itl_ms"].status == "reported" and by_metric["itl_ms"].budget is None
    assert "OUTSIDE" in by_metric["tpot_ms"].describe()
    strict = {v.metric: v for v in judge(result, {"ttft_ms": 10, "output_tok_s": 1000, "tolerance": 0})}
    assert strict["ttft_ms"].status == "fail" and strict["output_tok_s"].status == "fail"


def test_no_budget_is_reported_not_failed() -> None:
    verdicts = judge(_result(mean_ttft_ms=1e6), None)
    assert {v.status for v in verdicts} == {"reported"}
    assert all(isinstance(v, Verdict) for v in verdicts)


def test_budget_lookup_from_the_matrix() -> None:
    from pytest_lfm.matrix import load_matrix

    spec = load_matrix().get("LiquidAI/LFM2.5-1.2B-Instruct")
    assert spec is not None
    assert spec.budget_for("NVIDIA B300 SXM6 AC", "low-latency") is not None
    assert spec.budget_for("NVIDIA B300 SXM6 AC", "default") is None
    assert spec.budget_for("NVIDIA H100 80GB HBM3", "low-latency") is None
    assert spec.budget_for("NVIDIA B300 SXM6 AC", "low-latency", 8) is None  # a budget holds at concurrency 1


def test_budgets_per_profile_and_concurrency_for_every_micro_checkpoint_on_the_h200() -> None:
    from pytest_lfm.matrix import load_matrix

    matrix = load_matrix()
    for name in ("micro-dense", "micro-moe", "micro-vl"):
        spec = matrix.get(name)
        assert spec is not None
        found = {(p, c): spec.budget_for("NVIDIA H200", p, c) for p in ("default", "low-latency") for c in (1, 8)}
        assert all(b is not None and {"ttft_ms", "tpot_ms", "output_tok_s"} <= set(b) for b in found.values()), name
        assert len({id(b) for b in found.values()}) == 4, name
        assert spec.budget_for("NVIDIA H200", "default", 4) is None  # no figures measured at 4
        assert spec.budget_for("NVIDIA H100 80GB HBM3", "default", 8) is None
    dense = matrix.get("micro-dense")
    assert dense is not None
    assert dense.budget_for("NVIDIA H200", "default", 8) == {"concurrency": 8, "ttft_ms": 45.2, "tpot_ms": 1.68,
                                                               "output_tok_s": 3912, "tolerance": 0.5}


# ---------------------------------------------------------------- fidelity helper


def test_bench_serving_command_mirrors_the_workload(tmp_path: Any) -> None:
    cmd = bench_serving_command("http://h:1", "m", "/tok", Workload(input_len=5, output_len=3,
                                                                     num_prompts=7, concurrency=2),
                                tmp_path / "o.jsonl")
    text = " ".join(cmd)
    for part in ("-m sglang.bench_serving", "--backend sglang-oai-chat", "--dataset-name random-ids",
                 "--random-range-ratio 1.0", "--random-input-len 5", "--random-output-len 3", "--num-prompts 7",
                 "--max-concurrency 2", "--warmup-requests 8", "--seed 42", "--flush-cache", "--tokenizer /tok"):
        assert part in text
    assert json.loads(cmd[cmd.index("--extra-request-body") + 1]) == {"skip_special_tokens": False}


def test_fidelity_ratios() -> None:
    ours = _result(mean_ttft_ms=10.0, mean_tpot_ms=1.0, mean_itl_ms=1.0, mean_e2e_ms=100.0)
    ratios = fidelity_ratios([ours], [{"mean_ttft_ms": 10.0, "mean_tpot_ms": 0.98, "mean_itl_ms": 0,
                                      "mean_e2e_latency_ms": 100.0}])
    assert ratios == pytest.approx({"ttft": 1.0, "tpot": 1 / 0.98, "e2e": 1.0})
    medians = fidelity_ratios([_result(median_ttft_ms=9.0, median_tpot_ms=1.0)],
                              [{"median_ttft_ms": 10.0, "median_tpot_ms": 1.25}])
    assert medians["median_ttft"] == pytest.approx(0.9) and medians["median_tpot"] == pytest.approx(0.8)


def test_fidelity_over_rounds_is_the_ratio_of_the_means_and_the_rounds_go_abba() -> None:
    calls: list[str] = []
    results = iter([_result(mean_ttft_ms=t, mean_tpot_ms=1.0, mean_itl_ms=1.0, mean_e2e_ms=100.0)
                    for t in (10.0, 14.0, 12.0, 12.0)])
    benches = iter([{"mean_ttft_ms": t, "mean_tpot_ms": 1.0, "mean_itl_ms": 1.0, "mean_e2e_latency_ms": 100.0}
                    for t in (11.0, 13.0, 12.0, 12.0)])

    def ours() -> LatencyResult:
        calls.append("ours")
        return next(results)

    def bench() -> dict[str, Any]:
        calls.append("bench")
        return next(benches)

    runs = interleaved_rounds(ours, bench)
    assert calls == ["ours", "bench", "bench", "ours", "bench", "ours", "ours", "bench"]
    assert fidelity_ratios(*runs) == pytest.approx({"ttft": 1.0, "tpot": 1.0, "itl": 1.0, "e2e": 1.0})
    assert fidelity_ratios(runs[0][:1], runs[1][:1])["ttft"] == pytest.approx(10 / 11)


def test_normalized_ratios_divide_each_run_by_the_servers_own_figures() -> None:
    # the server's speed doubles between the runs; both clients read 1.1x what the server saw, ours 10% more TTFT
    ours = [_result(mean_ttft_ms=22.0, mean_tpot_ms=1.1), _result(mean_ttft_ms=11.0, mean_tpot_ms=0.55)]
    bench = [{"mean_ttft_ms": 10.0, "mean_tpot_ms": 0.55}, {"mean_ttft_ms": 20.0, "mean_tpot_ms": 1.1}]
    ours_server = [{"ttft_ms": 20.0, "itl_ms": 1.0}, {"ttft_ms": 10.0, "itl_ms": 0.5}]
    bench_server = [{"ttft_ms": 10.0, "itl_ms": 0.5}, {"ttft_ms": 20.0, "itl_ms": 1.0}]
    assert normalized_fidelity_ratios(ours, bench, ours_server, bench_server) == pytest.approx(
        {"ttft": 1.1 / 1.0, "tpot": 1.0})
    assert normalized_fidelity_ratios(ours, bench, [None, ours_server[1]], bench_server) == {}
    assert server_means({"ttft": (1.0, 2), "itl": (1.0, 5)}, {"ttft": (1.5, 3), "itl": (1.0, 9)}) is None
    assert server_means({"ttft": (1.0, 2), "itl": (1.0, 5)}, {"ttft": (1.5, 3), "itl": (1.1, 9)}) == (
        pytest.approx({"ttft_ms": 500.0, "itl_ms": 25.0}))


def test_server_means_come_from_the_metrics_histograms(
    fake_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload = Workload(input_len=4, output_len=5, num_prompts=3, warmup_requests=0, flush_cache=False)
    _, means = observed(fake_server, lambda: measure(fake_server, "fake-model", FakeTokenizer(),
                                                     workload))
    assert means is not None
    assert FIRST * 1000 <= means["ttft_ms"] < FIRST * 1000 + 20 and GAP * 1000 <= means["itl_ms"] < GAP * 1000 + 10
    assert server_means(server_latency_totals(fake_server),
                        server_latency_totals(fake_server)) is None  # nothing served in between
    monkeypatch.setattr(_Handler, "metrics", False)
    assert server_latency_totals(fake_server) is None
    assert observed(fake_server, lambda: 1) == (1, None)
    assert server_latency_totals("http://127.0.0.1:9") is None  # nothing listening


MULTIPROCESS_EXPOSITION = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess
ttft = Histogram("sglang:time_to_first_token_seconds", "", ["model_name", "is_streaming"])
for value in (0.02, 0.03):
    ttft.labels(model_name="m", is_streaming="true").observe(value)
ttft.labels(model_name="m", is_streaming="false").observe(0.05)
# sglang's observe_inter_token_latency: one interval for 5 new tokens adds the interval to the sum, 5 to a bucket
itl = Histogram("sglang:inter_token_latency_seconds", "", ["model_name"]).labels(model_name="m")
itl._sum.inc(0.005)
itl._buckets[0].inc(5)
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
sys.stdout.write(generate_latest(registry).decode())
"""


def test_server_totals_from_sglangs_multiprocess_exposition(tmp_path: Any) -> None:
    """sglang serves /metrics from prometheus_client's multiprocess collector (PROMETHEUS_MULTIPROC_DIR), where a
    histogram's count is the sum of its buckets: the interval sum over the token count is the mean ITL per token."""
    text = subprocess.run([sys.executable, "-c", MULTIPROCESS_EXPOSITION, str(tmp_path)], capture_output=True,
                          text=True, check=True).stdout
    totals = latency_totals_from_metrics(text)
    assert totals is not None
    assert totals["ttft"] == pytest.approx((0.10, 3)) and totals["itl"] == pytest.approx((0.005, 5))
    assert latency_totals_from_metrics("not { prometheus") is None


def test_a_fresh_servers_metrics_count_as_zero(tmp_path: Any) -> None:
    """Before its first request sglang's /metrics lacks both histograms (labelled, multiprocess): the totals are
    zero, so the first run of the fidelity check has server figures (with a missing histogram counted as
    missing, the H200's first run had None there: docs/gpu-runs/2026-12-01-h200-f)."""
    fresh = MULTIPROCESS_EXPOSITION.split("for value")[0] + (
        "registry = CollectorRegistry()\nmultiprocess.MultiProcessCollector(registry)\n"
        "sys.stdout.write(generate_latest(registry).decode())\n")
    text = subprocess.run([sys.executable, "-c", fresh, str(tmp_path)], capture_output=True, text=True,
                          check=True).stdout
    assert "time_to_first_token" not in text
    before = latency_totals_from_metrics(text)
    assert before == {"ttft": (0.0, 0.0), "itl": (0.0, 0.0)}
    after = {"ttft": (0.06, 3), "itl": (0.01, 10)}
    assert server_means(before, after) == pytest.approx({"ttft_ms": 20.0, "itl_ms": 1.0})
    assert server_means(before, latency_totals_from_metrics("# nothing here\n")) is None


def test_fidelity_against_bench_serving_on_a_fake_server(
    fake_server: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end on CPU: the installed sglang.bench_serving and the plugin measure the same fake server alike.
    The server's delays are long enough that a busy 2-core CI machine's scheduling noise stays well inside the 15%
    (with 30 ms to the first token, CI once measured 1.44x)."""
    monkeypatch.setattr(sys.modules[__name__], "FIRST", 0.25)
    monkeypatch.setattr(sys.modules[__name__], "GAP", 0.05)
    pytest.importorskip("sglang.benchmark.serving", reason="sglang's bench_serving is not importable here")
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {f"t{i}": i for i in range(200)} | {"[UNK]": 200, "<s>": 201}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>")
    fast.save_pretrained(tmp_path / "tok")
    workload = Workload(input_len=8, output_len=8, num_prompts=6, warmup_requests=2)
    snapshots = []  # the server's totals as fidelity_runs' observed() reads them, before and after every run
    totals = server_latency_totals
    monkeypatch.setattr(server_metrics, "server_latency_totals",
                        lambda url: snapshots.append(totals(url)) or snapshots[-1])
    _Handler.seen.clear()
    (ours_run,), (bench_run,) = fidelity_runs(
        fake_server, "fake-model", load_tokenizer(str(tmp_path / "tok")), str(tmp_path / "tok"), workload, 1)
    (ours, ours_server), (bench, bench_server) = ours_run, bench_run
    assert bench["completed"] == 6 and ours.completed == 6
    assert _Handler.seen and all(r.get("skip_special_tokens") is False for r in _Handler.seen)  # the same extra body
    # 6 priming requests + 2 warmups before each run; the server's figures cover exactly the 6 timed per run
    assert len(_Handler.seen) == 6 + 2 + 2 * (2 + 6)
    windows = zip(snapshots[::2], snapshots[1::2], strict=True)
    assert [after["ttft"][1] - before["ttft"][1] for before, after in windows] == [6, 6]
    ratios = fidelity_ratios([ours], [bench])
    assert abs(ratios["ttft"] - 1) < 0.15 and abs(ratios["tpot"] - 1) < 0.15, (ratios, ours.figures(), bench)
    normalized = normalized_fidelity_ratios([ours], [bench], [ours_server], [bench_server])
    assert abs(normalized["ttft"] - 1) < 0.15 and abs(normalized["tpot"] - 1) < 0.15, (normalized, ours_server,
                                                                                       bench_server)

    # the server runs 1.6x slower while the plugin measures: the plain ratio sees the drift, the normalized not
    monkeypatch.setattr(_Handler, "slowdown", 1.6)
    slow, slow_server = observed(fake_server, lambda: measure(
        fake_server, "fake-model", load_tokenizer(str(tmp_path / "tok")), workload))
    assert fidelity_ratios([slow], [bench])["tpot"] > 1.3
    normalized = normalized_fidelity_ratios([slow], [bench], [slow_server], [bench_server])
    assert abs(normalized["ttft"] - 1) < 0.15 and abs(normalized["tpot"] - 1) < 0.15, (normalized, slow_server,
                                                                                       bench_server)


def test_result_is_json_serializable() -> None:
    result = _result(mean_ttft_ms=1.0)
    assert json.loads(json.dumps(result.to_dict()))["mean_ttft_ms"] == 1.0
