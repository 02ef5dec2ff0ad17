"""Latency: TTFT, TPOT, ITL, E2E and output throughput of the streaming chat API against the matrix's budgets.

Source: issue 6; definitions and workload of ``sglang.bench_serving --backend sglang-oai-chat --dataset-name random-ids
--random-range-ratio 1.0`` (pytest_lfm/measure/). A budget applies to the GPU, launch profile and concurrency it names
(the matrix's ``latency_budgets``), at concurrency 1 and at --lfm-latency-concurrency alike; a configuration without one
is reported, not failed. Every request must succeed and produce the requested number of tokens. The figures go to
pytest-benchmark (``extra_info``; ``--benchmark-save`` / ``--benchmark-compare``) and to the qualification report.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import pytest

from pytest_lfm.matrix import LaunchConfig
from pytest_lfm.measure.client import measure
from pytest_lfm.measure.fidelity import FIDELITY_TOLERANCE, fidelity_ratios, fidelity_runs, normalized_fidelity_ratios
from pytest_lfm.measure.stats import LatencyResult, judge
from pytest_lfm.measure.workload import Workload, load_tokenizer
from pytest_lfm.report.notes import FIDELITY, LATENCY, note
from pytest_lfm.runtime import HttpServer, hosts
from pytest_lfm.settings import Settings

pytestmark = [pytest.mark.lfm_requires("chat"), pytest.mark.lfm_live]

# Liquid's published figures use 1024 input / 128 output tokens at concurrency 1 (docs/facts.md). At concurrency 1
# each request runs alone, so its TTFT and TPOT and the output throughput do not depend on how many are sent: 32 (the
# budgets' source runs sent 64) halve the six concurrency-1 checks' ~14 s each on the H200. At concurrency N the
# batches' ramp-up and drain weigh on the figures, so that load keeps the 64 its budgets were measured with.
WORKLOAD = Workload(input_len=1024, output_len=128, num_prompts=32, warmup_requests=8)
LOAD_N_PROMPTS = 64


def _gpu_name(gpus: list[int]) -> str:
    """The name of this worker's GPU as nvidia-smi prints it (budget keys are prefixes of it)."""
    names = {g.index: g.name for g in hosts.list_gpus()}
    return names.get(gpus[0], "unknown GPU") if gpus else "remote or unknown GPU"


@pytest.fixture(params=["concurrency-1", "concurrency-n"])
def lfm_load(request: pytest.FixtureRequest, lfm_settings: Settings) -> Workload:
    """The workload at concurrency 1 and at --lfm-latency-concurrency."""
    if request.param == "concurrency-1":
        return WORKLOAD
    n = lfm_settings.latency_concurrency
    return replace(WORKLOAD, concurrency=n, num_prompts=max(LOAD_N_PROMPTS, 4 * n))


def _qualify(
    request: pytest.FixtureRequest, benchmark: Any, server: HttpServer, model_name: str,
    tokenizer_path: str, launch: LaunchConfig, gpus: list[int], workload: Workload,
) -> None:
    """Measure, store the figures (pytest-benchmark and the report), then hold them to the budget."""
    tokenizer = load_tokenizer(tokenizer_path)
    benchmark.group = f"latency {launch.id} c{workload.concurrency}"
    result: LatencyResult = benchmark.pedantic(measure, args=(server.base_url, model_name, tokenizer, workload),
                                               rounds=1, iterations=1)
    gpu = _gpu_name(gpus)
    budget = launch.model.budget_for(gpu, launch.profile, workload.concurrency)
    verdicts = judge(result, budget)
    failing = [v for v in verdicts if v.status == "fail"]
    if budget is None:
        overall = (f"reported (no budget for {gpu!r}, profile {launch.profile!r}, "
                   f"concurrency {workload.concurrency})")
    else:
        overall = "fail" if failing else "pass"
    benchmark.extra_info.update({**result.figures(), "gpu": gpu, "profile": launch.profile,
                                 "concurrency": workload.concurrency, "verdict": overall})
    note(request, LATENCY, {
        "config": launch.id, "profile": launch.profile, "gpu": gpu, "concurrency": workload.concurrency,
        "workload": asdict(workload), "figures": result.figures(), "errors": list(result.errors),
        "budget": dict(budget) if budget else None, "verdict": overall,
        "verdicts": [asdict(v) for v in verdicts],
    })

    assert result.failed == 0, (
        f"{result.failed} of {workload.num_prompts} streamed requests to {server.base_url} failed at concurrency "
        f"{workload.concurrency}; first errors: {list(result.errors)}")
    assert result.no_content_requests == 0, _no_content(result, server.base_url)
    assert result.short_requests == 0, (
        f"{result.short_requests} requests stopped before {workload.output_len} tokens although ignore_eos was set")
    assert not failing, (f"{launch.id} on {gpu} at concurrency {workload.concurrency} misses its latency budget "
                         f"({launch.model.source}: {dict(budget or {})}):\n"
                         + "\n".join(v.describe() for v in verdicts))


def _no_content(result: LatencyResult, base_url: str) -> str:
    return (f"{result.no_content_requests} of {result.completed} streams from {base_url} carried no content although "
            "skip_special_tokens was false: TTFT and ITL cannot be measured (bench_serving would report them as 0)")


