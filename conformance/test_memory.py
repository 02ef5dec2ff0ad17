"""Memory: a server's GPU memory stays flat while it serves many distinct requests.

sglang sizes its pools once at start (``--mem-fraction-static``); what it allocates later is activations, which a
warm server has already. A leak shows up as memory that grows with the number of requests served, until the
scheduler dies with CUDA OOM. Seen on the H200 with sglang 0.5.17 (docs/gpu-runs/2026-12-01-h200-d): the
conv-state slot allocator hands out views of its free list (``free_slots[:n]``) and rebuilds the list with
``torch.cat`` on every free, so each slot a request or the prefix cache still holds keeps a whole old free list
alive. With a micro checkpoint's 31 M slots (a 240 MB list) the server died after ~585 distinct 1k-token requests;
an LFM2-350M on an H100 gets ~1.5 M slots (~12 MB a list), a few GB over a few hundred cached prompts. The micro
checkpoints now launch with ``--max-mamba-cache-size`` (matrices/micro.toml), so this check holds the rest.

The workload: bench_serving's random-ids prompts (all distinct, so every one stays in the prefix cache) at
concurrency 8, short answers. Memory is read from nvidia-smi for this worker's GPUs after a warm-up at the same
concurrency and again after the run, with no other runtime starting or serving (lfm_quiet: nvidia-smi counts the
whole GPU); the growth per request and in all is reported, and more than GROWTH_LIMIT_MIB fails. A server
someone else started (--lfm-base-url) is not on this worker's GPUs: the check skips.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import LaunchConfig
from pytest_lfm.measure.client import measure
from pytest_lfm.measure.workload import Workload, load_tokenizer
from pytest_lfm.report.notes import MEMORY, note
from pytest_lfm.runtime import ExternalServer, HttpServer, hosts

pytestmark = [pytest.mark.lfm_requires("chat"), pytest.mark.lfm_live]

WARMUP = Workload(input_len=1024, output_len=16, num_prompts=16, concurrency=8, warmup_requests=8, seed=1)
DISTINCT = Workload(input_len=1024, output_len=16, num_prompts=512, concurrency=8, warmup_requests=0, seed=2,
                    flush_cache=False)
GROWTH_LIMIT_MIB = 1024


def test_server_memory_stays_flat_over_distinct_requests(
    request: pytest.FixtureRequest, lfm_live_server: HttpServer, lfm_model_name: str,
    lfm_tokenizer_path: str, lfm_launch: LaunchConfig, lfm_gpus: list[int], lfm_quiet: dict[str, Any],
) -> None:
    """512 distinct 1k-token prompts at concurrency 8: every one answered, GPU memory grows by < 1 GiB."""
    if isinstance(lfm_live_server, ExternalServer) or not lfm_gpus:
        pytest.skip("the server under test is not on this worker's GPUs (--lfm-base-url): its memory is not seen")
    tokenizer = load_tokenizer(lfm_tokenizer_path)
    measure(lfm_live_server.base_url, lfm_model_name, tokenizer, WARMUP)
    before = hosts.gpu_memory_baseline(lfm_gpus)
    result = measure(lfm_live_server.base_url, lfm_model_name, tokenizer, DISTINCT)
    after = hosts.gpu_memory_baseline(lfm_gpus)
    growth = sum(after.values()) - sum(before.values())
    note(request, MEMORY, {
        "config": lfm_launch.id, "workload": asdict(DISTINCT), "before_mib": before, "after_mib": after,
        "growth_mib": growth, "growth_per_request_mib": round(growth / DISTINCT.num_prompts, 3),
        "completed": result.completed, "failed": result.failed, "errors": list(result.errors),
    })
    checks.check(result.failed == 0, "distinct requests answered", request=f"{DISTINCT}",
                 expected=f"all {DISTINCT.num_prompts} answered",
                 got=f"{result.failed} failed; first errors: {list(result.errors)}; server log: "
                     f"{getattr(lfm_live_server, 'log_path', '?')}")
    checks.check(growth <= GROWTH_LIMIT_MIB, "GPU memory growth over distinct requests (MiB, nvidia-smi)",
                 request=f"{DISTINCT.num_prompts} distinct prompts at concurrency {DISTINCT.concurrency}",
                 expected=f"<= {GROWTH_LIMIT_MIB} MiB after a warm-up at the same concurrency",
                 got=f"{growth} MiB ({growth / DISTINCT.num_prompts:.2f} MiB per request): {before} -> {after}")
