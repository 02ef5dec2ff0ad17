"""The offline engine (``sgl.Engine``): same greedy outputs as the server, batch generation, clean shutdown."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pytest_lfm import checks, hosts
from pytest_lfm.engine import SglangEngine
from pytest_lfm.matrix import LaunchConfig, ModelSpec
from pytest_lfm.micro.render import render_prompt
from pytest_lfm.micro.script import Script
from pytest_lfm.report import note
from pytest_lfm.runtime import RuntimePool
from pytest_lfm.server import ExternalServer, SglangServer
from pytest_lfm.settings import Settings

pytestmark = pytest.mark.lfm_live

GREEDY = {"temperature": 0, "max_new_tokens": 48}
# sglang 0.5.17's SGLANG_MM_FEATURE_CACHE_MB default: the CUDA-IPC pool a VL Engine's image processor reserves in the
# calling process (utils/cuda_ipc_transport_utils.py)
MM_FEATURE_POOL_MIB = int(os.environ.get("SGLANG_MM_FEATURE_CACHE_MB", "1024"))


@pytest.fixture(scope="session")
def prompts(lfm_script: Script, lfm_model: ModelSpec) -> list[str]:
    """Chat prompts of the script's plain answers, rendered once as raw text so server and engine get the same."""
    return [render_prompt(t, template=lfm_model.chat_template) for t in lfm_script.of_kind(lfm_model, "answer")]


# Session scope: pytest sets up higher-scoped fixtures first, and the server's outputs must be taken before
# lfm_engine (session) takes the GPU.
@pytest.fixture(scope="session")
def server_outputs(
    prompts: list[str], lfm_settings: Settings, lfm_launch: LaunchConfig, lfm_server: SglangServer | ExternalServer,
    lfm_runtime_pool: RuntimePool | None,
) -> Iterator[list[str]]:
    """The server's greedy completions of ``prompts`` (POST /generate), taken before the engine takes the GPU."""
    if lfm_settings.base_url:
        pytest.skip("--lfm-base-url tests a server over HTTP; the offline Engine needs a local GPU")
    server = lfm_server
    if isinstance(server, SglangServer) and lfm_runtime_pool and not lfm_runtime_pool.is_current(server):
        server = lfm_runtime_pool.server(lfm_launch)
    server.check_alive()  # a server that died earlier in the session: its log tail, not a refused connection
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        yield [http.post("/generate", json={"text": p, "sampling_params": GREEDY}).raise_for_status().json()["text"]
               for p in prompts]


def _texts(result: Any) -> list[str]:
    return [r["text"] for r in (result if isinstance(result, list) else [result])]


def test_engine_greedy_outputs_equal_the_servers(
    server_outputs: list[str], prompts: list[str], lfm_engine: SglangEngine
) -> None:
    """sglang docs (offline engine API): sgl.Engine runs the same runtime as the server, so greedy outputs match."""
    got = [_texts(lfm_engine.generate(prompt=p, sampling_params=GREEDY))[0] for p in prompts]
    differ = [(p, want, have) for p, want, have in zip(prompts, server_outputs, got, strict=True) if want != have]
    checks.check(not differ, f"{len(differ)} of {len(prompts)} engine outputs differ from the server's",
                 request={"prompts": prompts, "sampling_params": GREEDY}, expected=server_outputs, got=differ)


def test_engine_batch_generate_equals_one_by_one(prompts: list[str], lfm_engine: SglangEngine) -> None:
    """FACTS.md (measured): generate(prompt=[p1, p2], ...) returns one result per prompt, in order, with
    meta_info; greedy batch outputs equal single-prompt outputs."""
    batch = lfm_engine.generate(prompt=prompts, sampling_params=GREEDY)
    single = [_texts(lfm_engine.generate(prompt=p, sampling_params=GREEDY))[0] for p in prompts]
    ok = isinstance(batch, list) and len(batch) == len(prompts) and all(
        {"prompt_tokens", "finish_reason"} <= set(r.get("meta_info", {})) for r in batch)
    checks.check(ok, "batch result shape", request={"prompt": prompts, "sampling_params": GREEDY},
                 expected=f"a list of {len(prompts)} results with meta_info", got=batch)
    checks.check(_texts(batch) == single, "batch vs one-by-one outputs",
                 request={"prompt": prompts, "sampling_params": GREEDY}, expected=single, got=_texts(batch))


def test_engine_shutdown_frees_the_gpu(
    request: pytest.FixtureRequest, lfm_settings: Settings, lfm_launch: LaunchConfig,
    lfm_runtime_pool: RuntimePool | None, lfm_gpus: list[int],
) -> None:
    """FACTS.md: sgl.Engine spawns scheduler processes; shutdown must end them and give the GPU memory back."""
    if lfm_settings.base_url or lfm_runtime_pool is None:
        pytest.skip("needs a local GPU")
    lfm_runtime_pool.stop()
    baseline = hosts.gpu_memory_baseline(lfm_gpus)
    engine = lfm_runtime_pool.engine(lfm_launch)
    loaded = hosts.gpu_memory_baseline(lfm_gpus)
    lfm_runtime_pool.stop()
    released = hosts.wait_gpu_memory_released(lfm_gpus, baseline, timeout=60, own_pid=os.getpid())
    after = hosts.gpu_memory_baseline(lfm_gpus)
    others = [p for p in hosts.gpu_processes(lfm_gpus) if p.pid != os.getpid()]
    pinned = (hosts.torch_memory_mib() or (0, 0))[0]
    note(request, "engine_shutdown", {"baseline_mib": baseline, "loaded_mib": loaded, "after_mib": after,
                                      "other_processes": [dataclasses.asdict(p) for p in others],
                                      "torch_allocated_here_mib": pinned,
                                      "mm_feature_pool_released": engine.mm_feature_pool_released})
    pool_pinned = engine.mm_feature_pool_released and pinned >= MM_FEATURE_POOL_MIB
    if not released and not others and not engine.is_running() and pool_pinned:
        pytest.xfail(f"sglang's CUDA-IPC image-feature pool ({pinned} MiB allocated by torch in this process) stays "
                     "allocated after Engine.shutdown() although the plugin dropped it (likely: it was shared with "
                     "the scheduler, which died holding its share, and torch frees a shared block only once it is "
                     f"released); {after} MiB in use, held only by this process until it exits")
    checks.check(released and not engine.is_running(), "GPU memory after engine shutdown (MiB)",
                 request=f"SglangEngine for {lfm_launch.id} on GPUs {lfm_gpus}, then stop()",
                 expected=f"back to {baseline} (+128 MiB) within 60 s; loaded: {loaded}",
                 got=f"{after}; {hosts.describe_holders(lfm_gpus)}")
