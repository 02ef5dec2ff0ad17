"""Long prompts: a prompt 64 tokens under the served context (GET /v1/models max_model_len; 4096 for the micro
checkpoints, their max_position_embeddings) must answer alike whether its prefill runs in chunks or in one pass.

The default launch prefills in chunks of --chunked-prefill-size, which sglang 0.5.17 sets from the GPU's memory when
the launch leaves it out: 8192 on an H100 or H200 (server_args.py:4664-4676; the server log:
"chunked_prefill_size=8192, max_prefill_tokens=16384 ... context_len=4096", docs/gpu-runs/2026-12-01-h200-h/baseurl/
server.log). One prompt under a 4096-token context fits in one chunk, so the default server gets it alone and then
COPIES copies at once: copies waiting together share prefill batches of at most 8192 tokens, and the one that does
not fit is cut at what is left (managers/schedule_policy.py:1196-1245; whether they wait together is up to the
scheduler's timing). The low-latency profile launches with
--chunked-prefill-size -1 (no chunks, and --enable-torch-compile); its answer is compared with the default server's,
which the first test keeps per model (the default configuration's tests run first, on the same worker:
pytest_lfm/selection.py).

The prompt is off-script, so a micro checkpoint's answer is arbitrary and its margins can be thin: two answers count as
alike when they pick the same tokens, or part where each one's token is the other's runner-up within NEAR_TIE nats (a
tie that rounding decides). NEAR_TIE is twice sglang's bfloat16 difference from transformers' on micro-dense (0.120,
docs/gpu-runs/2026-12-01-h200-c).
"""


from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from pytest_lfm import answers, checks, prompts
from pytest_lfm.matrix import LaunchConfig

pytestmark = pytest.mark.lfm_requires("chat")

BELOW_CONTEXT = 64
MAX_TOKENS = 16
COPIES = 6
NEAR_TIE = 0.25


@pytest.fixture(scope="session")
def default_server_long_answers() -> dict[tuple[str, str], answers.Greedy]:
    """The near-limit prompt's answer on each model's default server, by (model id, dtype), for the low-latency
    comparison."""
    return {}


def _request(http: httpx.Client, model_name: str, tokenizer_path: str, sglang_version: str
             ) -> tuple[dict[str, Any], int]:
    """The near-limit request (greedy, with each token's runner-up) and its prompt length."""
    context = int(http.get("/v1/models").json()["data"][0]["max_model_len"])
    messages, length = prompts.filled_messages(tokenizer_path, context - BELOW_CONTEXT, sglang_version)
    request = {"model": model_name, "messages": messages, "temperature": 0, "max_tokens": MAX_TOKENS,
               "logprobs": True, "top_logprobs": 2}
    return request, length


def test_near_limit_prompt_answers_alike_alone_and_in_chunked_batches(
    lfm_client: openai.OpenAI, lfm_async_client: openai.AsyncOpenAI, lfm_http: httpx.Client, lfm_model_name: str,
    lfm_tokenizer_path: str, lfm_sglang_version: str, lfm_launch: LaunchConfig,
    default_server_long_answers: dict[tuple[str, str], answers.Greedy],
) -> None:
    """sglang #24717 (LFM2 conv state carried into a prefill chunk): a near-limit prompt, alone and split, alike."""
    request, length = _request(lfm_http, lfm_model_name, lfm_tokenizer_path, lfm_sglang_version)
    alone = answers.greedy_of(lfm_client.chat.completions.create(**request))
    default_server_long_answers[(lfm_launch.model.id, lfm_launch.dtype)] = alone

    async def copies() -> list[Any]:
        async with lfm_async_client as client:
            return await asyncio.gather(*(client.chat.completions.create(**request) for _ in range(COPIES)))

    together = [answers.greedy_of(r) for r in asyncio.run(copies())]
    parted = sorted({p for p in (answers.parting(alone, g, NEAR_TIE) for g in together) if p})
    checks.check(not parted, f"a {length}-token prompt alone vs {COPIES} copies at once (prefills of at most 8192 "
                 "tokens a batch)", request=request, expected=alone.text,
                 got={"parted": parted, "answers": sorted({g.text for g in together})})


@pytest.mark.lfm_launch(profile="low-latency")
def test_near_limit_prompt_answers_alike_without_chunked_prefill(
    lfm_client: openai.OpenAI, lfm_http: httpx.Client, lfm_model_name: str, lfm_tokenizer_path: str,
    lfm_sglang_version: str, lfm_launch: LaunchConfig,
    default_server_long_answers: dict[tuple[str, str], answers.Greedy],
) -> None:
    """sglang #24717 (a prefill continues a chunk's conv state only when told to): without chunks, as with them."""
    reference = default_server_long_answers.get((lfm_launch.model.id, lfm_launch.dtype))
    if reference is None:
        pytest.skip("the default server's answer is kept by test_near_limit_prompt_answers_alike_alone_and_in_chunked_"
                    "batches, which did not get one for this model in this run (not selected, or it failed first)")
    request, length = _request(lfm_http, lfm_model_name, lfm_tokenizer_path, lfm_sglang_version)
    got = answers.greedy_of(lfm_client.chat.completions.create(**request))
    parted = answers.parting(reference, got, NEAR_TIE)
    checks.check(parted is None, f"a {length}-token prompt on the low-latency profile vs the default server",
                 request=request, expected=reference.text, got={"parted": parted, "answer": got.text})