def test_latency_within_budget(
    request: pytest.FixtureRequest, benchmark: Any, lfm_live_server: HttpServer,
    lfm_model_name: str, lfm_tokenizer_path: str, lfm_launch: LaunchConfig, lfm_gpus: list[int], lfm_load: Workload,
    lfm_quiet: dict[str, Any],
) -> None:
    """Default launch profile: no failed request; TTFT/TPOT/throughput within the budget for this GPU and load."""
    _qualify(request, benchmark, lfm_live_server, lfm_model_name, lfm_tokenizer_path, lfm_launch, lfm_gpus, lfm_load)


@pytest.mark.lfm_launch(profile="low-latency")
def test_latency_within_budget_low_latency_profile(
    request: pytest.FixtureRequest, benchmark: Any, lfm_live_server: HttpServer,
    lfm_model_name: str, lfm_tokenizer_path: str, lfm_launch: LaunchConfig, lfm_gpus: list[int], lfm_load: Workload,
    lfm_quiet: dict[str, Any],
) -> None:
    """Low-latency profile (--enable-torch-compile --chunked-prefill-size -1, Liquid's published setup)."""
    _qualify(request, benchmark, lfm_live_server, lfm_model_name, lfm_tokenizer_path, lfm_launch, lfm_gpus, lfm_load)


@pytest.mark.lfm_fidelity
def test_latency_agrees_with_bench_serving(
    request: pytest.FixtureRequest, lfm_live_server: HttpServer, lfm_model_name: str,
    lfm_tokenizer_path: str, lfm_launch: LaunchConfig, lfm_gpus: list[int], lfm_settings: Settings,
    lfm_quiet: dict[str, Any],
) -> None:
    """The plugin's mean TTFT and TPOT are within 5% of sglang.bench_serving's on the same server and workload, over
    --lfm-fidelity-rounds alternated rounds, each run divided by the server's own figures over it (its
    --enable-metrics histograms, which every launch has): the server's speed moves between runs a minute apart by
    more than 5% (H200: 1.37-1.81 ms per token), and both clients with it. Each run's warmup goes before the server's
    window (fidelity_runs). The plain ratio of the means is reported beside; a server without /metrics
    (--lfm-base-url, started without --enable-metrics) is judged on the plain ratio. Opt-in: selected by
    -m lfm_fidelity, else skipped at collection (no launch for it)."""
    tokenizer = load_tokenizer(lfm_tokenizer_path)
    url = lfm_live_server.base_url
    ours_runs, bench_runs = fidelity_runs(url, lfm_model_name, tokenizer, lfm_tokenizer_path, WORKLOAD,
                                          lfm_settings.fidelity_rounds)
    ours, ours_server = [o for o, _ in ours_runs], [s for _, s in ours_runs]
    bench, bench_server = [b for b, _ in bench_runs], [s for _, s in bench_runs]
    ratios = fidelity_ratios(ours, bench)
    normalized = normalized_fidelity_ratios(ours, bench, ours_server, bench_server)
    per_round = [fidelity_ratios([o], [b]) for o, b in zip(ours, bench, strict=True)]
    keys = ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "mean_itl_ms", "mean_e2e_latency_ms",
            "output_throughput", "completed")
    missing, runs = sum(s is None for s in (*ours_server, *bench_server)), len(ours) + len(bench)
    if normalized:
        judged, basis = normalized, "normalized by the server's own figures"
    elif missing == runs:
        judged = ratios
        basis = "plain ratio of the means (the server exports no sglang:* latency metrics: --enable-metrics)"
    else:
        judged, basis = ratios, f"plain ratio of the means (no server figures for {missing} of {runs} runs)"
    note(request, FIDELITY, {
        "config": lfm_launch.id, "gpu": _gpu_name(lfm_gpus), "workload": asdict(WORKLOAD), "ratios": ratios,
        "normalized_ratios": normalized, "judged": basis, "rounds": len(ours), "round_ratios": per_round,
        "ours": [o.figures() for o in ours], "ours_server": ours_server,
        "bench_serving": [{k: b.get(k) for k in keys} for b in bench], "bench_serving_server": bench_server,
    })
    for o, b in zip(ours, bench, strict=True):
        assert o.failed == 0 and b.get("completed") == WORKLOAD.num_prompts, (o.errors, b.get("completed"))
        assert o.no_content_requests == 0, _no_content(o, url)
    off = {k: r for k, r in judged.items() if k in ("ttft", "tpot") and abs(r - 1) > FIDELITY_TOLERANCE}
    assert set(judged) >= {"ttft", "tpot"} and not off, (
        f"plugin / bench_serving over {len(ours)} alternated rounds, {basis}: {judged} (TTFT, TPOT must be within "
        f"{FIDELITY_TOLERANCE:.0%}); plain ratios {ratios}; per round: {per_round}; ours: "
        f"{[(o.mean_ttft_ms, o.mean_tpot_ms) for o in ours]} (server: {ours_server}); bench_serving: "
        f"{[(b.get('mean_ttft_ms'), b.get('mean_tpot_ms')) for b in bench]} (server: {bench_server})")
